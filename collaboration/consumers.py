"""The WebSocket protocol of a session: a thin adapter from frames to services and back.

Each client frame is checked (rate, size), parsed (`messages`), handed to a service, and
answered with frames built by `frames`. The message loop is `inbox`'s, ordered delivery
of versioned frames `sequencing`'s, presence `presence`'s, document changes the writer's.
"""

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from collaboration import messages
from collaboration.cursors import CursorDebounce
from collaboration.inbox import InboxConsumer
from collaboration.messages import MessageError
from collaboration.presence import (
    Join,
    Leave,
    connection_closed,
    connection_opened,
    ensure_heartbeat,
    participant_cursor_set,
    presence_apply,
)
from collaboration.ratelimit import TokenBucket
from collaboration.sequencing import OrderedDelivery
from collaboration.writer import Submission, get_writer
from interview.batching import Batcher
from sessions import events, frames
from sessions.exceptions import OwnerTokenMismatch, SessionNotFound
from sessions.selectors import parse_session_id, welcome_states
from sessions.services import CodeChange, session_update

logger = logging.getLogger(__name__)

# What a connection reads when it opens or resyncs goes through a reader thread of its own
# (its own database connection; SQLite in WAL reads beside a writer): a thousand clients
# connecting at once would otherwise each wait behind the joins' and the writer's
# transactions on the one database thread. The read needs no transaction with anything:
# the connection subscribed before it, so a change it misses comes as a broadcast.
# The connections opening at one moment share one read (see `batching`).
_welcome_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="welcome-reader")
read_welcome = Batcher(lambda session_ids: welcome_states(session_ids=session_ids), executor=_welcome_reader)
# Joins and leaves of one moment share a transaction on the database thread, in the
# order they were made (a connection's leave never overtakes its join).
apply_presence = Batcher(lambda changes: presence_apply(changes=changes))

CLOSE_SESSION_NOT_FOUND = 4404
CLOSE_IDLE = 4408
# How often a connection that fell behind looks whether it has read its backlog.
DRAIN_POLL_SECONDS = 0.05


class SessionConsumer(InboxConsumer):
    """One client connection to one session."""

    # --- connection life -------------------------------------------------------------

    def connection_started(self) -> None:
        self.cleaned_up = False
        # Until the welcome is out, messages handed over directly wait here (bounded).
        self.live = False
        self.early: list[tuple[dict, bool]] = []
        self.early_bytes = 0
        self.early_overflowed = False
        # Code-updates sent and not yet answered (counted where replies come apart from
        # broadcasts: `direct`), and the pongs waiting for them.
        self.unanswered = 0
        self.pongs_owed = 0
        self.pong_timer: asyncio.TimerHandle | None = None
        connection_opened(self.channel_name)

    async def connect(self):
        self.user_id: str | None = None
        self.group: str | None = None
        self.delivery = OrderedDelivery(
            self.emit,
            self.gap_expired,
            backlog=self.socket.backlog if self.socket is not None else None,
            backlog_limit=settings.WS_RESYNC_BUFFERED_BYTES,
            on_behind=self.fell_behind,
        )
        self.drain_timer: asyncio.TimerHandle | None = None
        self.rate_limit = TokenBucket(rate=settings.WS_RATE_LIMIT_PER_SECOND, burst=settings.WS_RATE_LIMIT_BURST)
        self.cursor = CursorDebounce(self.store_cursor, interval=settings.CURSOR_STORE_INTERVAL_SECONDS)
        self.last_seen = time.monotonic()
        self.idle_timer: asyncio.TimerHandle | None = None
        self.expiry_timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task] = set()
        await self.accept()
        try:
            self.session_id = parse_session_id(self.scope["url_route"]["kwargs"]["session_id"])
            # Subscribe before reading the document, so no change falls between the two:
            # whatever the welcome already holds is skipped by its version.
            self.group = events.group_name(self.session_id)
            await self.channel_layer.group_add(self.group, self.channel_name)
            welcome = await read_welcome(self.session_id)
        except SessionNotFound:
            await self.end_session()
            return
        self.delivery.start_after(welcome.version)
        # An earlier request this connection resends counts as resent only if this
        # document already held it (see CodeChange.connection_version).
        self.welcome_version = welcome.version
        await self.send_frame(frames.welcome(welcome))
        self.go_live()
        ensure_heartbeat()
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(settings.WS_IDLE_TIMEOUT_SECONDS, self.check_idle)
        expires_in = (welcome.expires_at - timezone.now()).total_seconds()
        self.expiry_timer = loop.call_later(max(expires_in, 0), self.expire)

    async def disconnect(self, code):
        await self.connection_ended()

    async def connection_ended(self):
        """Leave the group and the session's presence, once, however the connection ended."""
        if self.cleaned_up:
            return
        self.cleaned_up = True
        self.closed = True
        try:
            for name in ("idle_timer", "expiry_timer", "drain_timer", "pong_timer"):
                timer = getattr(self, name, None)
                if timer is not None:
                    timer.cancel()
            if getattr(self, "delivery", None) is not None:
                self.delivery.stop()
            if getattr(self, "group", None) is not None:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            if getattr(self, "user_id", None) is not None:
                await self.cursor.flush()
                change = await apply_presence(Leave(self.channel_name))
                if change is not None and change.changed:
                    await self.broadcast(
                        frames.user_left(user_id=change.user_id, participant_count=change.participant_count)
                    )
        except Exception:
            logger.exception("Could not clean up after connection %s; its presence expires instead", self.channel_name)
        finally:
            connection_closed(self.channel_name)

    def spawn(self, coro) -> None:
        """Run a coroutine from a timer callback, keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def check_idle(self):
        if self.closed:
            return
        idle = time.monotonic() - self.last_seen
        if idle >= settings.WS_IDLE_TIMEOUT_SECONDS:
            self.spawn(self.close(code=CLOSE_IDLE))
        else:
            loop = asyncio.get_running_loop()
            self.idle_timer = loop.call_later(settings.WS_IDLE_TIMEOUT_SECONDS - idle, self.check_idle)

    def expire(self):
        if not self.closed:
            self.spawn(self.end_session())

    async def end_session(self):
        """Tell the client its session is gone and close with 4404."""
        if self.closed:
            return
        await self.send_frame(frames.session_not_found())
        self.closed = True
        await self.close(code=CLOSE_SESSION_NOT_FOUND)

    # --- frames from the client ------------------------------------------------------

    async def receive(self, text_data=None, bytes_data=None):
        self.last_seen = time.monotonic()
        if self.closed or self.group is None:
            return
        if not self.rate_limit.take():
            await self.send_frame(frames.rate_limited())
            return
        if text_data is None:
            await self.send_frame(frames.invalid_message("Binary frames are not supported; send JSON text."))
            return
        if messages.over_size_limit(text_data):
            await self.send_frame(
                frames.invalid_message(f"Message over the limit of {settings.WS_MAX_MESSAGE_BYTES} bytes.")
            )
            return
        try:
            message = messages.parse(text_data)
            handler = getattr(self, "on_" + message.type.replace("-", "_"))
            if message.type == "code-update" and self.direct:
                # Its answer (an ack or an error) comes back on this channel alone.
                self.unanswered += 1
                try:
                    await handler(message)
                except BaseException:
                    self.unanswered -= 1
                    raise
            else:
                await handler(message)
        except MessageError as exc:
            await self.send_frame(frames.invalid_message(str(exc)))
        except SessionNotFound:
            await self.end_session()

    def author(self, message) -> str:
        """The user this connection joined as; MessageError before join, or when the
        message names someone else (userIds are claims, so only the join decides)."""
        if self.user_id is None:
            raise MessageError(f"Send join before {message.type}.")
        self.check_claim(message)
        return self.user_id

    def check_claim(self, message) -> None:
        """MessageError when a message of a joined connection names another user."""
        if self.user_id is not None and message.user_id is not None and message.user_id != self.user_id:
            raise MessageError("userId is not the user this connection joined as.")

    async def on_ping(self, message):
        # ping needs no join, but after it a ping naming another user is refused too.
        self.check_claim(message)
        if self.unanswered > 0:
            # Answered in order: after the acks of what this connection sent before.
            self.pongs_owed += 1
            if self.pong_timer is None:
                loop = asyncio.get_running_loop()
                self.pong_timer = loop.call_later(settings.WS_PONG_MAX_DELAY_SECONDS, self.pay_pongs)
            return
        await self.send_frame(frames.pong())

    def pay_pongs(self) -> None:
        if self.pong_timer is not None:
            self.pong_timer.cancel()
            self.pong_timer = None
        if self.pongs_owed and not self.closed:
            text = frames.encode(frames.pong())
            for _ in range(self.pongs_owed):
                self.emit(text)
        self.pongs_owed = 0

    async def on_join(self, message):
        request = messages.parse_join(message)
        user_id, name = request.user_id, request.name
        if self.user_id is not None and self.user_id != user_id:
            # A connection is the user it joined as: its seqs and edits are that user's.
            raise MessageError("This connection has joined as another user; open a new connection for this one.")
        try:
            change = await apply_presence(
                Join(self.session_id, user_id, name, self.channel_name, owner_token=request.owner_token)
            )
        except OwnerTokenMismatch as exc:
            raise MessageError(
                "ownerToken is not this session's owner token: the join was refused and nothing changed."
            ) from exc
        self.user_id = user_id
        if change.changed:
            await self.broadcast(
                frames.user_joined(
                    user_id=user_id, name=name, participant_count=change.participant_count, role=change.role
                )
            )

    async def on_code_update(self, message):
        author = self.author(message)
        update = messages.parse_code_update(message.data)
        change = CodeChange(
            code=update.code,
            changes=update.changes,
            base_version=update.version,
            user_id=author,
            seq=update.seq,
            connection_version=self.welcome_version,
        )
        submission = Submission(self.session_id, change, self.channel_name)
        if not get_writer().submit(submission):
            # Refused at once: no answer will come on the channel for it.
            self.answered()
            await self.send_frame(frames.server_busy(seq=update.seq))
        elif submission.replaced:
            # The waiting text it superseded will get no answer of its own.
            self.answered()

    async def on_cursor_position(self, message):
        author = self.author(message)
        cursor = messages.parse_cursor(message.data)
        await self.broadcast(frames.cursor_position(user_id=author, cursor=cursor))
        self.cursor.update(cursor)

    async def store_cursor(self, cursor: dict):
        if self.user_id is not None:
            await database_sync_to_async(participant_cursor_set)(
                session_id=self.session_id, user_id=self.user_id, cursor=cursor
            )

    async def on_language_change(self, message):
        author = self.author(message)
        language = messages.parse_language(message.data)
        await database_sync_to_async(session_update)(
            session_id=self.session_id,
            language=language,
            user_id=author,
            exclude_channel=self.channel_name,
        )

    # --- frames to the client --------------------------------------------------------

    async def send_frame(self, frame: dict):
        await self.send_text(frames.encode(frame))

    async def broadcast(self, frame: dict):
        """Send to the session's other connections."""
        await self.channel_layer.group_send(self.group, events.serialized_event(frame, exclude=self.channel_name))

    # --- group events ----------------------------------------------------------------

    def channel_message(self, event: dict, direct: bool) -> None:
        """A message handed over by the layer (see InboxConsumer), in the sender's task."""
        if not self.live:
            self.early.append((event, direct))
            self.early_bytes += len(event.get("text") or "")
            if len(self.early) > settings.CHANNEL_CAPACITY or self.early_bytes > settings.WS_MAX_BUFFERED_BYTES:
                # Too much before the welcome went out: the welcome's document is stale
                # anyway, so the client gets the current one instead of all this.
                self.early_overflowed = True
                self.early = [(e, d) for e, d in self.early if d or e.get("version") is None]
                self.early_bytes = sum(len(e.get("text") or "") for e, _ in self.early)
            return
        if event["type"] == events.MESSAGE_EVENT:
            self.take_event(event)
        elif event["type"] == events.ENDED_EVENT:
            self.spawn(self.end_session())
        if direct:
            self.answered()

    def answered(self) -> None:
        """One code-update of this connection is answered (or will never be): pongs owed
        go out once none is left."""
        if self.unanswered > 0:
            self.unanswered -= 1
            if self.unanswered == 0 and self.pongs_owed:
                self.pay_pongs()

    def go_live(self) -> None:
        """The welcome is out: what was handed over before it goes out now, in order."""
        early, self.early, self.early_bytes = self.early, [], 0
        self.live = True
        if self.early_overflowed:
            self.delivery.hold()
            self.spawn(self.resync("Too much changed while this connection opened; resync with the current document."))
        for event, direct in early:
            self.channel_message(event, direct)

    async def session_message(self, event):
        self.take_event(event)

    def take_event(self, event) -> None:
        if self.closed or event.get("exclude") == self.channel_name:
            return
        version = event.get("version")
        if version is None:
            self.emit(event["text"])
        else:
            self.delivery.deliver(version, event["text"])

    def gap_expired(self):
        if not self.closed:
            self.delivery.hold()
            self.spawn(self.resync("A change was lost in transit; resync with the current document."))

    def fell_behind(self, skipped_bytes: int) -> None:
        """The client holds more than WS_RESYNC_BUFFERED_BYTES unread: code-updates are
        skipped until it has read it all, then it resyncs; one that would be sent more than
        WS_MAX_BUFFERED_BYTES in all is closed with 1013 (it does not read at all)."""
        if self.closed:
            return
        if self.socket.backlog() + skipped_bytes > settings.WS_MAX_BUFFERED_BYTES:
            self.socket.close_behind()
            return
        if self.drain_timer is None:
            logger.info("Connection %s fell behind; it resyncs once it has read its backlog", self.channel_name)
            self.drain_timer = asyncio.get_running_loop().call_later(DRAIN_POLL_SECONDS, self.check_drained)

    def check_drained(self) -> None:
        self.drain_timer = None
        if self.closed or not self.delivery.behind:
            return
        if self.socket.backlog() > 0:
            self.drain_timer = asyncio.get_running_loop().call_later(DRAIN_POLL_SECONDS, self.check_drained)
            return
        self.delivery.hold()
        self.spawn(self.resync("This connection fell behind; resync with the current document."))

    async def resync(self, reason: str):
        """Hand the client the current document (the delivery holds frames meanwhile)."""
        try:
            current = await read_welcome(self.session_id)
        except SessionNotFound:
            await self.end_session()
            return
        if self.closed:
            return
        # The resync first, then whatever was held beyond its version.
        self.emit(frames.encode(frames.resync_required(code=current.code, version=current.version, message=reason)))
        self.delivery.start_after(current.version)
        if self.outbox:
            await self.flush_outbox()

    async def session_ended(self, event):
        await self.end_session()

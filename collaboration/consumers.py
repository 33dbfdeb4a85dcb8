"""The WebSocket protocol of a session: a thin adapter from frames to services and back.

Each client frame is checked (rate, size), parsed (`messages`), handed to a service, and
answered with frames built by `frames`. The message loop is `inbox`'s, ordered delivery
of versioned frames `sequencing`'s, presence `presence`'s, document changes the writer's.
"""

import asyncio
import logging
import time

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from collaboration import messages
from collaboration.cursors import CursorDebounce
from collaboration.inbox import InboxConsumer
from collaboration.messages import MessageError
from collaboration.presence import (
    connection_closed,
    connection_opened,
    ensure_heartbeat,
    participant_cursor_set,
    participant_join,
    participant_leave,
)
from collaboration.ratelimit import TokenBucket
from collaboration.sequencing import OrderedDelivery
from collaboration.writer import Submission, get_writer
from sessions import events, frames
from sessions.exceptions import SessionNotFound
from sessions.selectors import parse_session_id, welcome_state
from sessions.services import CodeChange, session_update

logger = logging.getLogger(__name__)

CLOSE_SESSION_NOT_FOUND = 4404
CLOSE_IDLE = 4408


class SessionConsumer(InboxConsumer):
    """One client connection to one session."""

    # --- connection life -------------------------------------------------------------

    def connection_started(self) -> None:
        self.cleaned_up = False
        connection_opened(self.channel_name)

    async def connect(self):
        self.user_id: str | None = None
        self.group: str | None = None
        self.delivery = OrderedDelivery(self.send_text, self.gap_expired)
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
            welcome = await database_sync_to_async(welcome_state)(session_id=self.session_id)
        except SessionNotFound:
            await self.end_session()
            return
        self.delivery.start_after(welcome.version)
        # An earlier request this connection resends counts as resent only if this
        # document already held it (see CodeChange.connection_version).
        self.welcome_version = welcome.version
        await self.send_frame(frames.welcome(welcome))
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
            for timer in (getattr(self, "idle_timer", None), getattr(self, "expiry_timer", None)):
                if timer is not None:
                    timer.cancel()
            if getattr(self, "delivery", None) is not None:
                self.delivery.stop()
            if getattr(self, "group", None) is not None:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            if getattr(self, "user_id", None) is not None:
                await self.cursor.flush()
                change = await database_sync_to_async(participant_leave)(channel_name=self.channel_name)
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
            await getattr(self, "on_" + message.type.replace("-", "_"))(message)
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
        await self.send_frame(frames.pong())

    async def on_join(self, message):
        user_id, name = messages.parse_join(message)
        if self.user_id is not None and self.user_id != user_id:
            # A connection is the user it joined as: its seqs and edits are that user's.
            raise MessageError("This connection has joined as another user; open a new connection for this one.")
        change = await database_sync_to_async(participant_join)(
            session_id=self.session_id, user_id=user_id, name=name, channel_name=self.channel_name
        )
        self.user_id = user_id
        if change.changed:
            await self.broadcast(
                frames.user_joined(user_id=user_id, name=name, participant_count=change.participant_count)
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
        if not get_writer().submit(Submission(self.session_id, change, self.channel_name)):
            await self.send_frame(frames.server_busy(seq=update.seq))

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

    async def send_text(self, text: str):
        await self.send(text_data=text)

    async def send_frame(self, frame: dict):
        await self.send(text_data=frames.encode(frame))

    async def broadcast(self, frame: dict):
        """Send to the session's other connections."""
        await self.channel_layer.group_send(self.group, events.serialized_event(frame, exclude=self.channel_name))

    # --- group events ----------------------------------------------------------------

    async def session_message(self, event):
        if self.closed or event.get("exclude") == self.channel_name:
            return
        version = event.get("version")
        if version is None:
            await self.send_text(event["text"])
        else:
            await self.delivery.deliver(version, event["text"])

    def gap_expired(self):
        if not self.closed:
            self.spawn(self.resync())

    async def resync(self):
        """A change never arrived: hand the client the current document instead."""
        try:
            current = await database_sync_to_async(welcome_state)(session_id=self.session_id)
        except SessionNotFound:
            await self.end_session()
            return
        self.delivery.start_after(current.version)
        await self.send_frame(
            frames.resync_required(
                code=current.code,
                version=current.version,
                message="A change was lost in transit; resync with the current document.",
            )
        )

    async def session_ended(self, event):
        await self.end_session()

"""The WebSocket protocol of a session: a thin adapter from frames to services and back."""

import asyncio
import contextlib
import functools
import logging
import time

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from collaboration import messages
from collaboration.messages import MessageError
from collaboration.presence import connection_closed, connection_opened, ensure_heartbeat
from collaboration.services import participant_cursor_set, participant_join, participant_leave, welcome_state
from collaboration.writer import Submission, get_writer
from sessions import events
from sessions.exceptions import SessionNotFound
from sessions.selectors import parse_session_id
from sessions.services import CodeChange, session_update

logger = logging.getLogger(__name__)

CLOSE_SESSION_NOT_FOUND = 4404
CLOSE_IDLE = 4408
# How long a later version may wait for an earlier one before the client must resync.
GAP_TIMEOUT_SECONDS = 3.0
# Messages a connection's loop holds before it stops taking more from the client and its channel.
INBOX_SIZE = 64


class SessionConsumer(AsyncWebsocketConsumer):
    """One client connection to one session."""

    async def __call__(self, scope, receive, send):
        # Channels' loop creates a task and runs asyncio.wait for every message; here two
        # pumps feed one queue, so a message costs a put and a get.
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.channel_name = await self.channel_layer.new_channel()
        self.base_send = functools.partial(self.send_to_client, send)
        # Bounded, so that a consumer held up (by the database, say) stops taking from its
        # channel and the layer's per-channel limits apply, instead of this queue growing.
        self.inbox = inbox = asyncio.Queue(maxsize=INBOX_SIZE)
        self.gone = False
        self.cleaned_up = False
        connection_opened(self.channel_name)

        async def pump(source):
            try:
                while True:
                    await inbox.put(await source())
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await inbox.put(exc)

        pumps = [
            asyncio.ensure_future(pump(receive)),
            asyncio.ensure_future(pump(functools.partial(self.channel_layer.receive, self.channel_name))),
        ]
        try:
            while True:
                message = await inbox.get()
                if isinstance(message, Exception):
                    raise message
                await self.dispatch(message)
                if self.gone:
                    break
        except StopConsumer:
            pass
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            # Whatever ended the loop (a disconnect, a send on a closed socket, an error in a
            # handler, a cancellation by daphne), the connection's presence goes with it;
            # shielded, so a second cancellation cannot cut the cleanup short.
            await asyncio.shield(self.clean_up())

    async def send_to_client(self, send, message):
        """Send to the socket; a send on a connection already closing ends the consumer."""
        if self.gone:
            return
        try:
            await send(message)
        except Exception as exc:
            # daphne (autobahn) raises "Attempt to send on a closed protocol" when the socket
            # is closing; its disconnect may never reach us, so this is the end of the connection.
            logger.info("Send on %s failed (%s); treating the connection as closed", self.channel_name, exc)
            self.gone = True
            self.closed = True
            # Wakes the loop if it is waiting; a full inbox will wake it anyway.
            with contextlib.suppress(asyncio.QueueFull):
                self.inbox.put_nowait(StopConsumer())

    async def dispatch(self, message):
        # Channels >= 4.2 hops to the sync thread before every handler to close stale
        # database connections; our database work already runs in database_sync_to_async,
        # which does that itself, so skip the hop on every frame and group message.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    # --- connection life -------------------------------------------------------------

    async def connect(self):
        self.user_id: str | None = None
        self.group: str | None = None
        self.closed = False
        self.next_version = 0
        self.held: dict[int, str] = {}
        self.gap_timer: asyncio.TimerHandle | None = None
        self.tokens = float(settings.WS_RATE_LIMIT_BURST)
        self.tokens_at = time.monotonic()
        self.last_seen = time.monotonic()
        self.cursor_pending: dict | None = None
        self.cursor_task: asyncio.Task | None = None
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
        self.next_version = welcome.version + 1
        # An earlier request this connection resends counts as resent only if this
        # document already held it (see CodeChange.connection_version).
        self.welcome_version = welcome.version
        await self.send_message(
            "welcome",
            {
                "sessionId": str(welcome.session_id),
                "currentCode": welcome.code,
                "language": welcome.language,
                "participants": welcome.participants,
                "version": welcome.version,
            },
        )
        ensure_heartbeat()
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(settings.WS_IDLE_TIMEOUT_SECONDS, self.check_idle)
        expires_in = (welcome.expires_at - timezone.now()).total_seconds()
        self.expiry_timer = loop.call_later(max(expires_in, 0), self.expire)

    async def disconnect(self, code):
        await self.clean_up()

    async def clean_up(self):
        """Leave the group and the session's presence, once, however the connection ended."""
        if self.cleaned_up:
            return
        self.cleaned_up = True
        self.closed = True
        try:
            for timer in (
                getattr(self, "idle_timer", None),
                getattr(self, "expiry_timer", None),
                getattr(self, "gap_timer", None),
            ):
                if timer is not None:
                    timer.cancel()
            if getattr(self, "group", None) is not None:
                await self.channel_layer.group_discard(self.group, self.channel_name)
            if getattr(self, "user_id", None) is not None:
                await self.flush_cursor()
                change = await database_sync_to_async(participant_leave)(channel_name=self.channel_name)
                if change is not None and change.changed:
                    await self.broadcast("user-left", {"participantCount": change.participant_count}, change.user_id)
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
        await self.send_error("SESSION_NOT_FOUND", "Session not found or expired.")
        self.closed = True
        await self.close(code=CLOSE_SESSION_NOT_FOUND)

    # --- frames from the client ------------------------------------------------------

    def take_token(self) -> bool:
        now = time.monotonic()
        rate, burst = settings.WS_RATE_LIMIT_PER_SECOND, settings.WS_RATE_LIMIT_BURST
        self.tokens = min(burst, self.tokens + (now - self.tokens_at) * rate)
        self.tokens_at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    async def receive(self, text_data=None, bytes_data=None):
        self.last_seen = time.monotonic()
        if self.closed or self.group is None:
            return
        if not self.take_token():
            await self.send_error("RATE_LIMIT_EXCEEDED", "Too many messages; this one was dropped.")
            return
        if text_data is None:
            await self.send_error("INVALID_MESSAGE", "Binary frames are not supported; send JSON text.")
            return
        # UTF-8 bytes, as the frame came on the wire; encoding is needed only when the
        # character count (at most 4 bytes each) cannot tell alone.
        limit = settings.WS_MAX_MESSAGE_BYTES
        if len(text_data) > limit or (
            len(text_data) * 4 > limit and len(text_data.encode("utf-8", "surrogatepass")) > limit
        ):
            await self.send_error(
                "INVALID_MESSAGE", f"Message over the limit of {settings.WS_MAX_MESSAGE_BYTES} bytes."
            )
            return
        try:
            message = messages.parse(text_data)
            await getattr(self, "on_" + message.type.replace("-", "_"))(message)
        except MessageError as exc:
            await self.send_error("INVALID_MESSAGE", str(exc))
        except SessionNotFound:
            await self.end_session()

    async def on_ping(self, message):
        if self.user_id is not None:
            self.author(message)
        await self.send_message("pong", {})

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
            await self.broadcast("user-joined", {"name": name, "participantCount": change.participant_count}, user_id)

    async def leave(self):
        await self.flush_cursor()
        change = await database_sync_to_async(participant_leave)(channel_name=self.channel_name)
        if change is not None and change.changed:
            await self.broadcast("user-left", {"participantCount": change.participant_count}, change.user_id)

    def author(self, message) -> str:
        """The user this connection joined as; MessageError before join, or when the
        message names someone else (userIds are claims, so only the join decides)."""
        if self.user_id is None:
            raise MessageError(f"Send join before {message.type}.")
        if message.user_id is not None and message.user_id != self.user_id:
            raise MessageError("userId is not the user this connection joined as.")
        return self.user_id

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
        get_writer().submit(Submission(self.session_id, change, self.channel_name))

    async def on_cursor_position(self, message):
        author = self.author(message)
        cursor = messages.parse_cursor(message.data)
        await self.broadcast("cursor-position", cursor, author)
        self.cursor_pending = cursor
        if self.cursor_task is None or self.cursor_task.done():
            self.cursor_task = asyncio.ensure_future(self.store_cursor_later())

    async def store_cursor_later(self):
        await asyncio.sleep(settings.CURSOR_STORE_INTERVAL_SECONDS)
        await self.flush_cursor()

    async def flush_cursor(self):
        cursor, self.cursor_pending = self.cursor_pending, None
        if cursor is not None and self.user_id is not None:
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

    # --- messages to the client ------------------------------------------------------

    async def send_message(self, type_: str, data: dict, user_id: str | None = None):
        await self.send(text_data=events.group_event(events.wire_message(type_, data, user_id))["text"])

    async def send_error(self, code: str, message: str):
        await self.send_message("error", {"code": code, "message": message})

    async def broadcast(self, type_: str, data: dict, user_id: str | None):
        """Send to the session's other connections."""
        event = events.group_event(events.wire_message(type_, data, user_id), exclude=self.channel_name)
        await self.channel_layer.group_send(self.group, event)

    # --- group events ------------------------------------------------------------------

    async def session_message(self, event):
        if self.closed or event.get("exclude") == self.channel_name:
            return
        version = event.get("version")
        if version is None:
            await self.send(text_data=event["text"])
            return
        # Changes go out in version order, whatever order processes published them in.
        if version < self.next_version:
            return
        self.held[version] = event["text"]
        while self.next_version in self.held:
            await self.send(text_data=self.held.pop(self.next_version))
            self.next_version += 1
        if self.held and self.gap_timer is None:
            self.gap_timer = asyncio.get_running_loop().call_later(GAP_TIMEOUT_SECONDS, self.gap_expired)
        elif not self.held and self.gap_timer is not None:
            self.gap_timer.cancel()
            self.gap_timer = None

    def gap_expired(self):
        self.gap_timer = None
        if self.held and not self.closed:
            self.spawn(self.resync())

    async def resync(self):
        """A change never arrived: hand the client the current document instead."""
        try:
            welcome = await database_sync_to_async(welcome_state)(session_id=self.session_id)
        except SessionNotFound:
            await self.end_session()
            return
        self.held = {v: t for v, t in self.held.items() if v > welcome.version}
        self.next_version = welcome.version + 1
        await self.send_message(
            "error",
            {
                "code": "RESYNC_REQUIRED",
                "message": "A change was lost in transit; resync with the current document.",
                "currentCode": welcome.code,
                "version": welcome.version,
            },
        )

    async def session_ended(self, event):
        await self.end_session()

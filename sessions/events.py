"""What a session tells its connected WebSocket clients, through the channel layer.

The sessions app owns the group name and the events so that REST writes can notify
clients without importing the collaboration app (dependencies point one way); the
frames themselves are built by `sessions.frames`.
"""

import logging
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

from sessions import frames

logger = logging.getLogger(__name__)

# The consumer's handler names for the two kinds of group message.
MESSAGE_EVENT = "session.message"
ENDED_EVENT = "session.ended"


def group_name(session_id: uuid.UUID | str) -> str:
    """The channel-layer group of a session's connections."""
    # The writer names the group of every change it publishes: a UUID needs no parse.
    return f"session-{(session_id if isinstance(session_id, uuid.UUID) else uuid.UUID(str(session_id))).hex}"


def serialized_event(message: dict, *, exclude: str | None = None, version: int | None = None) -> dict:
    """A wire message as a channel-layer event for the group or one channel, serialised to
    JSON once here for every receiver.

    `exclude` names a channel that must not get it; `version` is the document version a
    code-update or code-ack stands for, by which each connection sends them in order.
    """
    text = frames.encode(message)
    return {"type": MESSAGE_EVENT, "text": text, "exclude": exclude, "version": version}


def ended_event(reason: str) -> dict:
    return {"type": ENDED_EVENT, "reason": reason}


def publish(session_id, event: dict) -> None:
    """Send a group event from synchronous code (a REST view, a command, the admin)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(group_name(session_id), event)
    except Exception:
        # The change is committed already; a failed notification must not fail the request.
        logger.exception("Could not notify the clients of session %s", session_id)

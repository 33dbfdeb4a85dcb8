"""What a session tells its connected WebSocket clients, through the channel layer.

The sessions app owns the group name and the message shapes so that REST writes can
notify clients without importing the collaboration app (dependencies point one way).
"""

import json
import logging
import uuid

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.utils import timezone

logger = logging.getLogger(__name__)

# The consumer's handler names for the two kinds of group message.
MESSAGE_EVENT = "session.message"
ENDED_EVENT = "session.ended"


def group_name(session_id: uuid.UUID | str) -> str:
    """The channel-layer group of a session's connections."""
    return f"session-{uuid.UUID(str(session_id)).hex}"


def wire_message(type_: str, data: dict | None = None, user_id: str | None = None) -> dict:
    """A server-to-client frame of the WebSocket protocol."""
    return {
        "type": type_,
        "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        "userId": user_id,
        "data": data if data is not None else {},
    }


def code_update_message(*, user_id, code: str, changes: list, version: int) -> dict:
    return wire_message("code-update", {"code": code, "changes": changes, "version": version}, user_id)


def language_changed_message(*, user_id, language: str) -> dict:
    return wire_message("language-changed", {"language": language}, user_id)


def serialized_event(message: dict, *, exclude: str | None = None, version: int | None = None) -> dict:
    """A wire message as a channel-layer event for the group or one channel, serialised to
    JSON once here for every receiver.

    `exclude` names a channel that must not get it; `version` is the document version a
    code-update or code-ack stands for, by which each connection sends them in order.
    """
    text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
    return {"type": MESSAGE_EVENT, "text": text, "exclude": exclude, "version": version}


# The name collaboration/ still calls it by, until it switches to serialized_event.


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

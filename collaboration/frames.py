"""Every frame the server sends a WebSocket client, built in one place.

The envelope (`{type, timestamp, userId, data}`), the group name and the group events
are `sessions.events`' (REST writes notify clients through it too); this module names
each frame of the protocol and each error, so a frame's shape is written once.
"""

from sessions import events

# The contract's error codes (`data.code` of an `error` frame).
INVALID_MESSAGE = "INVALID_MESSAGE"
RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
RESYNC_REQUIRED = "RESYNC_REQUIRED"
SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
INTERNAL_ERROR = "INTERNAL_ERROR"  # beyond the contract: a change the server could not save


def encode(message: dict) -> str:
    """A frame as the text sent on the socket (the same encoding as a group event's)."""
    return events.serialized_event(message)["text"]


def welcome(state) -> dict:
    """The first frame of a connection: the document, its version and who is here."""
    return events.wire_message(
        "welcome",
        {
            "sessionId": str(state.session_id),
            "currentCode": state.code,
            "language": state.language,
            "participants": state.participants,
            "version": state.version,
        },
    )


def pong() -> dict:
    return events.wire_message("pong", {})


def user_joined(*, user_id: str, name: str, participant_count: int) -> dict:
    return events.wire_message("user-joined", {"name": name, "participantCount": participant_count}, user_id)


def user_left(*, user_id: str, participant_count: int) -> dict:
    return events.wire_message("user-left", {"participantCount": participant_count}, user_id)


def cursor_position(*, user_id: str, cursor: dict) -> dict:
    return events.wire_message("cursor-position", cursor, user_id)


def code_update(*, user_id, code: str, changes: list, version: int) -> dict:
    return events.code_update_message(user_id=user_id, code=code, changes=changes, version=version)


def code_ack(*, user_id: str, version: int, seq: int | None) -> dict:
    ack = {"version": version}
    if seq is not None:
        ack["seq"] = seq
    return events.wire_message("code-ack", ack, user_id)


def error(code: str, message: str) -> dict:
    return events.wire_message("error", {"code": code, "message": message})


def invalid_message(message: str) -> dict:
    return error(INVALID_MESSAGE, message)


def rate_limited() -> dict:
    return error(RATE_LIMIT_EXCEEDED, "Too many messages; this one was dropped.")


def session_not_found() -> dict:
    return error(SESSION_NOT_FOUND, "Session not found or expired.")


def change_not_saved() -> dict:
    return error(INTERNAL_ERROR, "The change could not be saved.")


def resync_required(*, code: str, version: int, message: str) -> dict:
    """RESYNC_REQUIRED with the current document (as `currentCode`, as in welcome: the
    contract's `data.code` is the error code)."""
    return events.wire_message(
        "error",
        {"code": RESYNC_REQUIRED, "message": message, "currentCode": code, "version": version},
    )

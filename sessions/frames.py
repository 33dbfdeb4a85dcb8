"""Every frame the server sends a WebSocket client, built in one place.

The envelope (`{type, timestamp, userId, data}`), each frame of the protocol and each
error code. The sessions app owns it so that REST writes, runs and the collaboration
consumer build the same shapes without importing each other; `sessions.events` carries
the frames to a session's connections.
"""

import json

from django.utils import timezone

# The contract's error codes (`data.code` of an `error` frame).
INVALID_MESSAGE = "INVALID_MESSAGE"
RATE_LIMIT_EXCEEDED = "RATE_LIMIT_EXCEEDED"
RESYNC_REQUIRED = "RESYNC_REQUIRED"
SESSION_NOT_FOUND = "SESSION_NOT_FOUND"
INTERNAL_ERROR = "INTERNAL_ERROR"  # beyond the contract: a change the server could not save


def wire_message(type_: str, data: dict | None = None, user_id: str | None = None) -> dict:
    """A server-to-client frame of the WebSocket protocol."""
    return {
        "type": type_,
        "timestamp": timezone.now().isoformat().replace("+00:00", "Z"),
        "userId": user_id,
        "data": data if data is not None else {},
    }


def encode(message: dict) -> str:
    """A frame as the text sent on the socket (the same encoding as a group event's)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def welcome(state) -> dict:
    """The first frame of a connection: the document, its version and who is here."""
    return wire_message(
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
    return wire_message("pong", {})


def user_joined(*, user_id: str, name: str, participant_count: int, role: str) -> dict:
    """`role` (beyond the contract): interviewer or candidate, as the join made the participant."""
    return wire_message("user-joined", {"name": name, "participantCount": participant_count, "role": role}, user_id)


def user_left(*, user_id: str, participant_count: int) -> dict:
    return wire_message("user-left", {"participantCount": participant_count}, user_id)


def cursor_position(*, user_id: str, cursor: dict) -> dict:
    return wire_message("cursor-position", cursor, user_id)


def code_update(*, user_id, code: str, changes: list, version: int) -> dict:
    return wire_message("code-update", {"code": code, "changes": changes, "version": version}, user_id)


def code_ack(*, user_id: str, version: int, seq: int | None) -> dict:
    ack = {"version": version}
    if seq is not None:
        ack["seq"] = seq
    return wire_message("code-ack", ack, user_id)


def error(code: str, message: str) -> dict:
    return wire_message("error", {"code": code, "message": message})


def invalid_message(message: str) -> dict:
    return error(INVALID_MESSAGE, message)


def rate_limited() -> dict:
    return error(RATE_LIMIT_EXCEEDED, "Too many messages; this one was dropped.")


def server_busy(*, seq: int | None = None) -> dict:
    """A change the writer refused under load, before applying it: resend it. `seq` (beyond
    the contract) is the refused change's, when it had one."""
    data = {"code": RATE_LIMIT_EXCEEDED, "message": "Server busy: this change was not applied; resend it."}
    if seq is not None:
        data["seq"] = seq
    return wire_message("error", data)


def session_not_found() -> dict:
    return error(SESSION_NOT_FOUND, "Session not found or expired.")


def change_not_saved() -> dict:
    return error(INTERNAL_ERROR, "The change could not be saved.")


def resync_required(*, code: str, version: int, message: str) -> dict:
    """RESYNC_REQUIRED with the current document (as `currentCode`, as in welcome: the
    contract's `data.code` is the error code)."""
    return wire_message(
        "error",
        {"code": RESYNC_REQUIRED, "message": message, "currentCode": code, "version": version},
    )


def language_changed(*, user_id, language: str) -> dict:
    return wire_message("language-changed", {"language": language}, user_id)


def execution_result(*, language: str, result: dict) -> dict:
    """A run's result, sent to the session's clients (beyond the contract)."""
    return wire_message("execution-result", {"language": language, **result})

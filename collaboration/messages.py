"""The WebSocket protocol's client messages: parsing and validation in one place."""

import json
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from sessions.models import NAME_MAX_LENGTH, USER_ID_MAX_LENGTH, Language

CLIENT_TYPES = frozenset({"join", "ping", "code-update", "cursor-position", "language-change"})

# Limits of a client message. userId and name are as wide as the columns that keep them
# (sessions.models, their one definition); the frame size (WS_MAX_MESSAGE_BYTES) and changes
# per code-update (WS_MAX_CHANGES) come from settings; the rest are defined here.
MAX_USER_ID = USER_ID_MAX_LENGTH
# Every integer of the protocol (seq, version, from/to, line/column, numbers in a
# selection) is one a browser holds exactly: 0 to Number.MAX_SAFE_INTEGER. Beyond, it
# would also overflow a 64-bit database column.
MAX_INT = 2**53 - 1
# A cursor's `selection`, as JSON characters.
MAX_SELECTION_CHARS = 2048


class MessageError(ValueError):
    """An invalid client message: answered with INVALID_MESSAGE and otherwise dropped."""


@dataclass(frozen=True)
class Inbound:
    type: str
    user_id: str | None
    data: dict


@dataclass(frozen=True)
class JoinRequest:
    user_id: str
    name: str
    # The session's owner token, when the joining user claims to be the interviewer. A
    # secret: kept out of repr (so out of logs) and never echoed in any frame.
    owner_token: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class CodeUpdate:
    code: str | None
    changes: list | None
    version: int | None
    seq: int | None


def _storable(text: str) -> bool:
    """Text a database can keep: no NUL, no lone surrogate (JSON can carry both)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _in_range(value: Any) -> bool:
    """An integer from 0 to MAX_INT."""
    return _is_int(value) and 0 <= value <= MAX_INT


def _refuse_constant(name: str):
    # Python reads NaN and Infinity, which JSON has not: echoed to other clients, they
    # would break those clients' JSON.parse.
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def _exact_numbers(value: Any) -> bool:
    """Whether every integer inside `value` lies within +-MAX_INT (a JavaScript number holds it)."""
    if _is_int(value):
        return -MAX_INT <= value <= MAX_INT
    if isinstance(value, dict):
        return all(_exact_numbers(item) for item in value.values())
    if isinstance(value, list):
        return all(_exact_numbers(item) for item in value)
    return True


def over_size_limit(text: str) -> bool:
    """Whether a frame is over WS_MAX_MESSAGE_BYTES, in UTF-8 bytes as it came on the wire."""
    # Encoding is needed only when the character count (at most 4 bytes each) cannot tell alone.
    limit = settings.WS_MAX_MESSAGE_BYTES
    return len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8", "surrogatepass")) > limit)


# One decoder for every frame: `json.loads` with these hooks built a JSONDecoder per call.
_decoder = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


def parse(text: str) -> Inbound:
    """A frame as `{type, userId?, timestamp?, data?}`, else MessageError."""
    try:
        message = _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise MessageError("Message is not valid JSON.") from exc
    if not isinstance(message, dict):
        raise MessageError("Message must be a JSON object.")
    kind = message.get("type")
    if not isinstance(kind, str) or kind not in CLIENT_TYPES:
        raise MessageError(f"Unknown message type: {str(kind)[:40]!r}.")
    user_id = message.get("userId")
    if user_id is not None and (
        not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID or not _storable(user_id)
    ):
        raise MessageError(f"userId must be a string of 1 to {MAX_USER_ID} characters.")
    data = message.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise MessageError("data must be an object.")
    return Inbound(kind, user_id, data)


def parse_join(message: Inbound) -> JoinRequest:
    """`{name?, ownerToken?}`: whether the token is the session's is for presence to say."""
    if message.user_id is None:
        raise MessageError("join needs a top-level userId.")
    name = message.data.get("name", "Anonymous")
    if name is None:
        name = "Anonymous"
    if not isinstance(name, str) or len(name) > NAME_MAX_LENGTH or not _storable(name):
        raise MessageError(f"name must be a string of at most {NAME_MAX_LENGTH} characters.")
    # Absent or null: a candidate's join, as every join of the existing client is.
    token = message.data.get("ownerToken")
    if token is not None and not isinstance(token, str):
        raise MessageError("ownerToken must be a string: the session's owner token.")
    return JoinRequest(message.user_id, name.strip() or "Anonymous", token)


def parse_code_update(data: dict) -> CodeUpdate:
    """Full text (`code`, no or empty `changes`) or a delta (`changes` against `version`)."""
    changes = data.get("changes")
    seq = data.get("seq")
    if seq is not None and not _in_range(seq):
        raise MessageError(f"seq must be an integer from 0 to {MAX_INT}.")
    if changes is not None and not isinstance(changes, list):
        raise MessageError("changes must be a list.")
    if changes:
        version = data.get("version")
        if not _in_range(version):
            raise MessageError(f"A delta code-update needs the version it is based on, an integer from 0 to {MAX_INT}.")
        if len(changes) > settings.WS_MAX_CHANGES:
            raise MessageError(
                f"At most {settings.WS_MAX_CHANGES} changes per message; send the full text (data.code) instead."
            )
        for index, change in enumerate(changes):
            _check_change(index, change)
        return CodeUpdate(None, changes, version, seq)
    code = data.get("code")
    if not isinstance(code, str):
        raise MessageError("code-update needs data.code (full text) or data.changes with a version.")
    return CodeUpdate(code, None, None, seq)


def _check_change(index: int, change: Any) -> None:
    """The shape of one change spec; whether it fits the document is the document's to say."""
    if not isinstance(change, dict):
        raise MessageError(f"change {index} is not an object.")
    for key in ("from", "to"):
        # `to` may be left out (CodeMirror's default: `from`).
        if (key == "from" or key in change) and not _in_range(change.get(key)):
            raise MessageError(f"change {index}: {key} must be an integer from 0 to {MAX_INT}.")
    if not isinstance(change.get("insert", ""), str):
        raise MessageError(f"change {index}: insert must be a string.")


def parse_cursor(data: dict) -> dict:
    line, column = data.get("line"), data.get("column")
    if not (_in_range(line) and _in_range(column)):
        raise MessageError(f"cursor-position needs line and column, integers from 0 to {MAX_INT}.")
    cursor = {"line": line, "column": column}
    if "selection" in data:
        selection = data["selection"]
        if selection is not None and not isinstance(selection, dict | list):
            raise MessageError("selection must be an object, a list or null.")
        dumped = json.dumps(selection, ensure_ascii=False)
        if len(dumped) > MAX_SELECTION_CHARS:
            raise MessageError("selection is too large.")
        try:
            exact = _exact_numbers(selection)
        except RecursionError:
            exact = False
        if not exact:
            raise MessageError(f"selection numbers must lie within -{MAX_INT} and {MAX_INT}.")
        if not _storable(dumped):
            raise MessageError("selection holds text that cannot be stored (NUL or a lone surrogate).")
        cursor["selection"] = selection
    return cursor


def parse_language(data: dict) -> str:
    language = data.get("language")
    if language not in Language.values:
        raise MessageError(f"language must be one of {', '.join(Language.values)}.")
    return language

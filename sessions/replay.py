"""Reads of a session's past: the text of any version it still keeps, and its timeline (every
change, language and title change, save and run, in one order, a page at a time)."""

from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection

from sessions import store
from sessions.exceptions import VersionNotFound, VersionNotKept
from sessions.models import (
    ChangeType,
    DocumentCheckpoint,
    DocumentOperation,
    HistoryEntry,
    InterviewSession,
    SessionNotes,
)

# History entries the timeline shows, by the item type it shows them as; edits are left
# out (the log's changes are what they summarize).
EVENT_TYPES = {
    ChangeType.LANGUAGE_CHANGE.value: "language-change",
    ChangeType.TITLE_CHANGE.value: "title-change",
    ChangeType.SNAPSHOT.value: "save",
    ChangeType.EXECUTION.value: "run",
}


@dataclass(frozen=True)
class Version:
    code: str
    version: int
    language: str
    modified_at: datetime


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def first_version(*, session: InterviewSession) -> int:
    """The oldest version the session can still rebuild: its oldest checkpoint (its current
    version when it has none yet: a session nobody has changed)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT MIN(version) FROM {store.table_name(DocumentCheckpoint)} WHERE session_id = %s",
            [store.session_pk(session.id)],
        )
        (oldest,) = cursor.fetchone()
    return session.version if oldest is None else min(oldest, session.version)


def version_get(*, session: InterviewSession, version: int) -> Version:
    """The document as it was at `version`: the newest checkpoint at or before it and at most
    DOCUMENT_CHECKPOINT_INTERVAL operations after it. VersionNotFound beyond the current
    version, VersionNotKept before the oldest the log still holds.

    See `store.version_text`."""
    if version > session.version:
        raise VersionNotFound(f"The session is at version {session.version}; version {version} does not exist yet.")
    language = _language_at(session, version)
    if version == session.version:
        return Version(session.code, version, language, session.code_modified_at)
    past = store.version_text(session.id, version)
    if past is None:
        raise VersionNotKept(
            f"Version {version} is no longer kept; the oldest this session can show is "
            f"{first_version(session=session)}."
        )
    return Version(past[0], version, language, past[1])


def _language_at(session: InterviewSession, version: int) -> str:
    """The language when `version` was made: the last language change recorded before it, else
    what the first one after it changed from, else the session's language."""
    before = _language_change(session, "version < %s ORDER BY version DESC, id DESC", version)
    if before is not None:
        return before.get("to") or session.language
    after = _language_change(session, "version >= %s ORDER BY version, id", version)
    if after is not None:
        return after.get("from") or session.language
    return session.language


def _language_change(session: InterviewSession, where: str, version: int) -> dict | None:
    """The details of the session's first language change by `where` (a condition on the
    version, then an order), or None."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT details FROM {store.table_name(HistoryEntry)} WHERE session_id = %s AND change_type = %s"
            f" AND {where} LIMIT 1",
            [store.session_pk(session.id), ChangeType.LANGUAGE_CHANGE.value, version],
        )
        row = cursor.fetchone()
    return None if row is None else (store.read_json(row[0]) or {})


@dataclass(frozen=True)
class TimelinePage:
    items: list[dict]
    next_after: int
    next_after_event: int | None
    has_more: bool
    first_version: int


def timeline_page(
    *, session: InterviewSession, after: int, after_event: int | None, limit: int, max_bytes: int | None = None
) -> TimelinePage:
    """The timeline after a position, oldest first: each change (its version, time, author and
    changes as applied), then the events recorded while the document was at that version (by
    id). A position is `(after, after_event)`: after the change that made version `after`, and,
    with `after_event`, after that event of version `after`. At most `limit` items and about
    `max_bytes` of JSON (always at least one item); the page's last position comes back to
    continue from. Two indexed range reads, `limit + 1` rows each."""
    max_bytes = settings.TIMELINE_MAX_RESPONSE_BYTES if max_bytes is None else max_bytes
    pk = store.session_pk(session.id)
    changes = _change_items(pk, after, limit + 1)
    events = _event_items(pk, after, after_event, limit + 1)
    merged = sorted(changes + events, key=_position)
    items, size = [], 0
    for item in merged[:limit]:
        cost = _estimated_bytes(item)
        if items and size + cost > max_bytes:
            break
        items.append(item)
        size += cost
    has_more = len(merged) > len(items)
    if items:
        last = items[-1]
        next_after = last["version"]
        next_after_event = last.get("id")
    else:
        next_after, next_after_event = after, after_event
    return TimelinePage(items, next_after, next_after_event, has_more, first_version(session=session))


def _position(item: dict) -> tuple[int, int, int]:
    event = item.get("id")
    return (item["version"], 0, 0) if event is None else (item["version"], 1, event)


def _estimated_bytes(item: dict) -> int:
    size = 200
    for change in item.get("changes", ()):
        size += 40 + len(change["insert"])
    for stream in ("stdout", "stderr"):
        size += len(item.get(stream) or "")
    return size


def _change_items(pk, after: int, count: int) -> list[dict]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {_q('version')}, {_q('created_at')}, {_q('user_id')}, {_q('changes')}"
            f" FROM {store.table_name(DocumentOperation)} WHERE {_q('session_id')} = %s AND {_q('version')} > %s"
            f" ORDER BY {_q('version')} LIMIT %s",
            [pk, after, count],
        )
        rows = cursor.fetchall()
    return [
        {
            "type": "change",
            "version": v,
            "timestamp": store.read_datetime(at),
            "userId": user_id,
            "changes": store.read_json(changes),
        }
        for v, at, user_id, changes in rows
    ]


def _event_items(pk, after: int, after_event: int | None, count: int) -> list[dict]:
    table = store.table_name(HistoryEntry)
    # The edit entries are left out by the partial index's own condition, written as a literal
    # so that SQLite uses that index (it does not match a bound parameter against it).
    where = f"session_id = %s AND NOT (change_type = '{ChangeType.EDIT.value}')"
    params: list = [pk]
    if after_event is None:
        where += " AND version >= %s"
        params.append(after)
    else:
        where += " AND (version > %s OR (version = %s AND id > %s))"
        params += [after, after, after_event]
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, version, timestamp, user_id, change_type, description, details, stdout, stderr"
            f" FROM {table} WHERE {where} ORDER BY version, id LIMIT %s",
            [*params, count],
        )
        rows = cursor.fetchall()
    return [_event(*row) for row in rows if row[4] in EVENT_TYPES]


def _event(entry_id, version, at, user_id, change_type, description, details, stdout, stderr) -> dict:
    kind = EVENT_TYPES[change_type]
    details = store.read_json(details) or {}
    item = {"type": kind, "id": entry_id, "version": version, "timestamp": store.read_datetime(at), "userId": user_id}
    if kind == "language-change":
        item.update({"from": details.get("from"), "to": details.get("to")})
    elif kind == "title-change":
        item.update({"from": details.get("from"), "to": details.get("to"), "description": description})
    elif kind == "save":
        item.update({"snapshotId": details.get("snapshotId"), "language": details.get("language")})
    else:
        item.update(
            {
                "language": details.get("language"),
                "status": details.get("status"),
                "success": details.get("success"),
                "exitCode": details.get("exitCode"),
                "executionTime": details.get("executionTime"),
                "error": details.get("error"),
                "stdout": stdout,
                "stderr": stderr,
                "truncated": bool(details.get("truncated")),
                "description": description,
            }
        )
    return item


def notes_get(*, session: InterviewSession) -> SessionNotes:
    """The interviewer's notes on a session (empty, never written: `updated_at` None)."""
    notes = SessionNotes.objects.filter(session_id=session.id).first()
    return notes if notes is not None else SessionNotes(session_id=session.id, text="", updated_at=None)

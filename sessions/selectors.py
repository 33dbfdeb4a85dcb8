"""Reads of sessions and what hangs off them: a live session, who is here, history, the
welcome a new connection gets, and a session's export."""

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from sessions import store
from sessions.exceptions import SessionNotFound
from sessions.export_format import EXPORT_FORMAT, EXPORT_FORMAT_VERSION
from sessions.models import HistoryEntry, InterviewSession, Participant, ParticipantConnection, SessionNotes


def parse_session_id(value) -> uuid.UUID:
    """A session id from user input; anything that is not a UUID is an unknown session."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SessionNotFound() from exc


def session_get(*, session_id) -> InterviewSession:
    """The live (unexpired) session with this id, else SessionNotFound."""
    session = store.live_session(parse_session_id(session_id), timezone.now())
    if session is None:
        raise SessionNotFound()
    return session


def presence_cutoff():
    """Connections not refreshed since this moment belong to a dead process."""
    return timezone.now() - timedelta(seconds=settings.PRESENCE_TTL_SECONDS)


def _active_where() -> str:
    """The participants of a session (`p`) with at least one live connection, in plain SQL
    with two parameters (the session's key, the presence cutoff): through the ORM, building
    this subquery was most of a GET session's or participants' time."""
    return f"p.session_id = %s AND {_live_link()}"


def _live_link() -> str:
    """SQL: participant `p` has a live connection (one parameter: the presence cutoff)."""
    links = store.table_name(ParticipantConnection)
    return f"EXISTS (SELECT 1 FROM {links} c WHERE c.participant_id = p.id AND c.seen_at > %s)"


def _active_params(session_key) -> list:
    """The parameters of `_active_where` for a session's key (`store.session_pk`)."""
    return [session_key, store.db_datetime(presence_cutoff())]


def participants_active(*, session: InterviewSession) -> list[Participant]:
    """Participants with at least one live connection, in the order they joined."""
    query = f"SELECT p.* FROM {store.table_name(Participant)} p WHERE {_active_where()} ORDER BY p.joined_at, p.id"
    return list(Participant.objects.raw(query, _active_params(store.session_pk(session.id))))


def participant_active_count(*, session: InterviewSession) -> int:
    """How many distinct users are connected and joined right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COUNT(*) FROM {store.table_name(Participant)} p WHERE {_active_where()}",
            _active_params(store.session_pk(session.id)),
        )
        return cursor.fetchone()[0]


def _utf8_bytes(column: str) -> str:
    """SQL for the UTF-8 size of a text column, computed by the database without sending the text."""
    if connection.vendor == "sqlite":
        return f"LENGTH(CAST({column} AS BLOB))"
    return f"OCTET_LENGTH({column})"


def history_recent(*, session: InterviewSession, limit: int, offset: int = 0) -> list[HistoryEntry]:
    """The newest `limit` history entries after skipping the `offset` newest, oldest first (by
    timestamp: an `edit` entry's is its burst's latest change), without their code:
    `code_bytes` is its UTF-8 size (None when the entry has none), and `history_codes`
    fetches the codes worth sending. Plain SQL (the index on session, -timestamp, -id
    serves it): through the ORM, building the query cost more than running it."""
    q = connection.ops.quote_name
    code = HistoryEntry._meta.get_field("code_snapshot")
    columns = ", ".join(q(f.column) for f in HistoryEntry._meta.concrete_fields if f is not code)
    query = (
        f"SELECT {columns}, {_utf8_bytes(q(code.column))} AS code_bytes"
        f" FROM {store.table_name(HistoryEntry)} WHERE {q('session_id')} = %s"
        f" ORDER BY {q('timestamp')} DESC, {q('id')} DESC LIMIT %s OFFSET %s"
    )
    newest = list(HistoryEntry.objects.raw(query, [store.session_pk(session.id), limit, offset]))
    newest.reverse()
    return newest


def history_codes(*, entry_ids: list[int]) -> dict[int, str]:
    """The code carried by each of these history entries."""
    if not entry_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT id, code_snapshot FROM {store.table_name(HistoryEntry)}"
            f" WHERE id IN ({', '.join(['%s'] * len(entry_ids))})",
            entry_ids,
        )
        return dict(cursor.fetchall())


def _session_keys(session_ids: list) -> tuple[list[uuid.UUID | None], dict]:
    """The ids as UUIDs (None for one that is not a UUID: no session), and the database key
    of each valid one."""
    sids: list[uuid.UUID | None] = []
    for value in session_ids:
        try:
            sids.append(parse_session_id(value))
        except SessionNotFound:
            sids.append(None)
    return sids, {sid: store.session_pk(sid) for sid in sids if sid is not None}


def _live_rows(cursor, keys: dict, columns: str) -> dict:
    """Of these sessions (keys as `_session_keys` gives them), the live ones: key -> `columns`."""
    cursor.execute(
        f"SELECT id, {columns} FROM {store.table_name(InterviewSession)}"
        f" WHERE id IN ({', '.join(['%s'] * len(keys))}) AND expires_at > %s",
        [*keys.values(), store.db_datetime(timezone.now())],
    )
    return {row[0]: row[1:] for row in cursor.fetchall()}


@dataclass(frozen=True)
class Welcome:
    session_id: uuid.UUID
    code: str
    language: str
    version: int
    participants: list[dict]
    expires_at: object


def welcome_states(*, session_ids: list) -> list[Welcome | SessionNotFound]:
    """The welcome of each of these sessions, in order (SessionNotFound for one that is
    not live): two statements in plain SQL however many there are. Every connection and
    every resync reads this, a thousand at once when a fleet of clients reconnects: the
    ORM's building of the two queries, and a query pair per connection, were most of
    their cost. At most a few hundred ids at a time (each is a parameter)."""
    sids, keys = _session_keys(session_ids)
    rows, people = {}, {}
    if keys:
        with connection.cursor() as cursor:
            rows = _live_rows(cursor, keys, "code, language, version, expires_at")
            live = [key for key in keys.values() if key in rows]
            if live:
                cursor.execute(
                    f"SELECT p.session_id, p.user_id, p.name, p.role FROM {store.table_name(Participant)} p"
                    f" WHERE p.session_id IN ({', '.join(['%s'] * len(live))}) AND {_live_link()}"
                    " ORDER BY p.session_id, p.joined_at, p.id",
                    [*live, store.db_datetime(presence_cutoff())],
                )
                for key, user_id, name, role in cursor.fetchall():
                    people.setdefault(key, []).append({"userId": user_id, "name": name, "role": role})
    states: list[Welcome | SessionNotFound] = []
    for sid in sids:
        key = keys.get(sid)
        if key not in rows:
            states.append(SessionNotFound())
            continue
        code, language, version, expires_at = rows[key]
        states.append(Welcome(sid, code, language, version, list(people.get(key, ())), store.read_datetime(expires_at)))
    return states


@dataclass(frozen=True)
class CodeState:
    id: uuid.UUID
    code: str
    language: str
    version: int
    code_modified_at: datetime


def code_states(*, session_ids: list) -> list[CodeState | None]:
    """The current code of each of these sessions, in order (None for one that is not
    live, or an id that is not one): one statement however many there are (at most a few
    hundred ids), what `GET /code` answers."""
    sids, keys = _session_keys(session_ids)
    rows = {}
    if keys:
        with connection.cursor() as cursor:
            rows = _live_rows(cursor, keys, "code, language, version, code_modified_at")
    states: list[CodeState | None] = []
    for sid in sids:
        row = rows.get(keys.get(sid))
        if row is None:
            states.append(None)
            continue
        code, language, version, modified = row
        states.append(CodeState(sid, code, language, version, store.read_datetime(modified)))
    return states


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def session_export(*, session_id, with_notes: bool = False) -> dict:
    """Everything a session holds, JSON-ready, in the format `session_import` reads.

    Expired sessions not yet purged export too. Fields are listed one by one, so a
    field added to a model later (a secret, say) is never exported by accident; the
    live connections are presence, not data, and are left out. The same session
    always exports to the same dict.
    """
    sid = parse_session_id(session_id)
    session = InterviewSession.objects.filter(pk=sid).first()
    if session is None:
        raise SessionNotFound(f"No session with id {sid}.")
    return {
        "format": EXPORT_FORMAT,
        "formatVersion": EXPORT_FORMAT_VERSION,
        "session": {
            "id": str(session.id),
            "title": session.title,
            "language": session.language,
            "version": session.version,
            "code": session.code,
            "createdAt": _iso(session.created_at),
            "codeModifiedAt": _iso(session.code_modified_at),
            "expiresAt": _iso(session.expires_at),
        },
        "snapshots": [
            {
                "id": str(snapshot.id),
                "code": snapshot.code,
                "language": snapshot.language,
                "version": snapshot.version,
                "createdAt": _iso(snapshot.created_at),
            }
            for snapshot in session.snapshots.order_by("created_at", "id")
        ],
        "history": [
            {
                "timestamp": _iso(entry.timestamp),
                "userId": entry.user_id,
                "changeType": entry.change_type,
                "description": entry.description,
                "codeSnapshot": entry.code_snapshot,
                "count": entry.count,
                "version": entry.version,
                "details": entry.details,
                "stdout": entry.stdout,
                "stderr": entry.stderr,
            }
            for entry in session.history.order_by("id")
        ],
        "checkpoints": [
            {"version": checkpoint.version, "code": checkpoint.code, "createdAt": _iso(checkpoint.created_at)}
            for checkpoint in session.checkpoints.order_by("version")
        ],
        "operations": [
            {
                "version": op.version,
                "userId": op.user_id,
                "seq": op.seq,
                "changes": op.changes,
                "createdAt": _iso(op.created_at),
            }
            for op in session.operations.order_by("version")
        ],
        "participants": [
            {
                "userId": participant.user_id,
                "name": participant.name,
                "joinedAt": _iso(participant.joined_at),
                "cursorPosition": participant.cursor_position,
                "role": participant.role,
            }
            for participant in session.participants.order_by("joined_at", "user_id")
        ],
        **({"notes": _notes_export(session)} if with_notes else {}),
    }


def _notes_export(session: InterviewSession) -> dict | None:
    notes = SessionNotes.objects.filter(session_id=session.id).first()
    return None if notes is None else {"text": notes.text, "updatedAt": _iso(notes.updated_at)}

"""A session's life beyond the API: ending it, purging expired ones, export and import."""

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from sessions import document, events, services
from sessions.exceptions import SessionNotFound
from sessions.models import (
    ChangeType,
    CodeSnapshot,
    DocumentOperation,
    HistoryEntry,
    InterviewSession,
    Language,
    Participant,
    ParticipantConnection,
)
from sessions.selectors import parse_session_id

logger = logging.getLogger(__name__)

EXPORT_FORMAT = "interview-session"
EXPORT_FORMAT_VERSION = 1


class SessionImportError(ValueError):
    """An export that cannot be imported; nothing was written."""


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


@dataclass(frozen=True)
class PurgeReport:
    """What a purge deleted (or, in a dry run, would delete), per kind of row."""

    sessions: int = 0
    snapshots: int = 0
    history_entries: int = 0
    operations: int = 0
    participants: int = 0
    connections: int = 0
    dry_run: bool = False

    def describe(self) -> str:
        """One sentence for an operator: `Deleted 3 expired sessions (12 snapshots, ...).`"""
        if not self.sessions:
            return "No expired sessions to delete."
        parts = [
            _plural(self.snapshots, "snapshot"),
            _plural(self.history_entries, "history entry", "history entries"),
            _plural(self.operations, "operation"),
            _plural(self.participants, "participant"),
        ]
        if self.connections:
            parts.append(_plural(self.connections, "connection"))
        verb = "Would delete" if self.dry_run else "Deleted"
        return f"{verb} {_plural(self.sessions, 'expired session')} ({', '.join(parts)})."


# The models a session's deletion cascades to, by the name PurgeReport counts them under.
_CASCADE = {
    "snapshots": CodeSnapshot,
    "history_entries": HistoryEntry,
    "operations": DocumentOperation,
    "participants": Participant,
}


def _announce_ended(session_ids: list[uuid.UUID], reason: str) -> None:
    """After commit: close the sessions' remaining WebSocket clients (SESSION_NOT_FOUND, 4404)."""
    for session_id in session_ids:
        # The document cache holds per-version facts; a session re-imported under the
        # same id may have a different history, so this process forgets the old one.
        services.session_cache_forget(session_id=session_id)
        events.publish(session_id, events.ended_event(reason))


def sessions_purge_expired(*, older_than_hours: float = 0, dry_run: bool = False, batch_size: int = 200) -> PurgeReport:
    """Delete sessions that expired at least `older_than_hours` ago, with everything they hold.

    Deletes in batches of `batch_size` sessions, each batch in its own short transaction,
    so a running server is never kept waiting long for the write lock. Sessions that
    expire while the purge runs are left for the next one.
    """
    if older_than_hours < 0:
        raise ValueError("older_than_hours must not be negative")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    cutoff = timezone.now() - timedelta(hours=older_than_hours)
    if dry_run:
        expired = {"session__expires_at__lte": cutoff}
        return PurgeReport(
            sessions=InterviewSession.objects.filter(expires_at__lte=cutoff).count(),
            **{name: model.objects.filter(**expired).count() for name, model in _CASCADE.items()},
            connections=ParticipantConnection.objects.filter(participant__session__expires_at__lte=cutoff).count(),
            dry_run=True,
        )
    totals = dict.fromkeys(["sessions", *_CASCADE, "connections"], 0)
    labels = {
        "sessions": InterviewSession._meta.label,
        **{name: model._meta.label for name, model in _CASCADE.items()},
        "connections": ParticipantConnection._meta.label,
    }
    while True:
        with transaction.atomic():
            batch = InterviewSession.objects.filter(expires_at__lte=cutoff).order_by("expires_at", "id")
            if connection.features.has_select_for_update_skip_locked:
                # PostgreSQL: a session some request still holds is left for the next run.
                batch = batch.select_for_update(skip_locked=True)
            ids = list(batch.values_list("id", flat=True)[:batch_size])
            if ids:
                _deleted, per_model = InterviewSession.objects.filter(pk__in=ids).delete()
                for name, label in labels.items():
                    totals[name] += per_model.get(label, 0)
                transaction.on_commit(partial(_announce_ended, ids, "expired"))
        if len(ids) < batch_size:
            break
    report = PurgeReport(**totals)
    if report.sessions:
        logger.info("Purged expired sessions: %s", report.describe())
    return report


def session_end(*, session_id) -> None:
    """End a live session now: it answers 404 from now on and its clients are closed (4404)."""
    with transaction.atomic():
        session = services.session_lock(session_id)
        session.expires_at = timezone.now()
        session.save(update_fields=["expires_at"])
        transaction.on_commit(partial(_announce_ended, [session.id], "ended"))


# --- export ------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def session_export(*, session_id) -> dict:
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
            }
            for entry in session.history.order_by("id")
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
            }
            for participant in session.participants.order_by("joined_at", "user_id")
        ],
    }


# --- import ------------------------------------------------------------------------

_MISSING = object()


def _value(obj: dict, key: str, where: str, default=_MISSING):
    if key in obj:
        return obj[key]
    if default is _MISSING:
        raise SessionImportError(f"{where}.{key} is missing.")
    return default


def _text(
    obj: dict, key: str, where: str, *, nullable: bool = False, max_length: int | None = None, choices=None
) -> str | None:
    value = _value(obj, key, where, None if nullable else _MISSING)
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise SessionImportError(f"{where}.{key} must be a string{' or null' if nullable else ''}.")
    if max_length is not None and len(value) > max_length:
        raise SessionImportError(f"{where}.{key} is longer than {max_length} characters.")
    if choices is not None and value not in choices:
        raise SessionImportError(f"{where}.{key} must be one of {', '.join(choices)}, not {value!r}.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SessionImportError(f"{where}.{key} holds a lone surrogate.") from exc
    return value


def _integer(obj: dict, key: str, where: str, *, nullable: bool = False, minimum: int | None = 0) -> int | None:
    value = _value(obj, key, where, None if nullable else _MISSING)
    if value is None and nullable:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise SessionImportError(f"{where}.{key} must be an integer{' or null' if nullable else ''}.")
    if minimum is not None and value < minimum:
        raise SessionImportError(f"{where}.{key} must be at least {minimum}.")
    return value


def _timestamp(obj: dict, key: str, where: str) -> datetime:
    value = _value(obj, key, where)
    if not isinstance(value, str):
        raise SessionImportError(f"{where}.{key} must be an ISO 8601 timestamp.")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise SessionImportError(f"{where}.{key} is not an ISO 8601 timestamp: {value!r}.") from exc
    if parsed.tzinfo is None:
        raise SessionImportError(f"{where}.{key} has no time zone: {value!r}.")
    return parsed.astimezone(UTC)


def _objects(data: dict, key: str) -> list[dict]:
    items = _value(data, key, "export")
    if not isinstance(items, list):
        raise SessionImportError(f"export.{key} must be a list.")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise SessionImportError(f"export.{key}[{index}] must be an object.")
    return items


def _field_length(model, name: str) -> int:
    return model._meta.get_field(name).max_length


@dataclass
class _Parsed:
    session: InterviewSession
    snapshots: list[CodeSnapshot]
    history: list[HistoryEntry]
    operations: list[DocumentOperation]
    participants: list[Participant]


def _parse(data: object) -> _Parsed:
    """Check an export completely and build its (unsaved) rows."""
    if not isinstance(data, dict):
        raise SessionImportError("An export must be a JSON object.")
    if data.get("format") != EXPORT_FORMAT:
        raise SessionImportError(f"Not a session export: format must be {EXPORT_FORMAT!r}.")
    if data.get("formatVersion") != EXPORT_FORMAT_VERSION:
        raise SessionImportError(
            f"Unsupported export format version {data.get('formatVersion')!r} (this server reads "
            f"{EXPORT_FORMAT_VERSION})."
        )
    meta = _value(data, "session", "export")
    if not isinstance(meta, dict):
        raise SessionImportError("export.session must be an object.")
    languages = [choice.value for choice in Language]
    raw_id = _text(meta, "id", "session")
    try:
        session_id = uuid.UUID(raw_id)
    except ValueError as exc:
        raise SessionImportError(f"session.id is not a UUID: {raw_id!r}.") from exc
    session = InterviewSession(
        id=session_id,
        title=_text(meta, "title", "session", nullable=True, max_length=_field_length(InterviewSession, "title")),
        language=_text(meta, "language", "session", choices=languages),
        version=_integer(meta, "version", "session"),
        code=_text(meta, "code", "session"),
        created_at=_timestamp(meta, "createdAt", "session"),
        code_modified_at=_timestamp(meta, "codeModifiedAt", "session"),
        expires_at=_timestamp(meta, "expiresAt", "session"),
    )

    snapshots, snapshot_ids = [], set()
    for index, item in enumerate(_objects(data, "snapshots")):
        where = f"snapshots[{index}]"
        raw = _text(item, "id", where)
        try:
            snapshot_id = uuid.UUID(raw)
        except ValueError as exc:
            raise SessionImportError(f"{where}.id is not a UUID: {raw!r}.") from exc
        if snapshot_id in snapshot_ids:
            raise SessionImportError(f"{where}.id {snapshot_id} appears twice.")
        snapshot_ids.add(snapshot_id)
        snapshots.append(
            CodeSnapshot(
                id=snapshot_id,
                session=session,
                code=_text(item, "code", where),
                language=_text(item, "language", where, choices=languages),
                version=_integer(item, "version", where),
                created_at=_timestamp(item, "createdAt", where),
            )
        )

    history = []
    change_types = [choice.value for choice in ChangeType]
    for index, item in enumerate(_objects(data, "history")):
        where = f"history[{index}]"
        history.append(
            HistoryEntry(
                session=session,
                timestamp=_timestamp(item, "timestamp", where),
                user_id=_text(item, "userId", where, nullable=True, max_length=_field_length(HistoryEntry, "user_id")),
                change_type=_text(item, "changeType", where, choices=change_types),
                description=_text(item, "description", where, max_length=_field_length(HistoryEntry, "description")),
                code_snapshot=_text(item, "codeSnapshot", where, nullable=True),
                count=_integer(item, "count", where, minimum=1) if "count" in item else 1,
            )
        )

    operations, versions = [], set()
    for index, item in enumerate(_objects(data, "operations")):
        where = f"operations[{index}]"
        version = _integer(item, "version", where, minimum=1)
        if version > session.version:
            raise SessionImportError(f"{where}.version {version} is beyond the session's version {session.version}.")
        if version in versions:
            raise SessionImportError(f"{where}.version {version} appears twice.")
        versions.add(version)
        try:
            changes = document.normalize(_value(item, "changes", where), None)
        except document.ChangeError as exc:
            raise SessionImportError(f"{where}.changes: {exc}.") from exc
        operations.append(
            DocumentOperation(
                session=session,
                version=version,
                user_id=_text(
                    item, "userId", where, nullable=True, max_length=_field_length(DocumentOperation, "user_id")
                ),
                seq=_integer(item, "seq", where, nullable=True, minimum=None),
                changes=changes,
                created_at=_timestamp(item, "createdAt", where),
            )
        )

    participants, user_ids = [], set()
    for index, item in enumerate(_objects(data, "participants")):
        where = f"participants[{index}]"
        user_id = _text(item, "userId", where, max_length=_field_length(Participant, "user_id"))
        if user_id in user_ids:
            raise SessionImportError(f"{where}.userId {user_id!r} appears twice.")
        user_ids.add(user_id)
        cursor = item.get("cursorPosition")
        if cursor is not None and not isinstance(cursor, dict):
            raise SessionImportError(f"{where}.cursorPosition must be an object or null.")
        participants.append(
            Participant(
                session=session,
                user_id=user_id,
                name=_text(item, "name", where, max_length=_field_length(Participant, "name")),
                joined_at=_timestamp(item, "joinedAt", where),
                cursor_position=cursor,
            )
        )
    return _Parsed(session, snapshots, history, operations, participants)


def session_import(*, data: dict, replace: bool = False) -> InterviewSession:
    """Recreate an exported session with its ids and timestamps, all in one transaction.

    A session with that id must not exist unless `replace`, which deletes it first (in
    the same transaction; its connected clients are closed after commit) and keeps its
    owner token. A new import has no owner token: only staff can delete it. Any problem
    with the data raises SessionImportError and writes nothing.
    """
    parsed = _parse(data)
    session = parsed.session
    replaced = False
    try:
        with transaction.atomic():
            existing = InterviewSession.objects.filter(pk=session.id)
            owner_token_hashes = list(existing.values_list("owner_token_hash", flat=True))
            if owner_token_hashes:
                if not replace:
                    raise SessionImportError(f"Session {session.id} exists already (import with replace to overwrite).")
                existing.delete()
                # The owner token is never exported; the session it replaces keeps its owner.
                session.owner_token_hash = owner_token_hashes[0]
                replaced = True
            session.save(force_insert=True)
            CodeSnapshot.objects.bulk_create(parsed.snapshots)
            # In export order, so history keeps its order (it is ordered by id).
            HistoryEntry.objects.bulk_create(parsed.history)
            DocumentOperation.objects.bulk_create(parsed.operations)
            Participant.objects.bulk_create(parsed.participants)
            if replaced:
                transaction.on_commit(partial(_announce_ended, [session.id], "replaced"))
    except DatabaseError as exc:
        # E.g. a snapshot id that another session holds, or text the database refuses.
        raise SessionImportError(f"The database refused the import: {exc}") from exc
    logger.info("Imported session %s%s", session.id, " (replacing the existing one)" if replaced else "")
    return session

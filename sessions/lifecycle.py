"""A session's life beyond the API: ending it, purging expired ones, importing an export."""

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from django.db import DatabaseError, connection, transaction
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from sessions import events, services
from sessions.exceptions import SessionNotFound
from sessions.export_format import EXPORT_FORMAT, EXPORT_FORMAT_VERSION, export_check, first_error
from sessions.models import (
    CodeSnapshot,
    DocumentCheckpoint,
    DocumentOperation,
    HistoryEntry,
    InterviewSession,
    Participant,
    ParticipantConnection,
    SessionNotes,
)
from sessions.selectors import parse_session_id

logger = logging.getLogger(__name__)


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


def session_expiry_set(*, session_id, expires_at: datetime) -> InterviewSession:
    """Set when a session expires, expired or not (staff may revive one); a session this
    makes expired is ended as `session_end` ends it: its clients are closed (4404)."""
    with transaction.atomic():
        session = InterviewSession.objects.select_for_update().filter(pk=parse_session_id(session_id)).first()
        if session is None:
            raise SessionNotFound()
        was_live = not session.is_expired
        session.expires_at = expires_at
        session.save(update_fields=["expires_at"])
        if was_live and session.is_expired:
            transaction.on_commit(partial(_announce_ended, [session.id], "ended"))
    return session


def session_end(*, session_id) -> None:
    """End a live session now: it answers 404 from now on and its clients are closed (4404)."""
    with transaction.atomic():
        session = services.session_lock(session_id)
        session.expires_at = timezone.now()
        session.save(update_fields=["expires_at"])
        transaction.on_commit(partial(_announce_ended, [session.id], "ended"))


@dataclass
class _Parsed:
    session: InterviewSession
    snapshots: list[CodeSnapshot]
    history: list[HistoryEntry]
    operations: list[DocumentOperation]
    participants: list[Participant]
    checkpoints: list[DocumentCheckpoint]
    notes: SessionNotes | None


# An export's lists of rows, by the name it and _Parsed give them.
_PARTS = {
    "snapshots": CodeSnapshot,
    "history": HistoryEntry,
    "operations": DocumentOperation,
    "participants": Participant,
    "checkpoints": DocumentCheckpoint,
}


def _parse(data: object) -> _Parsed:
    """Check an export completely (export_format's serializers) and build its (unsaved) rows."""
    if not isinstance(data, dict):
        raise SessionImportError("An export must be a JSON object.")
    if data.get("format") != EXPORT_FORMAT:
        raise SessionImportError(f"Not a session export: format must be {EXPORT_FORMAT!r}.")
    if data.get("formatVersion") != EXPORT_FORMAT_VERSION:
        raise SessionImportError(
            f"Unsupported export format version {data.get('formatVersion')!r} (this server reads "
            f"{EXPORT_FORMAT_VERSION})."
        )
    try:
        export = export_check(data)
    except ValidationError as exc:
        raise SessionImportError(first_error(exc.detail)) from exc
    session = InterviewSession(**export["session"])
    rows = {name: [model(session=session, **item) for item in export[name]] for name, model in _PARTS.items()}
    if "checkpoints" not in data:
        # An export made before checkpoints: a replay can show its text from its version on
        # (its older versions cannot be rebuilt).
        rows["checkpoints"].append(
            DocumentCheckpoint(
                session=session, version=session.version, code=session.code, created_at=session.code_modified_at
            )
        )
    notes = None if export["notes"] is None else SessionNotes(session=session, **export["notes"])
    return _Parsed(session, **rows, notes=notes)


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
            DocumentCheckpoint.objects.bulk_create(parsed.checkpoints)
            if parsed.notes is not None:
                parsed.notes.save(force_insert=True)
            if replaced:
                transaction.on_commit(partial(_announce_ended, [session.id], "replaced"))
    except DatabaseError as exc:
        # E.g. a snapshot id that another session holds, or text the database refuses.
        raise SessionImportError(f"The database refused the import: {exc}") from exc
    logger.info("Imported session %s%s", session.id, " (replacing the existing one)" if replaced else "")
    return session

"""Writes to sessions: create, update, delete, snapshots, runs, the owner token, and
`code_changes_apply`, the one path by which a document changes."""

import hashlib
import hmac
import logging
import secrets
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from sessions import events, frames, store
from sessions.editing.changes import CodeChange, CodeChangeResult
from sessions.editing.locked_document import LockedDocument
from sessions.editing.operation_cache import operation_cache

# The entry point's vocabulary, importable from here by its callers (the writer, the REST views).
from sessions.editing.work_budget import rebase_work_budget as rebase_work_budget
from sessions.exceptions import Deferred, InvalidChange, ResyncRequired, SessionNotFound
from sessions.models import (
    STARTER_CODE,
    ChangeType,
    CodeSnapshot,
    HistoryEntry,
    InterviewSession,
    Language,
    SessionNotes,
)
from sessions.selectors import parse_session_id

logger = logging.getLogger(__name__)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def session_create(
    *, language: str = Language.JAVASCRIPT, title: str | None = None, expires_in_hours: int | None = None
) -> InterviewSession:
    """Create a session with its language's starter code.

    The returned instance carries `owner_token`, the secret that may delete the session;
    only its hash is stored, so this is the one time it can be handed out.
    """
    hours = expires_in_hours or settings.SESSION_DEFAULT_EXPIRES_HOURS
    now = timezone.now()
    token = secrets.token_urlsafe(32)
    session = InterviewSession(
        language=language,
        title=title,
        code=STARTER_CODE[Language(language)],
        created_at=now,
        code_modified_at=now,
        expires_at=now + timedelta(hours=hours),
        owner_token_hash=token_hash(token),
    )
    store.row_insert(session)
    session.owner_token = token
    return session


def session_owner_check(*, session: InterviewSession, token: str) -> bool:
    """Whether `token` is the session's owner token (constant-time comparison)."""
    return owner_token_matches(owner_token_hash=session.owner_token_hash, token=token)


def owner_token_matches(*, owner_token_hash: str, token: str) -> bool:
    """Whether `token` is the owner token whose stored hash is `owner_token_hash` (constant
    time; a session without an owner token, an imported one, matches no token). For callers
    that read the hash without the session's row, as a batch of WebSocket joins does."""
    return bool(owner_token_hash) and hmac.compare_digest(owner_token_hash, token_hash(token))


def session_lock(session_id) -> InterviewSession:
    """The live session, locked for the rest of the transaction (a row lock on PostgreSQL;
    on SQLite the IMMEDIATE transaction already holds the database's write lock)."""
    session = store.live_session(parse_session_id(session_id), timezone.now(), lock=True)
    if session is None:
        raise SessionNotFound()
    return session


def session_cache_forget(*, session_id: uuid.UUID) -> None:
    """Drop this process's cached operations, seqs and edit bursts of a session whose
    history was replaced wholesale (an import over an existing id)."""
    operation_cache.forget(session_id)


def code_changes_apply(*, submissions: list[tuple[object, CodeChange]], notify: bool = True) -> list:
    """Change sessions' code: the one path by which a document changes.

    Each submission is rebased over what was accepted since its base version, applied,
    logged with its new version, and recorded in history; all of them in one
    transaction (group commit). Returns, per submission, a CodeChangeResult or the
    exception that rejected it (InvalidChange, ResyncRequired, SessionNotFound), which
    changed nothing. With `notify`, connected clients get `code-update` after commit.
    """
    results: list = [None] * len(submissions)
    by_session: dict[uuid.UUID, list[int]] = {}
    for index, (session_id, _change) in enumerate(submissions):
        try:
            by_session.setdefault(parse_session_id(session_id), []).append(index)
        except SessionNotFound as exc:
            results[index] = exc
    with transaction.atomic():
        db = store.HotPath()
        now = timezone.now()
        # Sessions are locked in one order (by id) in every process: two processes' rounds
        # sharing sessions wait for each other instead of deadlocking (PostgreSQL broke such
        # a cycle after deadlock_timeout, and the writer then retried change by change).
        rows = db.lock_documents(list(by_session), now) if by_session else {}
        for session_id, indices in sorted(by_session.items(), key=lambda item: item[0].hex):
            row = rows.get(session_id)
            if row is None:
                for index in indices:
                    results[index] = SessionNotFound()
                continue
            doc = LockedDocument(session_id, row[0], row[1], [submissions[i][1] for i in indices], db)
            for index in indices:
                try:
                    results[index] = doc.apply(submissions[index][1])
                except (InvalidChange, ResyncRequired, Deferred) as exc:
                    results[index] = exc
            doc.flush()
            if notify:
                for index in indices:
                    if isinstance(results[index], CodeChangeResult) and results[index].changed:
                        _notify_code_update(results[index])
        db.close()
    return results


def code_change_apply(*, session_id, change: CodeChange, notify: bool = True) -> CodeChangeResult:
    """Apply one change (see code_changes_apply); raises what rejected it."""
    (result,) = code_changes_apply(submissions=[(session_id, change)], notify=notify)
    if isinstance(result, Exception):
        raise result
    return result


def _notify_code_update(result: CodeChangeResult) -> None:
    message = frames.code_update(
        user_id=result.user_id, code=result.code, changes=result.changes, version=result.version
    )
    transaction.on_commit(
        lambda: events.publish(result.session_id, events.serialized_event(message, version=result.version))
    )


def language_change_locked(
    session: InterviewSession, language: str, user_id: str | None, exclude: str | None = None
) -> bool:
    """Set the language of a locked session; record and announce it if it changed."""
    if session.language == language:
        return False
    previous = session.language
    session.language = language
    session.save(update_fields=["language"])
    HistoryEntry.objects.create(
        session=session,
        user_id=user_id,
        change_type=ChangeType.LANGUAGE_CHANGE,
        description=f"Changed language from {previous} to {language}",
        version=session.version,
        details={"from": previous, "to": language},
    )
    message = frames.language_changed(user_id=user_id, language=language)
    sid = session.id
    transaction.on_commit(lambda: events.publish(sid, events.serialized_event(message, exclude=exclude)))
    return True


def session_update(
    *,
    session_id,
    language: str | None = None,
    title: str | None = None,
    set_title: bool = False,
    user_id: str | None = None,
    exclude_channel: str | None = None,
) -> InterviewSession:
    """Change a session's language and/or title, each recorded in history if it changed; a new
    language is announced after commit to every connection but `exclude_channel` (the one
    that asked). The WebSocket protocol has no title message, so a title is not announced."""
    with transaction.atomic():
        session = session_lock(session_id)
        if language is not None:
            language_change_locked(session, language, user_id, exclude_channel)
        if set_title and title != session.title:
            previous, session.title = session.title, title
            session.save(update_fields=["title"])
            if (previous or "") != (title or ""):  # null and "" both read as no title
                HistoryEntry.objects.create(
                    session=session,
                    user_id=user_id,
                    change_type=ChangeType.TITLE_CHANGE,
                    description=f"Changed the title from {_quoted(previous)} to {_quoted(title)}",
                    version=session.version,
                    details={"from": previous or None, "to": title or None},
                )
    return session


def _quoted(title: str | None) -> str:
    return f'"{title}"' if title else "none"


def snapshot_create(*, session_id, code: str, language: str | None = None, user_id: str | None = None) -> CodeSnapshot:
    """Save code: make it the current code (one change, announced) and keep a snapshot."""
    with transaction.atomic():
        session = session_lock(session_id)
        if language is not None:
            language_change_locked(session, language, user_id)
        doc = LockedDocument(session.id, session.code, session.version, [])
        result = doc.apply(CodeChange(code=code, user_id=user_id))
        doc.flush(record_edits=False)
        session.code, session.version = doc.code, doc.version
        if result.changed:
            _notify_code_update(result)
        now = timezone.now()
        snapshot = CodeSnapshot(
            session=session, code=session.code, language=session.language, version=session.version, created_at=now
        )
        store.row_insert(snapshot)
        snapshots_trim(session_id=session.id)
        store.row_insert(
            HistoryEntry(
                session=session,
                timestamp=now,
                user_id=user_id,
                change_type=ChangeType.SNAPSHOT,
                description=f"Saved a snapshot ({len(session.code)} characters)",
                code_snapshot=session.code,
                version=session.version,
                details={"snapshotId": str(snapshot.id), "language": session.language},
            )
        )
        history_codes_trim(session_id=session.id)
    return snapshot


def snapshots_trim(*, session_id: uuid.UUID) -> int:
    """Delete a session's snapshots older than its newest SESSION_MAX_SNAPSHOTS (at least the
    one just saved stays); returns how many went. Call it in the transaction that saved one.

    The index on (session, created_at, id) finds them without reading any code, and past the
    bound a save deletes one row: the work stays the same however long the session runs."""
    return store.snapshots_beyond_delete(session_id, keep=max(1, settings.SESSION_MAX_SNAPSHOTS))


def history_codes_trim(*, session_id: uuid.UUID) -> int:
    """Clear the code of a session's history entries older than its newest
    SESSION_MAX_HISTORY_CODES that carry code (snapshots and runs); the entries themselves
    stay, so the timeline is complete. Returns how many lost their code. Call it in the
    transaction that recorded one.

    The partial index `history_session_codes` holds only entries with code, at most the
    bound plus one a session, so this reads neither code nor the rest of the history."""
    return store.history_codes_beyond_clear(session_id, keep=max(0, settings.SESSION_MAX_HISTORY_CODES))


def output_cap(text: str | None) -> tuple[str | None, bool]:
    """A run's output as history keeps it: at most HISTORY_OUTPUT_BYTES of UTF-8 (cut at a
    character), and whether it was cut."""
    limit = settings.HISTORY_OUTPUT_BYTES
    if text is None or len(text) * 4 <= limit:
        return text, False
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True


def run_record(
    *,
    session_id,
    code: str,
    description: str,
    details: dict | None = None,
    stdout: str | None = None,
    stderr: str | None = None,
) -> HistoryEntry:
    """Record a run of code in its session's history (the description cut to what the column
    holds), with its outcome (`details`) and output (capped: `output_cap`) for the timeline.

    The session is locked while the entry is written, as edits lock it, so the run lands
    between two batches of edits and ends the bursts of typing before it, at the version it
    ran beside. Only the newest SESSION_MAX_HISTORY_CODES entries with code keep it and the
    output (see history_codes_trim)."""
    stdout, cut_out = output_cap(stdout)
    stderr, cut_err = output_cap(stderr)
    details = dict(details or {})
    if cut_out or cut_err:
        details["truncated"] = True
    with transaction.atomic():
        session = session_lock(session_id)
        entry = HistoryEntry.objects.create(
            session=session,
            change_type=ChangeType.EXECUTION,
            description=description[: HistoryEntry._meta.get_field("description").max_length],
            code_snapshot=code,
            version=session.version,
            details=details,
            stdout=stdout,
            stderr=stderr,
        )
        history_codes_trim(session_id=session.id)
    return entry


def session_delete(*, session_id) -> None:
    """Delete a session and everything it holds; connected clients are told and closed."""
    with transaction.atomic():
        session = session_lock(session_id)
        sid = session.id
        session.delete()
        transaction.on_commit(lambda: events.publish(sid, events.ended_event("deleted")))


def notes_save(*, session: InterviewSession, text: str) -> SessionNotes:
    """Replace the interviewer's notes on a session (the caller checked the owner token)."""
    notes, _created = SessionNotes.objects.update_or_create(
        session_id=session.id, defaults={"text": text, "updated_at": timezone.now()}
    )
    return notes

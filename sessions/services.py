"""Writes to sessions; `code_change_apply` is the one path by which a document changes."""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from interview.errors import SessionNotFound
from sessions import document, events
from sessions.models import (
    STARTER_CODE,
    ChangeType,
    CodeSnapshot,
    DocumentOperation,
    HistoryEntry,
    InterviewSession,
    Language,
)
from sessions.selectors import parse_session_id

logger = logging.getLogger(__name__)


class InvalidChange(Exception):
    """A change that cannot be applied (bad ranges, too large); nothing was changed."""


class ResyncRequired(Exception):
    """The change's base version is older than the changes kept for rebasing."""

    def __init__(self, code: str, version: int):
        super().__init__("Base version is too old; resync with the current document.")
        self.code = code
        self.version = version


@dataclass(frozen=True)
class CodeChange:
    """A request to change a document: full text, or `changes` against `base_version`."""

    code: str | None = None
    changes: list | None = None
    base_version: int | None = None
    user_id: str | None = None
    seq: int | None = None


@dataclass
class CodeChangeResult:
    """What an accepted change did; `duplicate` marks a resent `seq` not applied again."""

    session_id: uuid.UUID
    version: int
    code: str
    changes: list = field(default_factory=list)
    user_id: str | None = None
    duplicate: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.changes) and not self.duplicate


def session_create(
    *, language: str = Language.JAVASCRIPT, title: str | None = None, expires_in_hours: int | None = None
) -> InterviewSession:
    """Create a session with its language's starter code."""
    hours = expires_in_hours or settings.SESSION_DEFAULT_EXPIRES_HOURS
    now = timezone.now()
    return InterviewSession.objects.create(
        language=language,
        title=title,
        code=STARTER_CODE[Language(language)],
        created_at=now,
        code_modified_at=now,
        expires_at=now + timedelta(hours=hours),
    )


def _lock(session_id) -> InterviewSession:
    """The live session, locked for the rest of the transaction (a row lock on PostgreSQL;
    on SQLite the IMMEDIATE transaction already holds the database's write lock)."""
    session = (
        InterviewSession.objects.select_for_update()
        .filter(pk=parse_session_id(session_id), expires_at__gt=timezone.now())
        .first()
    )
    if session is None:
        raise SessionNotFound()
    return session


def _check_size(code: str) -> None:
    limit = settings.MAX_CODE_BYTES
    # Every character is at most 4 bytes: most documents need no encoding to check.
    if len(code) * 4 > limit and len(code.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidChange(f"The code would exceed the limit of {limit} bytes.")


def _rebase(session: InterviewSession, change: CodeChange) -> list:
    """The change's edits, validated and transformed to apply to the current document."""
    if change.changes is None:
        return document.diff(session.code, change.code or "")
    base = change.base_version if change.base_version is not None else session.version
    if base > session.version or base < 0:
        raise InvalidChange(f"Unknown base version {base}; the document is at {session.version}.")
    if session.version - base > settings.OT_MAX_REBASE_VERSIONS:
        raise ResyncRequired(session.code, session.version)
    if base == session.version:
        return document.normalize(change.changes, document.utf16_len(session.code))
    log = list(session.operations.filter(version__gt=base).order_by("version").values_list("changes", flat=True))
    if len(log) != session.version - base:
        # Older operations were purged: nothing to rebase over.
        raise ResyncRequired(session.code, session.version)
    # Validate against the document the client saw: its length is the current one less
    # what each accepted change added.
    base_length = document.utf16_len(session.code) - sum(
        document.utf16_len(c["insert"]) - (c["to"] - c["from"]) for op in log for c in op
    )
    ours = document.normalize(change.changes, base_length)
    return document.transform_over_log(ours, log)


def _record_edit(session: InterviewSession, user_id: str | None, now) -> None:
    """One `edit` entry per user per burst of typing, counting the changes it holds."""
    window = timedelta(seconds=settings.HISTORY_COALESCE_SECONDS)
    last = session.history.order_by("-id").first()
    if (
        last is not None
        and last.change_type == ChangeType.EDIT
        and last.user_id == user_id
        and now - last.timestamp <= window
    ):
        last.count += 1
        last.timestamp = now
        last.description = f"Edited the code ({last.count} changes)"
        last.save(update_fields=["count", "timestamp", "description"])
        return
    HistoryEntry.objects.create(
        session=session,
        timestamp=now,
        user_id=user_id,
        change_type=ChangeType.EDIT,
        description="Edited the code (1 change)",
    )


def apply_locked(session: InterviewSession, change: CodeChange, *, record_edit: bool = True) -> CodeChangeResult:
    """Apply one change to a session locked by the caller's transaction.

    Everything is computed before the first write, so a rejected change writes nothing.
    """
    if change.seq is not None and change.user_id is not None:
        done = (
            session.operations.filter(user_id=change.user_id, seq=change.seq).values_list("version", flat=True).first()
        )
        if done is not None:
            return CodeChangeResult(session.id, done, session.code, [], change.user_id, duplicate=True)
    try:
        changes = _rebase(session, change)
        new_code = document.apply(session.code, changes) if changes else session.code
    except document.ChangeError as exc:
        raise InvalidChange(str(exc)) from exc
    if not changes:
        return CodeChangeResult(session.id, session.version, session.code, [], change.user_id)
    _check_size(new_code)

    now = timezone.now()
    session.code = new_code
    session.version += 1
    session.code_modified_at = now
    session.save(update_fields=["code", "version", "code_modified_at"])
    DocumentOperation.objects.create(
        session=session,
        version=session.version,
        user_id=change.user_id,
        seq=change.seq,
        changes=changes,
        created_at=now,
    )
    if record_edit:
        _record_edit(session, change.user_id, now)
    return CodeChangeResult(session.id, session.version, new_code, changes, change.user_id)


def code_change_apply(*, session_id, change: CodeChange, notify: bool = True) -> CodeChangeResult:
    """Change a session's code: rebase, apply, bump the version, log, record history,
    and (after commit) tell connected clients."""
    with transaction.atomic():
        session = _lock(session_id)
        result = apply_locked(session, change)
        if notify and result.changed:
            _notify_code_update(result)
    return result


def _notify_code_update(result: CodeChangeResult, exclude: str | None = None) -> None:
    message = events.code_update_message(
        user_id=result.user_id, code=result.code, changes=result.changes, version=result.version
    )
    transaction.on_commit(lambda: events.publish(result.session_id, events.group_event(message, exclude=exclude)))


def language_change_locked(session: InterviewSession, language: str, user_id: str | None) -> bool:
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
    )
    message = events.language_changed_message(user_id=user_id, language=language)
    sid = session.id
    transaction.on_commit(lambda: events.publish(sid, events.group_event(message)))
    return True


def session_update(
    *,
    session_id,
    language: str | None = None,
    title: str | None = None,
    set_title: bool = False,
    user_id: str | None = None,
) -> InterviewSession:
    """Change a session's language and/or title."""
    with transaction.atomic():
        session = _lock(session_id)
        if language is not None:
            language_change_locked(session, language, user_id)
        if set_title and title != session.title:
            session.title = title
            session.save(update_fields=["title"])
    return session


def snapshot_create(*, session_id, code: str, language: str | None = None, user_id: str | None = None) -> CodeSnapshot:
    """Save code: make it the current code (one change, announced) and keep a snapshot."""
    with transaction.atomic():
        session = _lock(session_id)
        if language is not None:
            language_change_locked(session, language, user_id)
        result = apply_locked(session, CodeChange(code=code, user_id=user_id), record_edit=False)
        if result.changed:
            _notify_code_update(result)
        now = timezone.now()
        snapshot = CodeSnapshot.objects.create(
            session=session, code=session.code, language=session.language, version=session.version, created_at=now
        )
        HistoryEntry.objects.create(
            session=session,
            timestamp=now,
            user_id=user_id,
            change_type=ChangeType.SNAPSHOT,
            description=f"Saved a snapshot ({len(session.code)} characters)",
            code_snapshot=session.code,
        )
    return snapshot


def session_delete(*, session_id) -> None:
    """Delete a session and everything it holds; connected clients are told and closed."""
    with transaction.atomic():
        session = _lock(session_id)
        sid = session.id
        session.delete()
        transaction.on_commit(lambda: events.publish(sid, events.ended_event("deleted")))

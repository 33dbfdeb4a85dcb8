"""Writes to sessions; `code_change_apply` is the one path by which a document changes."""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
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


def normalize_newlines(code: str) -> str:
    """Line breaks as the browser editor holds them (CodeMirror turns CR LF and CR into LF),
    so that offsets counted by the editor and by the server agree."""
    return code.replace("\r\n", "\n").replace("\r", "\n") if "\r" in code else code


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
    new_version: bool = False

    @property
    def changed(self) -> bool:
        """Whether the change took a new version (which every client must then see)."""
        return self.new_version


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


def _length_delta(changes: list) -> int:
    return sum(document.utf16_len(c["insert"]) - (c["to"] - c["from"]) for c in changes)


class _Document:
    """A locked session's document while a batch of changes is applied to it in memory;
    `flush` writes the session, the operation log and history in a few queries."""

    def __init__(self, session: InterviewSession, changes: list[CodeChange]):
        self.session = session
        self.stored_version = session.version
        self.new_ops: list[DocumentOperation] = []
        self.edits: list[tuple[str | None, object]] = []
        pairs = {(c.user_id, c.seq) for c in changes if c.seq is not None and c.user_id is not None}
        self.applied_seqs: dict[tuple[str, int], int] = {}
        if pairs:
            query = Q()
            for user_id, seq in pairs:
                query |= Q(user_id=user_id, seq=seq)
            for user_id, seq, version in session.operations.filter(query).values_list("user_id", "seq", "version"):
                self.applied_seqs[(user_id, seq)] = version

    def _log_since(self, base: int) -> list:
        """The change lists accepted after `base`, from the database and this batch."""
        stored = []
        if base < self.stored_version:
            stored = list(
                self.session.operations.filter(version__gt=base).order_by("version").values_list("changes", flat=True)
            )
            if len(stored) != self.stored_version - base:
                # Older operations were purged: nothing to rebase over.
                raise ResyncRequired(self.session.code, self.session.version)
        return stored + [op.changes for op in self.new_ops if op.version > base]

    def _rebase(self, change: CodeChange) -> list:
        session = self.session
        if change.changes is None:
            return document.diff(session.code, normalize_newlines(change.code or ""))
        base = change.base_version if change.base_version is not None else session.version
        if base > session.version or base < 0:
            raise InvalidChange(f"Unknown base version {base}; the document is at {session.version}.")
        if session.version - base > settings.OT_MAX_REBASE_VERSIONS:
            raise ResyncRequired(session.code, session.version)
        length = document.utf16_len(session.code)
        if base == session.version:
            return document.normalize(change.changes, length)
        log = self._log_since(base)
        # Validate against the document the client saw: its length is the current one
        # less what each change accepted since added.
        ours = document.normalize(change.changes, length - sum(_length_delta(op) for op in log))
        return document.transform_over_log(ours, log)

    def apply(self, change: CodeChange) -> CodeChangeResult:
        """Apply one change in memory; a rejected change leaves the document as it was.

        A delta always takes a version, even one that rebases to nothing (its text was
        deleted meanwhile), so every accepted delta is acknowledged with its own version
        and every client counts the same versions. An unchanged full text takes none.
        """
        session = self.session
        key = (change.user_id, change.seq)
        if key in self.applied_seqs:
            return CodeChangeResult(session.id, self.applied_seqs[key], session.code, [], change.user_id, True)
        try:
            changes = self._rebase(change)
            new_code = document.apply(session.code, changes) if changes else session.code
        except document.ChangeError as exc:
            raise InvalidChange(str(exc)) from exc
        if not changes and change.changes is None:
            return CodeChangeResult(session.id, session.version, session.code, [], change.user_id)
        _check_size(new_code)
        now = timezone.now()
        session.code = new_code
        session.version += 1
        if changes:
            session.code_modified_at = now
        self.new_ops.append(
            DocumentOperation(
                session=session,
                version=session.version,
                user_id=change.user_id,
                seq=change.seq,
                changes=changes,
                created_at=now,
            )
        )
        if change.seq is not None and change.user_id is not None:
            self.applied_seqs[key] = session.version
        self.edits.append((change.user_id, now))
        return CodeChangeResult(session.id, session.version, new_code, changes, change.user_id, new_version=True)

    def flush(self, *, record_edits: bool = True) -> None:
        if not self.new_ops:
            return
        self.session.save(update_fields=["code", "version", "code_modified_at"])
        DocumentOperation.objects.bulk_create(self.new_ops)
        if record_edits:
            _record_edits(self.session, self.edits)
        self.stored_version = self.session.version
        self.new_ops = []
        self.edits = []


def _record_edits(session: InterviewSession, edits: list) -> None:
    """One `edit` entry per user per burst of typing, counting the changes it holds."""
    window = timedelta(seconds=settings.HISTORY_COALESCE_SECONDS)
    last = session.history.order_by("-id").first()
    dirty = False
    for user_id, when in edits:
        if (
            last is not None
            and last.change_type == ChangeType.EDIT
            and last.user_id == user_id
            and when - last.timestamp <= window
        ):
            last.count += 1
            last.timestamp = when
            dirty = True
            continue
        if dirty:
            _save_edit(last)
        last = HistoryEntry(session=session, timestamp=when, user_id=user_id, change_type=ChangeType.EDIT, count=1)
        dirty = True
    if dirty:
        _save_edit(last)


def _save_edit(entry: HistoryEntry) -> None:
    entry.description = f"Edited the code ({entry.count} change{'s' if entry.count != 1 else ''})"
    entry.save()


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
        for session_id, indices in by_session.items():
            try:
                session = _lock(session_id)
            except SessionNotFound as exc:
                for index in indices:
                    results[index] = exc
                continue
            doc = _Document(session, [submissions[i][1] for i in indices])
            for index in indices:
                try:
                    results[index] = doc.apply(submissions[index][1])
                except (InvalidChange, ResyncRequired) as exc:
                    results[index] = exc
            doc.flush()
            if notify:
                for index in indices:
                    if isinstance(results[index], CodeChangeResult) and results[index].changed:
                        _notify_code_update(results[index])
    return results


def code_change_apply(*, session_id, change: CodeChange, notify: bool = True) -> CodeChangeResult:
    """Apply one change (see code_changes_apply); raises what rejected it."""
    (result,) = code_changes_apply(submissions=[(session_id, change)], notify=notify)
    if isinstance(result, Exception):
        raise result
    return result


def _notify_code_update(result: CodeChangeResult) -> None:
    message = events.code_update_message(
        user_id=result.user_id, code=result.code, changes=result.changes, version=result.version
    )
    transaction.on_commit(
        lambda: events.publish(result.session_id, events.group_event(message, version=result.version))
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
    )
    message = events.language_changed_message(user_id=user_id, language=language)
    sid = session.id
    transaction.on_commit(lambda: events.publish(sid, events.group_event(message, exclude=exclude)))
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
    """Change a session's language and/or title; a new language is announced after commit
    to every connection but `exclude_channel` (the one that asked)."""
    with transaction.atomic():
        session = _lock(session_id)
        if language is not None:
            language_change_locked(session, language, user_id, exclude_channel)
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
        doc = _Document(session, [])
        result = doc.apply(CodeChange(code=code, user_id=user_id))
        doc.flush(record_edits=False)
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

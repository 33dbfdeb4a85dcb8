"""Writes to sessions; `code_change_apply` is the one path by which a document changes."""

import contextlib
import contextvars
import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from interview.errors import SessionNotFound
from sessions import document, events, store
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
    return document.line_breaks(code)


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
    # The version of the document the sending connection started from (its welcome).
    # An earlier identical request of the same user and seq is this one resent only if
    # it is at most this version: a connection that was sent the earlier one as a
    # broadcast (another tab of the user) is asking for a change of its own.
    connection_version: int | None = None

    @functools.cached_property
    def digest(self) -> str:
        """What identifies a request beyond (user_id, seq): its base version and changes as sent
        (what of them the server reads: from, to, insert)."""
        try:
            if self.changes is None:
                body = [None, self.code]
            else:
                body = [self.base_version, [[c.get(k) for k in ("from", "to", "insert")] for c in self.changes]]
            text = json.dumps(body, separators=(",", ":"))
        except (TypeError, ValueError, AttributeError):
            # Not a request the document would accept anyway; it matches nothing.
            return uuid.uuid4().hex
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


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
    session = InterviewSession.objects.create(
        language=language,
        title=title,
        code=STARTER_CODE[Language(language)],
        created_at=now,
        code_modified_at=now,
        expires_at=now + timedelta(hours=hours),
        owner_token_hash=token_hash(token),
    )
    session.owner_token = token
    return session


def session_owner_check(*, session: InterviewSession, token: str) -> bool:
    """Whether `token` is the session's owner token (constant-time comparison)."""
    return bool(session.owner_token_hash) and hmac.compare_digest(session.owner_token_hash, token_hash(token))


def session_lock(session_id) -> InterviewSession:
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


def _cached_bytes(changes: list) -> int:
    """Roughly the memory a cached change list holds: a small dict per change and its text."""
    return 64 + sum(232 + (len(c["insert"]) if c["insert"].isascii() else 4 * len(c["insert"])) for c in changes)


class _RecentOperations:
    """The latest committed change lists per session, so that rebasing a change over what
    was accepted since its base version needs no query in the common case.

    An entry states a fact that never changes (version v of session s was these changes),
    so the cache can miss but never be wrong, even with several processes writing; it is
    filled only after commit.
    """

    def __init__(self, sessions: int = 2000, versions: int = 256, max_bytes: int | None = None):
        self.max_sessions = sessions
        self.max_versions = versions
        self.max_bytes = max_bytes  # None: settings.OPERATION_CACHE_MAX_BYTES
        self.entries: OrderedDict[uuid.UUID, dict[int, list]] = OrderedDict()
        self.sizes: dict[uuid.UUID, int] = {}  # estimated bytes of each session's entry
        self.total = 0
        # session -> user -> seq -> request digest -> version
        self.seqs: dict[uuid.UUID, dict[str, dict[int, dict[str, int]]]] = {}
        self.edits: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    def add(self, session_id: uuid.UUID, operations: list[tuple]) -> None:
        """Committed operations as `(version, user_id, seq, changes, at, digest)`.

        At most `max_versions` per session, `max_sessions` sessions and `max_bytes` in all:
        the least recently changed sessions go first, then this one's oldest versions."""
        max_bytes = self.max_bytes if self.max_bytes is not None else settings.OPERATION_CACHE_MAX_BYTES
        with self.lock:
            entry = self.entries.pop(session_id, None) or {}
            seqs = self.seqs.setdefault(session_id, {})
            added = 0
            for version, user_id, seq, changes, _at, digest in operations:
                if version in entry:
                    added -= _cached_bytes(entry[version])
                entry[version] = changes
                added += _cached_bytes(changes)
                if seq is not None and user_id is not None:
                    seqs.setdefault(user_id, {}).setdefault(seq, {})[digest] = version
            self.entries[session_id] = entry
            self.sizes[session_id] = self.sizes.get(session_id, 0) + added
            self.total += added
            if len(entry) > self.max_versions:
                self._drop_below(session_id, sorted(entry)[len(entry) - self.max_versions])
            while len(self.entries) > self.max_sessions or (self.total > max_bytes and len(self.entries) > 1):
                old, _ = self.entries.popitem(last=False)
                self.seqs.pop(old, None)
                self.total -= self.sizes.pop(old, 0)
            if self.total > max_bytes:
                # This session alone is over the budget: keep its newest versions that fit.
                room, oldest_kept = max_bytes, max(entry) + 1
                for version in sorted(entry, reverse=True):
                    room -= _cached_bytes(entry[version])
                    if room < 0:
                        break
                    oldest_kept = version
                self._drop_below(session_id, oldest_kept)

    def _drop_below(self, session_id: uuid.UUID, oldest_kept: int) -> None:
        entry = self.entries[session_id]
        for version in [v for v in entry if v < oldest_kept]:
            freed = _cached_bytes(entry.pop(version))
            self.sizes[session_id] -= freed
            self.total -= freed
        for user_seqs in self.seqs.get(session_id, {}).values():
            for seq, requests in list(user_seqs.items()):
                for digest in [d for d, v in requests.items() if v < oldest_kept]:
                    del requests[digest]
                if not requests:
                    del user_seqs[seq]

    def since(self, session_id: uuid.UUID, base: int, current: int) -> list | None:
        """The change lists of versions base+1..current, or None if any is missing."""
        with self.lock:
            entry = self.entries.get(session_id)
            if entry is None:
                return None
            try:
                return [entry[v] for v in range(base + 1, current + 1)]
            except KeyError:
                return None

    def applied_seqs(self, session_id: uuid.UUID, requests: set, version: int) -> dict:
        """Which `(user_id, seq, digest)` requests the log holds already, with their version,
        asking the database only when the cache cannot tell. Seqs rise per connection: a seq
        above the user's highest cached one is new when the cache holds every version from
        that one up to `version` (the common case: one query-free lookup per keystroke)."""
        if not requests:
            return {}
        found, unsure = {}, set()
        with self.lock:
            entry = self.entries.get(session_id, {})
            seqs = self.seqs.get(session_id, {})
            for user_id, seq, digest in requests:
                known = seqs.get(user_id, {})
                if digest in known.get(seq, ()):
                    found[(user_id, seq, digest)] = known[seq][digest]
                    continue
                if known and seq > max(known):
                    since = max(known[max(known)].values())
                    if all(v in entry for v in range(since, version + 1)):
                        continue
                # Two connections of one user (or an older request the cache let go).
                unsure.add((user_id, seq, digest))
        if unsure:
            stored = store.applied_seqs(session_id, {(user_id, seq) for user_id, seq, _ in unsure})
            found.update({request: stored[request] for request in unsure if request in stored})
        return found

    def last_edit(self, session_id: uuid.UUID, user_id):
        with self.lock:
            return self.edits.get((session_id, user_id))

    def set_last_edit(self, session_id: uuid.UUID, user_id, known: tuple) -> None:
        with self.lock:
            self.edits[(session_id, user_id)] = known
            while len(self.edits) > self.max_sessions * 8:
                self.edits.pop(next(iter(self.edits)))

    def forget(self, session_id: uuid.UUID) -> None:
        with self.lock:
            self.entries.pop(session_id, None)
            self.total -= self.sizes.pop(session_id, 0)
            self.seqs.pop(session_id, None)
            for key in [k for k in self.edits if k[0] == session_id]:
                del self.edits[key]


_recent_operations = _RecentOperations()


def session_cache_forget(*, session_id: uuid.UUID) -> None:
    """Drop this process's cached operations, seqs and edit bursts of a session whose
    history was replaced wholesale (an import over an existing id)."""
    _recent_operations.forget(session_id)


class Deferred(Exception):
    """A change left for a later round: this round's rebase work is spent. Nothing was changed."""


class _WorkBudget:
    __slots__ = ("limit", "spent")

    def __init__(self, limit: int):
        self.limit = limit
        self.spent = 0


_work_budget: contextvars.ContextVar[_WorkBudget | None] = contextvars.ContextVar("rebase_work", default=None)


@contextlib.contextmanager
def rebase_work_budget(limit: int):
    """Within this block, once `limit` units of rebase work are spent, further deltas of
    the batch raise Deferred instead of being applied (the first always runs), so one
    expensive change commits in a round of its own rather than holding up the rest."""
    token = _work_budget.set(_WorkBudget(limit))
    try:
        yield
    finally:
        _work_budget.reset(token)


def _rebase_work(changes: int, versions: int, log_changes: int = 0) -> int:
    """The units of rebase work: every change carried over every version, plus every change
    of the log walked once (a unit is one to three microseconds)."""
    return changes * versions + log_changes


class _Document:
    """A locked session's document while a batch of changes is applied to it in memory;
    `flush` writes the text, the operation log and history in a few statements."""

    def __init__(self, session_id: uuid.UUID, code: str, version: int, changes: list[CodeChange]):
        self.session_id = session_id
        self.code = code
        self.version = version
        self.stored_version = version
        self.modified_at = None
        self.new_ops: list[tuple] = []
        self.edits: list[tuple[str | None, object]] = []
        self.applied_seqs = _recent_operations.applied_seqs(
            session_id,
            {(c.user_id, c.seq, c.digest) for c in changes if c.seq is not None and c.user_id is not None},
            version,
        )

    def _log_since(self, base: int) -> list:
        """The change lists accepted after `base`, from the cache, the database and this batch."""
        stored = []
        if base < self.stored_version:
            stored = _recent_operations.since(self.session_id, base, self.stored_version)
            if stored is None:
                stored = []
                size = 0
                rows = (
                    DocumentOperation.objects.filter(session_id=self.session_id, version__gt=base)
                    .order_by("version")
                    .values_list("changes", flat=True)
                )
                for changes in rows.iterator(chunk_size=100):
                    stored.append(changes)
                    size += len(changes)
                    if size > settings.OT_MAX_REBASE_WORK:
                        # No need to decode the rest of a log too large to rebase over.
                        raise ResyncRequired(self.code, self.version)
                if len(stored) != self.stored_version - base:
                    # Older operations were purged: nothing to rebase over.
                    raise ResyncRequired(self.code, self.version)
        return stored + [op[3] for op in self.new_ops if op[0] > base]

    def _rebase(self, change: CodeChange) -> list:
        budget = _work_budget.get()
        if budget is not None and getattr(self, "deferring", False):
            # A change to this document was left for the next round: so are the later ones.
            raise Deferred()
        if change.changes is None:
            return document.diff(self.code, normalize_newlines(change.code or ""))
        # As the editors will hold it: CodeMirror turns each insert's CR LF and CR into LF.
        ours = document.line_breaks_in_inserts(change.changes)
        base = change.base_version if change.base_version is not None else self.version
        if base > self.version or base < 0:
            raise InvalidChange(f"Unknown base version {base}; the document is at {self.version}.")
        behind = self.version - base
        if behind > settings.OT_MAX_REBASE_VERSIONS:
            raise ResyncRequired(self.code, self.version)
        # The work one message may cause is bounded before any of it is done: a long
        # change list far behind must resync (its sender then rebases it, not the server).
        work = _rebase_work(len(change.changes), behind)
        if work > settings.OT_MAX_REBASE_WORK:
            raise ResyncRequired(self.code, self.version)
        if budget is not None:
            if budget.spent and budget.spent + work > budget.limit:
                self.deferring = True
                raise Deferred()
            budget.spent += max(work, 1)
        length = document.utf16_len(self.code)
        if base == self.version:
            return document.normalize(ours, length)
        log = self._log_since(base)
        log_changes = sum(len(op) for op in log)
        if _rebase_work(len(change.changes), behind, log_changes) > settings.OT_MAX_REBASE_WORK:
            raise ResyncRequired(self.code, self.version)
        if budget is not None:
            budget.spent += log_changes
        # Validate against the document the client saw: its length is the current one
        # less what each change accepted since added.
        base_length = length - sum(_length_delta(op) for op in log)
        ours = document.normalize(ours, base_length)
        return document.transform_over_log(ours, log, length=base_length)

    def apply(self, change: CodeChange) -> CodeChangeResult:
        """Apply one change in memory; a rejected change leaves the document as it was.

        A delta always takes a version, even one that rebases to nothing (its text was
        deleted meanwhile), so every accepted delta is acknowledged with its own version
        and every client counts the same versions. An unchanged full text takes none.
        """
        key = None
        if change.seq is not None and change.user_id is not None:
            # (user_id, seq) alone is a claim anyone can make, and two tabs of one user both
            # count from 1: only the same request is a resend, and never one this
            # connection was sent as another's change (see CodeChange.connection_version).
            key = (change.user_id, change.seq, change.digest)
            earlier = self.applied_seqs.get(key)
            if earlier is not None and (change.connection_version is None or earlier <= change.connection_version):
                return CodeChangeResult(self.session_id, earlier, self.code, [], change.user_id, True)
        try:
            changes = self._rebase(change)
            new_code = document.apply(self.code, changes) if changes else self.code
        except document.ChangeError as exc:
            raise InvalidChange(str(exc)) from exc
        if any("\x00" in c["insert"] for c in changes):
            # PostgreSQL cannot store it, and the REST API refuses it too.
            raise InvalidChange("The code may not contain NUL characters.")
        if not changes and change.changes is None:
            return CodeChangeResult(self.session_id, self.version, self.code, [], change.user_id)
        _check_size(new_code)
        now = timezone.now()
        self.code = new_code
        self.version += 1
        if changes:
            self.modified_at = now
        self.new_ops.append((self.version, change.user_id, change.seq, changes, now, key[2] if key else ""))
        if key is not None:
            self.applied_seqs[key] = self.version
        self.edits.append((change.user_id, now))
        return CodeChangeResult(self.session_id, self.version, new_code, changes, change.user_id, new_version=True)

    def flush(self, *, record_edits: bool = True) -> None:
        if not self.new_ops:
            return
        store.save_document(
            self.session_id, code=self.code, version=self.version, modified_at=self.modified_at, operations=self.new_ops
        )
        operations, session_id = self.new_ops, self.session_id
        transaction.on_commit(lambda: _recent_operations.add(session_id, operations))
        if record_edits:
            _record_edits(session_id, self.edits)
        self.stored_version = self.version
        self.new_ops = []
        self.edits = []


def _edit_description(count: int) -> str:
    return f"Edited the code ({count} change{'s' if count != 1 else ''})"


def _record_edits(session_id: uuid.UUID, edits: list) -> None:
    """One `edit` entry per user per burst of typing, counting the changes it holds."""
    window = timedelta(seconds=settings.HISTORY_COALESCE_SECONDS)
    bursts: dict[str | None, list] = {}  # user -> [entry id or None, timestamp, count, added]
    for user_id, when in edits:
        burst = bursts.get(user_id)
        if burst is None:
            known = _recent_operations.last_edit(session_id, user_id)
            if known is None:
                entry = (
                    HistoryEntry.objects.filter(session_id=session_id, user_id=user_id, change_type=ChangeType.EDIT)
                    .order_by("-id")
                    .values_list("id", "timestamp", "count")
                    .first()
                )
                known = entry if entry is not None else (None, None, 0)
            burst = bursts[user_id] = [*known, 0]
        if burst[0] is not None and when - burst[1] <= window:
            burst[1], burst[2], burst[3] = when, burst[2] + 1, burst[3] + 1
            continue
        if burst[3]:
            _write_burst(session_id, user_id, burst)
        burst[:] = [None, when, 1, 1]
    for user_id, burst in bursts.items():
        if burst[3]:
            _write_burst(session_id, user_id, burst)


def _write_burst(session_id: uuid.UUID, user_id: str | None, burst: list) -> None:
    entry_id, when, count, added = burst
    if entry_id is not None and not store.edit_entry_extend(
        entry_id, session_id=session_id, added=added, timestamp=when, description=_edit_description(count)
    ):
        # Another kind of entry came after the burst's entry: these changes start a new one.
        entry_id, count = None, added
        burst[0], burst[2] = None, count
    if entry_id is None:
        entry_id = HistoryEntry.objects.create(
            session_id=session_id,
            timestamp=when,
            user_id=user_id,
            change_type=ChangeType.EDIT,
            count=count,
            description=_edit_description(count),
        ).id
        burst[0] = entry_id
    burst[3] = 0
    known = (entry_id, when, count)
    transaction.on_commit(lambda: _recent_operations.set_last_edit(session_id, user_id, known))


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
            row = store.lock_document(session_id, timezone.now())
            if row is None:
                for index in indices:
                    results[index] = SessionNotFound()
                continue
            doc = _Document(session_id, row[0], row[1], [submissions[i][1] for i in indices])
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
        doc = _Document(session.id, session.code, session.version, [])
        result = doc.apply(CodeChange(code=code, user_id=user_id))
        doc.flush(record_edits=False)
        session.code, session.version = doc.code, doc.version
        if result.changed:
            _notify_code_update(result)
        now = timezone.now()
        snapshot = CodeSnapshot.objects.create(
            session=session, code=session.code, language=session.language, version=session.version, created_at=now
        )
        snapshots_trim(session_id=session.id)
        HistoryEntry.objects.create(
            session=session,
            timestamp=now,
            user_id=user_id,
            change_type=ChangeType.SNAPSHOT,
            description=f"Saved a snapshot ({len(session.code)} characters)",
            code_snapshot=session.code,
        )
        history_codes_trim(session_id=session.id)
    return snapshot


def snapshots_trim(*, session_id: uuid.UUID) -> int:
    """Delete a session's snapshots older than its newest SESSION_MAX_SNAPSHOTS (at least the
    one just saved stays); returns how many went. Call it in the transaction that saved one.

    The index on (session, created_at, id) finds them without reading any code, and past the
    bound a save deletes one row: the work stays the same however long the session runs."""
    keep = max(1, settings.SESSION_MAX_SNAPSHOTS)
    old = list(
        CodeSnapshot.objects.filter(session_id=session_id)
        .order_by("-created_at", "-id")
        .values_list("id", flat=True)[keep:]
    )
    if not old:
        return 0
    deleted, _ = CodeSnapshot.objects.filter(id__in=old).delete()
    return deleted


def history_codes_trim(*, session_id: uuid.UUID) -> int:
    """Clear the code of a session's history entries older than its newest
    SESSION_MAX_HISTORY_CODES that carry code (snapshots and runs); the entries themselves
    stay, so the timeline is complete. Returns how many lost their code. Call it in the
    transaction that recorded one.

    The partial index `history_session_codes` holds only entries with code, at most the
    bound plus one a session, so this reads neither code nor the rest of the history."""
    old = list(
        HistoryEntry.objects.filter(session_id=session_id, code_snapshot__isnull=False)
        .order_by("-id")
        .values_list("id", flat=True)[max(0, settings.SESSION_MAX_HISTORY_CODES) :]
    )
    if not old:
        return 0
    return HistoryEntry.objects.filter(id__in=old).update(code_snapshot=None)


def session_delete(*, session_id) -> None:
    """Delete a session and everything it holds; connected clients are told and closed."""
    with transaction.atomic():
        session = session_lock(session_id)
        sid = session.id
        session.delete()
        transaction.on_commit(lambda: events.publish(sid, events.ended_event("deleted")))

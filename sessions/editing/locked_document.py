"""A locked session's document while a batch of changes is rebased and applied to it in
memory, then written (text, operation log, history) in a few statements."""

import uuid

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from sessions import document, store
from sessions.editing.changes import CodeChange, CodeChangeResult
from sessions.editing.edit_history import edits_record
from sessions.editing.operation_cache import operation_cache
from sessions.editing.work_budget import current_budget, rebase_work
from sessions.exceptions import Deferred, InvalidChange, ResyncRequired


def _check_size(code: str) -> None:
    limit = settings.MAX_CODE_BYTES
    # Every character is at most 4 bytes: most documents need no encoding to check.
    if len(code) * 4 > limit and len(code.encode("utf-8", "surrogatepass")) > limit:
        raise InvalidChange(f"The code would exceed the limit of {limit} bytes.")


def _length_delta(changes: list) -> int:
    return sum(document.utf16_len(c["insert"]) - (c["to"] - c["from"]) for c in changes)


class LockedDocument:
    """A locked session's document while a batch of changes is applied to it in memory;
    `flush` writes the text, the operation log and history in a few statements."""

    def __init__(
        self, session_id: uuid.UUID, code: str, version: int, changes: list[CodeChange], db: store.HotPath | None = None
    ):
        self.session_id = session_id
        self.db = db if db is not None else store.HotPath()
        self.code = code
        self.version = version
        self.stored_version = version
        self.modified_at = None
        self.new_ops: list[tuple] = []
        # (version, code, at) to keep: the text every DOCUMENT_CHECKPOINT_INTERVAL versions,
        # and a session's first version, so a replay can rebuild any version.
        self.checkpoints: list[tuple] = []
        self.edits: list[tuple[str | None, object]] = []
        # Set once a change of this batch was deferred: the later ones wait for the next round too.
        self.deferring = False
        self._catch_up()
        self.applied_seqs = operation_cache.applied_seqs(
            session_id,
            {(c.user_id, c.seq, c.digest) for c in changes if c.seq is not None and c.user_id is not None},
            version,
        )

    def _catch_up(self) -> None:
        """Versions another process added since this one's cache last saw the session: read
        them once (at most the cache's length of them), with their seqs, so this batch's
        resend checks and rebases find them in the cache instead of asking the database each."""
        latest = operation_cache.latest(self.session_id)
        if latest is None or latest >= self.stored_version:
            return  # nothing cached to extend (a first change here reads what it needs) or up to date
        base = max(latest, self.stored_version - operation_cache.max_versions)
        operations = store.operations_since(
            self.session_id, base, self.stored_version, max_changes=settings.OT_MAX_REBASE_WORK
        )
        if operations:
            operation_cache.add(self.session_id, operations)

    def _log_since(self, base: int) -> list:
        """The change lists accepted after `base`, from the cache, the database and this batch."""
        stored = []
        if base < self.stored_version:
            stored = operation_cache.since(self.session_id, base, self.stored_version)
            if stored is None:
                # Versions this process did not make (another process did) or no longer
                # caches: read them, and keep them, with their seqs (facts once committed).
                operations = store.operations_since(
                    self.session_id, base, self.stored_version, max_changes=settings.OT_MAX_REBASE_WORK
                )
                if operations is None or len(operations) != self.stored_version - base:
                    # Too much to rebase over, or older operations were purged.
                    raise ResyncRequired(self.code, self.version)
                operation_cache.add(self.session_id, operations)
                stored = [operation[3] for operation in operations]
        return stored + [op[3] for op in self.new_ops if op[0] > base]

    def _rebase(self, change: CodeChange) -> list:
        budget = current_budget.get()
        if budget is not None and self.deferring:
            # A change to this document was left for the next round: so are the later ones.
            raise Deferred()
        if change.changes is None:
            return document.diff(self.code, document.line_breaks(change.code or ""))
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
        work = rebase_work(len(change.changes), behind)
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
        if rebase_work(len(change.changes), behind, log_changes) > settings.OT_MAX_REBASE_WORK:
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
        if self.version == 0 and not self.new_ops:
            # The starter text (version 0) is known only until the first change replaces it.
            self.checkpoints.append((0, self.code, now))
        self.code = new_code
        self.version += 1
        if self.version % settings.DOCUMENT_CHECKPOINT_INTERVAL == 0:
            self.checkpoints.append((self.version, new_code, now))
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
        self.db.save_document(
            self.session_id,
            code=self.code,
            version=self.version,
            modified_at=self.modified_at,
            operations=self.new_ops,
            checkpoints=self.checkpoints,
        )
        operations, session_id = self.new_ops, self.session_id
        transaction.on_commit(lambda: operation_cache.add(session_id, operations))
        if record_edits:
            edits_record(self.db, session_id, self.edits)
        self.stored_version = self.version
        self.new_ops = []
        self.checkpoints = []
        self.edits = []

"""This process's cache of the latest committed operations, request seqs and edit bursts per session."""

import threading
import uuid
from collections import OrderedDict, deque

from django.conf import settings

from sessions import store


def _cached_bytes(changes: list) -> int:
    """Roughly the memory a cached change list holds: a small dict per change and its text."""
    return 64 + sum(232 + (len(c["insert"]) if c["insert"].isascii() else 4 * len(c["insert"])) for c in changes)


class OperationCache:
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
        # session -> (version, user_id, seq, digest) of its cached seqs, oldest first
        self.seq_order: dict[uuid.UUID, deque] = {}
        self.edits: dict[tuple, tuple] = {}
        self.lock = threading.Lock()

    def add(self, session_id: uuid.UUID, operations: list[tuple]) -> None:
        """Committed operations as `(version, user_id, seq, changes, at, digest)`.

        At most `max_versions` per session, `max_sessions` sessions and `max_bytes` in all:
        the least recently changed sessions go first, then this one's oldest versions.
        A session's versions are kept in rising order (they are committed so; one added out
        of order re-sorts them), so dropping the oldest costs what is dropped, not what is kept."""
        max_bytes = self.max_bytes if self.max_bytes is not None else settings.OPERATION_CACHE_MAX_BYTES
        with self.lock:
            entry = self.entries.get(session_id)
            if entry is None:
                entry = self.entries[session_id] = {}
                self.seq_order[session_id] = deque()
            else:
                self.entries.move_to_end(session_id)
            seqs = self.seqs.setdefault(session_id, {})
            order = self.seq_order[session_id]
            added = 0
            for version, user_id, seq, changes, _at, digest in operations:
                if version in entry:
                    added -= _cached_bytes(entry[version])
                elif entry and version < next(reversed(entry)):
                    entry[version] = changes
                    self.entries[session_id] = entry = dict(sorted(entry.items()))
                entry[version] = changes
                added += _cached_bytes(changes)
                if seq is not None and user_id is not None:
                    seqs.setdefault(user_id, {}).setdefault(seq, {})[digest] = version
                    if order and version < order[-1][0]:
                        order.append((version, user_id, seq, digest))
                        self.seq_order[session_id] = order = deque(sorted(order))
                    else:
                        order.append((version, user_id, seq, digest))
            self.sizes[session_id] = self.sizes.get(session_id, 0) + added
            self.total += added
            if len(entry) > self.max_versions:
                self._drop_oldest(session_id, len(entry) - self.max_versions)
            while len(self.entries) > self.max_sessions or (self.total > max_bytes and len(self.entries) > 1):
                old, _ = self.entries.popitem(last=False)
                self.seqs.pop(old, None)
                self.seq_order.pop(old, None)
                self.total -= self.sizes.pop(old, 0)
            if self.total > max_bytes:
                # This session alone is over the budget: keep its newest versions that fit.
                room, keep = max_bytes, 0
                for version in reversed(entry):
                    room -= _cached_bytes(entry[version])
                    if room < 0:
                        break
                    keep += 1
                self._drop_oldest(session_id, len(entry) - keep)

    def _drop_oldest(self, session_id: uuid.UUID, count: int) -> None:
        """Drop a session's `count` oldest versions and the seqs they made."""
        entry = self.entries[session_id]
        for _ in range(count):
            version = next(iter(entry))
            freed = _cached_bytes(entry.pop(version))
            self.sizes[session_id] -= freed
            self.total -= freed
        oldest_kept = next(iter(entry)) if entry else None
        order, seqs = self.seq_order[session_id], self.seqs.get(session_id, {})
        while order and (oldest_kept is None or order[0][0] < oldest_kept):
            version, user_id, seq, digest = order.popleft()
            requests = seqs.get(user_id, {}).get(seq)
            # A later version of the same request (made again) keeps it.
            if requests is not None and requests.get(digest) == version:
                del requests[digest]
                if not requests:
                    del seqs[user_id][seq]

    def latest(self, session_id: uuid.UUID) -> int | None:
        """The newest version cached for a session, None if none is."""
        with self.lock:
            entry = self.entries.get(session_id)
            return next(reversed(entry)) if entry else None

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
            self.seq_order.pop(session_id, None)
            for key in [k for k in self.edits if k[0] == session_id]:
                del self.edits[key]


# The process's one cache; every LockedDocument reads it and fills it after commit.
operation_cache = OperationCache()

"""Edits in history: one `edit` entry per user per burst of typing, counting its changes."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction

from sessions import store
from sessions.editing.operation_cache import operation_cache
from sessions.models import ChangeType, HistoryEntry


def _edit_description(count: int) -> str:
    return f"Edited the code ({count} change{'s' if count != 1 else ''})"


def edits_record(db: store.HotPath, session_id: uuid.UUID, edits: list) -> None:
    """One `edit` entry per user per burst of typing, counting the changes it holds. A user's
    last burst here, when it extends a known entry, is written at the round's `db.flush`."""
    window = timedelta(seconds=settings.HISTORY_COALESCE_SECONDS)
    bursts: dict[str | None, list] = {}  # user -> [entry id or None, timestamp, count, added]
    for user_id, when in edits:
        burst = bursts.get(user_id)
        if burst is None:
            known = operation_cache.last_edit(session_id, user_id)
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
            _burst_write(db, session_id, user_id, burst)
        burst[:] = [None, when, 1, 1]
    for user_id, burst in bursts.items():
        if burst[3]:
            _burst_write(db, session_id, user_id, burst, last=True)


def _burst_write(
    db: store.HotPath, session_id: uuid.UUID, user_id: str | None, burst: list, last: bool = False
) -> None:
    entry_id, when, count, added = burst
    burst[3] = 0
    if entry_id is not None:
        if last and db.deferred:
            # Nothing later of this user in this round depends on the outcome: leave it to the
            # round's flush, which extends every session's entries in one statement.
            db.edit_entry_extend(
                entry_id,
                session_id=session_id,
                added=added,
                timestamp=when,
                description=_edit_description(count),
                applied=lambda: _remember(session_id, user_id, (entry_id, when, count)),
                refused=lambda: _burst_create(session_id, user_id, when, added),
            )
            return
        extended = db.edit_entry_extend(
            entry_id, session_id=session_id, added=added, timestamp=when, description=_edit_description(count)
        )
        if extended:
            _remember(session_id, user_id, (entry_id, when, count))
            return
        # Another kind of entry came after the burst's entry: these changes start a new one.
        burst[2] = added
    burst[0] = _burst_create(session_id, user_id, when, burst[2])


def _burst_create(session_id: uuid.UUID, user_id: str | None, when, count: int) -> int:
    entry_id = HistoryEntry.objects.create(
        session_id=session_id,
        timestamp=when,
        user_id=user_id,
        change_type=ChangeType.EDIT,
        count=count,
        description=_edit_description(count),
    ).id
    _remember(session_id, user_id, (entry_id, when, count))
    return entry_id


def _remember(session_id: uuid.UUID, user_id: str | None, known: tuple) -> None:
    transaction.on_commit(lambda: operation_cache.set_last_edit(session_id, user_id, known))

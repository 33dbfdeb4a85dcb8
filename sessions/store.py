"""The hot path of document changes in plain SQL: a few statements per session per batch.

Everything else goes through the ORM; here the ORM's per-query cost (building and
compiling a query, making model instances) was most of the time of each keystroke.
"""

import uuid
from datetime import datetime

from django.db import connection

from sessions.models import ChangeType, DocumentOperation, HistoryEntry, InterviewSession


def _table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def _pk(session_id: uuid.UUID):
    return InterviewSession._meta.pk.get_db_prep_value(session_id, connection)


def _when(value: datetime):
    return connection.ops.adapt_datetimefield_value(value)


def lock_document(session_id: uuid.UUID, now: datetime) -> tuple[str, int] | None:
    """The live session's (code, version), locked until the transaction ends, or None."""
    lock = " FOR UPDATE" if connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT code, version FROM {_table(InterviewSession)} WHERE id = %s AND expires_at > %s{lock}",
            [_pk(session_id), _when(now)],
        )
        return cursor.fetchone()


def applied_seqs(session_id: uuid.UUID, pairs: set[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """Which of these (user_id, seq) pairs are already in the operation log, with their version."""
    found = {}
    users = sorted({user for user, _ in pairs})
    seqs = sorted({seq for _, seq in pairs})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id, seq, version FROM {_table(DocumentOperation)} WHERE session_id = %s"
            f" AND user_id IN ({', '.join(['%s'] * len(users))}) AND seq IN ({', '.join(['%s'] * len(seqs))})",
            [_pk(session_id), *users, *seqs],
        )
        for user_id, seq, version in cursor.fetchall():
            if (user_id, seq) in pairs:
                found[(user_id, seq)] = version
    return found


def save_document(
    session_id: uuid.UUID, *, code: str, version: int, modified_at: datetime | None, operations: list
) -> None:
    """Store the new text and version and append the operations `(version, user_id, seq, changes, at)`."""
    changes_field = DocumentOperation._meta.get_field("changes")
    pk = _pk(session_id)
    with connection.cursor() as cursor:
        if modified_at is None:
            cursor.execute(
                f"UPDATE {_table(InterviewSession)} SET code = %s, version = %s WHERE id = %s", [code, version, pk]
            )
        else:
            cursor.execute(
                f"UPDATE {_table(InterviewSession)} SET code = %s, version = %s, code_modified_at = %s WHERE id = %s",
                [code, version, _when(modified_at), pk],
            )
        cursor.executemany(
            f"INSERT INTO {_table(DocumentOperation)} (session_id, version, user_id, seq, changes, created_at)"
            " VALUES (%s, %s, %s, %s, %s, %s)",
            [
                (pk, v, user_id, seq, changes_field.get_db_prep_value(changes, connection), _when(at))
                for v, user_id, seq, changes, at in operations
            ],
        )


def edit_entry_extend(
    entry_id: int, *, session_id: uuid.UUID, added: int, timestamp: datetime, description: str
) -> bool:
    """Count more changes into an `edit` history entry and move its timestamp to the latest,
    unless an entry of another kind (snapshot, run, language or title change) was recorded
    in the session after it: that ends the burst. Whether the entry was extended."""
    table = _table(HistoryEntry)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET count = count + %s, timestamp = %s, description = %s WHERE id = %s"
            f" AND NOT EXISTS (SELECT 1 FROM {table} later WHERE later.session_id = %s AND later.id > %s"
            " AND later.change_type <> %s)",
            [added, _when(timestamp), description, entry_id, _pk(session_id), entry_id, ChangeType.EDIT.value],
        )
        return cursor.rowcount == 1

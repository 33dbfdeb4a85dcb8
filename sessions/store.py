"""The hot path of document changes in plain SQL: a few statements per session per batch.

Everything else goes through the ORM; here the ORM's per-query cost (building and
compiling a query, making model instances) was most of the time of each keystroke, and
after it Django's cursor wrapper (a placeholder rewrite and an error wrapper per
statement, a thread-local lookup per `connection` attribute). So a batch takes one
`HotPath`, which on SQLite runs its statements on the driver's own cursor with SQL built
once in the driver's placeholder style and parameters adapted as Django stores them.
"""

import datetime
import json
import logging
import uuid

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

from sessions import document
from sessions.models import (
    ChangeType,
    CodeSnapshot,
    DocumentCheckpoint,
    DocumentOperation,
    HistoryEntry,
    InterviewSession,
)

logger = logging.getLogger(__name__)

UTC = datetime.UTC

# What an operation's row costs beyond its changes' JSON: the other columns, the index entries.
OPERATION_ROW_BYTES = 64


def table_name(model, db=connection) -> str:
    """A model's table name, quoted for plain SQL."""
    return db.ops.quote_name(model._meta.db_table)


def session_pk(session_id: uuid.UUID, db=connection):
    """A session id as the database stores it."""
    return InterviewSession._meta.pk.get_db_prep_value(session_id, db)


def db_datetime(value: datetime.datetime, db=connection):
    """A datetime as the database stores it."""
    return db.ops.adapt_datetimefield_value(value)


def _statements(db) -> dict[str, str]:
    """The hot path's SQL for one database, with `%s` placeholders."""
    session, ops, history, checkpoints = (
        table_name(InterviewSession, db),
        table_name(DocumentOperation, db),
        table_name(HistoryEntry, db),
        table_name(DocumentCheckpoint, db),
    )
    lock = " FOR UPDATE" if db.features.has_select_for_update else ""
    # Databases that return columns from INSERT (SQLite 3.35+, PostgreSQL) do from UPDATE too.
    returning = " RETURNING log_bytes" if db.features.can_return_columns_from_insert else ""
    save = f"UPDATE {session} SET code = %s, version = %s, log_bytes = log_bytes + %s"
    return {
        "lock_many": f"SELECT id, code, version FROM {session} WHERE id IN ({{marks}}) AND expires_at > %s"
        f" ORDER BY id{lock}",
        "save": f"{save} WHERE id = %s{returning}",
        "save_modified": f"{save}, code_modified_at = %s WHERE id = %s{returning}",
        "log_bytes": "" if returning else f"SELECT log_bytes FROM {session} WHERE id = %s",
        "append": f"INSERT INTO {ops} (session_id, version, user_id, seq, digest, changes, created_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        # A version's text is a fact: a checkpoint written twice (an import's, a retried batch's) is the same.
        "checkpoint": f"INSERT INTO {checkpoints} (session_id, version, code, created_at) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (session_id, version) DO NOTHING",
        # Count more changes into an edit entry unless an entry of another kind came after it.
        "extend": f"UPDATE {history} SET count = count + %s, timestamp = %s, description = %s WHERE id = %s"
        f" AND NOT EXISTS (SELECT 1 FROM {history} later WHERE later.session_id = %s AND later.id > %s"
        " AND later.change_type <> %s)",
        **_many_statements(db, session, history),
    }


def _many_statements(db, session: str, history: str) -> dict[str, str]:
    """On PostgreSQL, the document save and the edit entries' extension for many rows in one
    statement (UPDATE ... FROM VALUES, RETURNING): there each statement is a round trip to
    the server. SQLite runs in the process: its statements, prepared once and cached, cost
    about what one statement does whose text (and plan) changes with its row count, so it
    keeps them (measured: no gain in CPU per delivery, a worse p99)."""
    if db.vendor != "postgresql":
        return {"save_many": "", "save_many_row": "", "extend_many": "", "extend_many_row": ""}
    # Client-side binding sends untyped literals: the VALUES columns need their types.
    save_row = "(%s::uuid, %s::text, %s::bigint, %s::bigint, %s::timestamptz)"
    extend_row = "(%s::bigint, %s::bigint, %s::timestamptz, %s::text)"
    # A VALUES list's columns are named column1, column2, ...
    return {
        "save_many": f"UPDATE {session} SET code = v.column2, version = v.column3,"
        f" log_bytes = {session}.log_bytes + v.column4,"
        f" code_modified_at = COALESCE(v.column5, {session}.code_modified_at)"
        f" FROM (VALUES {{rows}}) AS v WHERE {session}.id = v.column1 RETURNING {session}.id, {session}.log_bytes",
        "save_many_row": save_row,
        "extend_many": f"UPDATE {history} SET count = {history}.count + v.column2, timestamp = v.column3,"
        f" description = v.column4 FROM (VALUES {{rows}}) AS v WHERE {history}.id = v.column1"
        f" AND NOT EXISTS (SELECT 1 FROM {history} later WHERE later.session_id = {history}.session_id"
        f" AND later.id > {history}.id AND later.change_type <> %s) RETURNING {history}.id",
        "extend_many_row": extend_row,
    }


_sqlite_statements: dict[str, str] | None = None


# The last datetime formatted and its text, replaced as one tuple (threads share it).
_last_when: tuple = (None, "")


def _sqlite_when(value: datetime.datetime) -> str:
    # As Django's SQLite backend stores an aware datetime: naive UTC, str() of it. A change's
    # time is written two or three times (operation, document, history): format it once.
    global _last_when
    last = _last_when
    if value is last[0]:
        return last[1]
    text = str((value if value.tzinfo is UTC else value.astimezone(UTC)).replace(tzinfo=None))
    _last_when = (value, text)
    return text


class HotPath:
    """The hot path's statements on the default database, inside the caller's transaction.

    On SQLite with its default time zone (UTC), they go to the driver's cursor: `?`
    placeholders, a UUID as its hex, a datetime as naive UTC text, JSON as `json.dumps`,
    exactly what Django would send. Elsewhere, through Django's cursor and adapters.
    """

    def __init__(self, *, deferred: bool = False):
        global _sqlite_statements
        db = connections[DEFAULT_DB_ALIAS]
        self.db = db
        if db.vendor == "sqlite" and db.timezone is UTC:
            if _sqlite_statements is None:
                _sqlite_statements = {k: v.replace("%s", "?") for k, v in _statements(db).items()}
            db.ensure_connection()
            self.sql = _sqlite_statements
            self.mark = "?"
            self.cursor = db.connection.cursor()
            self.pk = _hex
            self.when = _sqlite_when
            self.json = json.dumps
        else:
            self.sql = _statements(db)
            self.mark = "%s"
            self.cursor = db.cursor()
            self.pk = lambda value: session_pk(value, db)
            self.when = lambda value: db_datetime(value, db)
            field = DocumentOperation._meta.get_field("changes")
            self.json = lambda value: field.get_db_prep_value(value, db)
        # Deferred: the writes of every document of a round wait for `flush`, which sends each
        # kind for all of them in one statement; otherwise (and on SQLite, see
        # `_many_statements`) each call writes at once.
        self.deferred = deferred and bool(self.sql["save_many"])
        self._saves: list[tuple] = []  # (session_id, pk, code, version, bytes added, modified_at or None)
        self._ops: list[tuple] = []
        self._checkpoints: list[tuple] = []
        # (entry_id, session key, added, timestamp, description, applied, refused)
        self._extends: list[tuple] = []

    def lock_documents(self, session_ids: list[uuid.UUID], now: datetime.datetime) -> dict[uuid.UUID, tuple[str, int]]:
        """The live sessions' (code, version) by id, locked until the transaction ends, in
        one statement: a writer round's sessions cost one round trip to lock, not one each.
        Rows are locked in id order (every process's rounds alike, so none deadlock)."""
        keys = {self.pk(session_id): session_id for session_id in session_ids}
        marks = ", ".join([self.mark] * len(keys))
        self.cursor.execute(self.sql["lock_many"].format(marks=marks), (*keys, self.when(now)))
        # fetchall: the statement runs to its end, so it holds nothing open.
        return {keys[key]: (code, version) for key, code, version in self.cursor.fetchall()}

    def save_document(
        self,
        session_id: uuid.UUID,
        *,
        code: str,
        version: int,
        modified_at: datetime.datetime | None,
        operations: list,
        checkpoints: list = (),
    ) -> None:
        """Store the new text and version, append the operations
        `(version, user_id, seq, changes, at, digest)` and write the checkpoints
        `(version, code, at)`; a log (operations and checkpoints) that grows past
        SESSION_MAX_LOG_BYTES loses its oldest part (`operations_trim`). At `flush` when
        deferred."""
        pk = self.pk(session_id)
        added = 0
        for v, user_id, seq, changes, at, digest in operations:
            prepared = self.json(changes)
            added += _operation_bytes(prepared, changes)
            self._ops.append((pk, v, user_id, seq, digest, prepared, self.when(at)))
        for v, text, at in checkpoints:
            added += OPERATION_ROW_BYTES + len(text)
            self._checkpoints.append((pk, v, text, self.when(at)))
        self._saves.append((session_id, pk, code, version, added, modified_at))
        if not self.deferred:
            self.flush()

    def edit_entry_extend(
        self,
        entry_id: int,
        *,
        session_id: uuid.UUID,
        added: int,
        timestamp: datetime.datetime,
        description: str,
        applied=None,
        refused=None,
    ) -> bool | None:
        """Count more changes into an `edit` history entry and move its timestamp to the latest,
        unless an entry of another kind (snapshot, run, language or title change) was recorded
        in the session after it: that ends the burst. Whether the entry was extended; when
        deferred, None, and at `flush` `applied()` or `refused()` is called instead."""
        key = self.pk(session_id)
        self._extends.append((entry_id, key, added, self.when(timestamp), description, applied, refused))
        if self.deferred:
            return None
        ((*_, extended),) = self._flush_extends()
        return extended

    def flush(self) -> None:
        """Write what waits: every document, then every operation and checkpoint, one
        statement each for all of a round's sessions (on PostgreSQL each statement is a round
        trip, and a round of twenty sessions made sixty of them), then the history entries."""
        saves, self._saves = self._saves, []
        ops, self._ops = self._ops, []
        checkpoints, self._checkpoints = self._checkpoints, []
        cursor = self.cursor
        if checkpoints:
            cursor.executemany(self.sql["checkpoint"], checkpoints)
        full = [
            session_id
            for session_id, log_bytes in self._save_documents(saves)
            if log_bytes > settings.SESSION_MAX_LOG_BYTES
        ]
        if len(ops) == 1:
            cursor.execute(self.sql["append"], ops[0])
        elif ops:
            cursor.executemany(self.sql["append"], ops)
        for session_id in full:
            operations_trim(session_id, keep_bytes=settings.SESSION_MAX_LOG_BYTES // 2)
        for _entry, *_, applied, refused, extended in self._flush_extends():
            callback = applied if extended else refused
            if callback is not None:
                callback()

    def _save_documents(self, saves: list[tuple]) -> list[tuple[uuid.UUID, int]]:
        """Each document's new text and version; `(session_id, log_bytes)` of each."""
        cursor = self.cursor
        if len(saves) > 1 and self.sql["save_many"]:
            by_key = {pk: session_id for session_id, pk, *_ in saves}
            values = []
            for _session_id, pk, code, version, added, modified_at in saves:
                values += [pk, code, version, added, None if modified_at is None else self.when(modified_at)]
            rows = ", ".join([self.sql["save_many_row"]] * len(saves))
            cursor.execute(self.sql["save_many"].format(rows=rows), values)
            return [(by_key[key], log_bytes) for key, log_bytes in cursor.fetchall()]
        saved = []
        for session_id, pk, code, version, added, modified_at in saves:
            if modified_at is None:
                cursor.execute(self.sql["save"], (code, version, added, pk))
            else:
                cursor.execute(self.sql["save_modified"], (code, version, added, self.when(modified_at), pk))
            if self.sql["log_bytes"]:
                cursor.execute(self.sql["log_bytes"], (pk,))
            ((log_bytes,),) = cursor.fetchall()
            saved.append((session_id, log_bytes))
        return saved

    def _flush_extends(self) -> list[tuple]:
        """Run the waiting extensions of edit entries: each as it was queued, with whether it applied."""
        extends, self._extends = self._extends, []
        if not extends:
            return []
        cursor, edit = self.cursor, ChangeType.EDIT.value
        if len(extends) > 1 and self.sql["extend_many"]:
            values = []
            for entry_id, _key, added, when, description, *_ in extends:
                values += [entry_id, added, when, description]
            rows = ", ".join([self.sql["extend_many_row"]] * len(extends))
            cursor.execute(self.sql["extend_many"].format(rows=rows), [*values, edit])
            done = {row[0] for row in cursor.fetchall()}
            return [(*extend, extend[0] in done) for extend in extends]
        results = []
        for extend in extends:
            entry_id, key, added, when, description, *_ = extend
            cursor.execute(self.sql["extend"], (added, when, description, entry_id, key, entry_id, edit))
            results.append((*extend, cursor.rowcount == 1))
        return results

    def close(self) -> None:
        self.cursor.close()


def _hex(value: uuid.UUID) -> str:
    return value.hex


def applied_seqs(session_id: uuid.UUID, pairs: set[tuple[str, int]]) -> dict[tuple[str, int, str], int]:
    """The requests of these (user_id, seq) pairs already in the operation log: for each
    `(user_id, seq, digest)`, the newest version it made."""
    found: dict[tuple[str, int, str], int] = {}
    users = sorted({user for user, _ in pairs})
    seqs = sorted({seq for _, seq in pairs})
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT user_id, seq, digest, version FROM {table_name(DocumentOperation)} WHERE session_id = %s"
            f" AND user_id IN ({', '.join(['%s'] * len(users))}) AND seq IN ({', '.join(['%s'] * len(seqs))})",
            [session_pk(session_id), *users, *seqs],
        )
        for user_id, seq, digest, version in cursor.fetchall():
            if (user_id, seq) in pairs:
                key = (user_id, seq, digest)
                found[key] = max(version, found.get(key, version))
    return found


def operations_since(session_id: uuid.UUID, base: int, until: int, *, max_changes: int):
    """The logged operations of versions base+1..until, in order, as `(version, user_id,
    seq, changes, None, digest)` (what `OperationCache.add` takes); None as soon as they
    hold more than `max_changes` change specs (too much to rebase over: the client resyncs).

    Plain SQL on a plain cursor: the ORM's chunked iterator (a server-side cursor on
    PostgreSQL) made reading another process's latest operations most of a rebase."""
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {q('version')}, {q('user_id')}, {q('seq')}, {q('changes')}, {q('digest')}"
            f" FROM {table_name(DocumentOperation)} WHERE {q('session_id')} = %s"
            f" AND {q('version')} > %s AND {q('version')} <= %s ORDER BY {q('version')}",
            [session_pk(session_id), base, until],
        )
        operations, size = [], 0
        while rows := cursor.fetchmany(100):
            for version, user_id, seq, changes, digest in rows:
                changes = read_json(changes)
                size += len(changes)
                if size > max_changes:
                    return None
                operations.append((version, user_id, seq, changes, None, digest))
    return operations


def _operation_bytes(prepared, changes: list) -> int:
    # SQLite stores the JSON text as prepared (ASCII: non-ASCII characters are escaped).
    text = prepared if isinstance(prepared, str) else json.dumps(changes)
    return OPERATION_ROW_BYTES + len(text)


def _stored_json_bytes(column: str) -> str:
    if connection.vendor == "postgresql":
        return f"OCTET_LENGTH({column}::text)"
    return f"LENGTH({column})"


def operations_trim(session_id: uuid.UUID, *, keep_bytes: int) -> int:
    """Delete the oldest part of a session's log (operations and checkpoints) so that about
    `keep_bytes` of it remains, and set its byte count to what remains (measured, so an
    estimate never drifts). Returns the newest version whose operation went, or 0.

    The text at the cut is kept as a checkpoint (rebuilt from the one before it), so every
    version from the cut on can still be rebuilt; it is the oldest version a replay can
    show. A delta based before the cut gets RESYNC_REQUIRED."""
    ops, checkpoints, pk = table_name(DocumentOperation), table_name(DocumentCheckpoint), session_pk(session_id)
    with connection.cursor() as cursor:
        # From the newest row back, the running total of bytes: the oldest ones past
        # `keep_bytes` go, the newest ones within it stay.
        cursor.execute(
            f"SELECT MAX(CASE WHEN newer > %s THEN version END) FROM (SELECT version, SUM(size)"
            f" OVER (ORDER BY version DESC, kind) AS newer FROM ({_log_sizes()}) AS log) AS running",
            [keep_bytes, pk, pk],
        )
        (cut,) = cursor.fetchone()
        if cut is not None:
            text = version_text(session_id, cut)
            if text is not None:
                cursor.execute(
                    f"INSERT INTO {checkpoints} (session_id, version, code, created_at) VALUES (%s, %s, %s, %s)"
                    " ON CONFLICT (session_id, version) DO NOTHING",
                    [pk, cut, text[0], db_datetime(text[1])],
                )
            cursor.execute(f"DELETE FROM {ops} WHERE session_id = %s AND version <= %s", [pk, cut])
            cursor.execute(f"DELETE FROM {checkpoints} WHERE session_id = %s AND version < %s", [pk, cut])
        cursor.execute(f"SELECT SUM(size) FROM ({_log_sizes()}) AS log", [pk, pk])
        (kept,) = cursor.fetchone()
        cursor.execute(f"UPDATE {table_name(InterviewSession)} SET log_bytes = %s WHERE id = %s", [kept or 0, pk])
    if cut is not None:
        logger.info("Trimmed the operation log of session %s up to version %s (%s bytes kept)", session_id, cut, kept)
    return cut or 0


def version_text(session_id: uuid.UUID, version: int) -> tuple[str, datetime.datetime] | None:
    """The document's text at a version before its current one, and when that text was made:
    the newest checkpoint at or before it, with the operations after it applied (at most
    DOCUMENT_CHECKPOINT_INTERVAL of them). None when the log no longer holds what it takes.

    Safe outside a transaction: checkpoints and operations never change once written (a trim
    only deletes the oldest), so a read that misses one says so rather than guessing."""
    pk = session_pk(session_id)
    q = connection.ops.quote_name
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT version, code, created_at FROM {table_name(DocumentCheckpoint)}"
            " WHERE session_id = %s AND version <= %s ORDER BY version DESC LIMIT 1",
            [pk, version],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        base, code, made = row
        made = read_datetime(made)
        if base == version:
            return code, made
        cursor.execute(
            f"SELECT {q('changes')}, {q('created_at')} FROM {table_name(DocumentOperation)}"
            f" WHERE {q('session_id')} = %s AND {q('version')} > %s AND {q('version')} <= %s ORDER BY {q('version')}",
            [pk, base, version],
        )
        rows = cursor.fetchall()
    if len(rows) != version - base:
        return None  # trimmed meanwhile
    log = []
    for stored, at in rows:
        changes = read_json(stored)
        if changes:
            log.append(changes)
            made = at
    return document.apply_log(code, log), read_datetime(made)


def read_datetime(value) -> datetime.datetime:
    """A datetime column read by plain SQL, as the ORM would give it (aware, UTC)."""
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def read_json(value):
    """A JSON column read by plain SQL, as the ORM would give it (SQLite returns its text)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _log_sizes() -> str:
    """SQL: `(version, kind, size)` of each row of a session's log, operations (kind 1) and
    checkpoints (kind 0, first of a version when read newest first); two parameters, the
    session's key twice."""
    row = OPERATION_ROW_BYTES
    return (
        f"SELECT version, 1 AS kind, {_stored_json_bytes('changes')} + {row} AS size"
        f" FROM {table_name(DocumentOperation)} WHERE session_id = %s"
        f" UNION ALL SELECT version, 0 AS kind, LENGTH(code) + {row} AS size"
        f" FROM {table_name(DocumentCheckpoint)} WHERE session_id = %s"
    )


def _row_readers(model) -> tuple[str, list[str], list]:
    """The SELECT list of a model's columns, their attribute names, and for each the database's
    converters (a SQLite datetime is text, a UUID hex) as the ORM would apply them."""
    fields = model._meta.concrete_fields
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    converters = []
    for field in fields:
        col = field.get_col(model._meta.db_table)
        converters.append((col, connection.ops.get_db_converters(col) + field.get_db_converters(connection)))
    return columns, [field.attname for field in fields], converters


# Per database vendor: the converters depend on the backend, not on one connection's state
# (they read only settings, such as the time zone, through the connection they are given).
_SESSION_READERS: dict[str, tuple[str, list[str], list]] = {}


def live_session(session_id: uuid.UUID, now: datetime.datetime, *, lock: bool = False) -> InterviewSession | None:
    """The session with this id if it has not expired, as the ORM would load it; with `lock`,
    locked until the transaction ends (a row lock where the database has them).

    Every REST call on a session starts here; through the ORM, building and compiling the
    query was most of a GET's time (0.3 ms of CPU on this machine, 40 µs in SQL)."""
    readers = _SESSION_READERS.get(connection.vendor)
    if readers is None:
        readers = _SESSION_READERS[connection.vendor] = _row_readers(InterviewSession)
    columns, names, converters = readers
    suffix = " FOR UPDATE" if lock and connection.features.has_select_for_update else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {columns} FROM {table_name(InterviewSession)} WHERE id = %s AND expires_at > %s{suffix}",
            [session_pk(session_id), db_datetime(now)],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    values = []
    for value, (col, field_converters) in zip(row, converters, strict=True):
        for convert in field_converters:
            value = convert(value, col, connection)
        values.append(value)
    return InterviewSession.from_db(connection.alias, names, values)


# Rows beyond a bound, in one statement: at most a handful each time (every save trims), but
# no limit below "all of them" (a lowered bound trims a long session in one go).
_ALL_ROWS = 1 << 62


def _beyond(model, session_id: uuid.UUID, *, keep: int, change: str, where: str, order: str) -> int:
    """Apply `change` (a DELETE or an UPDATE of the model's table) to a session's rows past
    its first `keep` in `order`, in one statement; how many rows it changed."""
    table = table_name(model)
    with connection.cursor() as cursor:
        cursor.execute(
            f"{change} WHERE id IN (SELECT id FROM {table} WHERE session_id = %s{where}"
            f" ORDER BY {order} LIMIT %s OFFSET %s)",
            [session_pk(session_id), _ALL_ROWS, keep],
        )
        return cursor.rowcount


def snapshots_beyond_delete(session_id: uuid.UUID, *, keep: int) -> int:
    """Delete a session's snapshots older than its newest `keep`; how many went.
    By the index on (session, created_at, id), as the ORM's query was."""
    change = f"DELETE FROM {table_name(CodeSnapshot)}"
    return _beyond(CodeSnapshot, session_id, keep=keep, change=change, where="", order="created_at DESC, id DESC")


def history_codes_beyond_clear(session_id: uuid.UUID, *, keep: int) -> int:
    """Clear the code (and a run's output) of a session's history entries with code older than its newest `keep`
    such entries; how many lost it. By the partial index `history_session_codes`."""
    change = f"UPDATE {table_name(HistoryEntry)} SET code_snapshot = NULL, stdout = NULL, stderr = NULL"
    where = " AND code_snapshot IS NOT NULL"
    return _beyond(HistoryEntry, session_id, keep=keep, change=change, where=where, order="id DESC")


def _insert_statement(model) -> tuple[str, list, object]:
    """The INSERT of a model's row (every column but an auto-increment key), its fields, and
    that key's field or None."""
    meta = model._meta
    auto = meta.auto_field
    fields = [field for field in meta.local_concrete_fields if field is not auto]
    sql = (
        f"INSERT INTO {table_name(model)} ({', '.join(connection.ops.quote_name(f.column) for f in fields)})"
        f" VALUES ({', '.join(['%s'] * len(fields))})"
    )
    if auto is not None and connection.features.can_return_columns_from_insert:
        sql += f" RETURNING {connection.ops.quote_name(auto.column)}"
    return sql, fields, auto


_INSERTS: dict[tuple[str, type], tuple[str, list, object]] = {}


def row_insert(instance) -> None:
    """Insert a new model instance's row as `save()` would (defaults, `pre_save`, the new key
    set on it), in one prepared statement. For the models of a session and a code save, which no signal
    watches: through the ORM, building the INSERT was most of the cost of each of its rows.
    It commits with the surrounding transaction, or at once in autocommit, as `save()` does."""
    key = (connection.vendor, type(instance))
    statement = _INSERTS.get(key)
    if statement is None:
        statement = _INSERTS[key] = _insert_statement(type(instance))
    sql, fields, auto = statement
    values = [field.get_db_prep_save(field.pre_save(instance, True), connection) for field in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, values)
        if auto is not None:
            row_id = cursor.fetchone()[0] if connection.features.can_return_columns_from_insert else cursor.lastrowid
            setattr(instance, auto.attname, row_id)
    instance._state.adding = False
    instance._state.db = connection.alias

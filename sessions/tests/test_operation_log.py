"""What the operation log keeps: bounded per session, in the database, the cache and the WAL."""

import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.db.backends.sqlite3.base import DatabaseWrapper

from sessions.editing.operation_cache import OperationCache
from sessions.models import DocumentCheckpoint, DocumentOperation, InterviewSession
from sessions.services import (
    CodeChange,
    ResyncRequired,
    code_change_apply,
    session_cache_forget,
)
from sessions.store import OPERATION_ROW_BYTES, _stored_json_bytes
from sessions.tests.factories import session_make

BLOCK = "x" * 1000


def delta(sid, base: int, changes: list):
    return code_change_apply(
        session_id=sid, change=CodeChange(changes=changes, base_version=base, user_id="u"), notify=False
    )


def stored_bytes(sid) -> int:
    """The log's size (operations and checkpoints) measured in the database, as the bound counts it."""
    key = InterviewSession._meta.pk.get_db_prep_value(sid, connection)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM({_stored_json_bytes('changes')} + {OPERATION_ROW_BYTES}), 0) FROM"
            f" {DocumentOperation._meta.db_table} WHERE session_id = %s",
            [key],
        )
        operations = cursor.fetchone()[0]
        cursor.execute(
            f"SELECT COALESCE(SUM(LENGTH(code) + {OPERATION_ROW_BYTES}), 0) FROM"
            f" {DocumentCheckpoint._meta.db_table} WHERE session_id = %s",
            [key],
        )
        return operations + cursor.fetchone()[0]


def push(sid, rounds: int) -> int:
    """Insert and delete a 1000-character block `rounds` times; the final version."""
    version = InterviewSession.objects.get(pk=sid).version
    for _ in range(rounds):
        version = delta(sid, version, [{"from": 0, "to": 0, "insert": BLOCK}]).version
        version = delta(sid, version, [{"from": 0, "to": 1000, "insert": ""}]).version
    return version


@pytest.mark.django_db
class TestSessionLogBound:
    @pytest.fixture(autouse=True)
    def _small_bound(self, settings):
        settings.SESSION_MAX_LOG_BYTES = 40_000

    def test_the_log_never_holds_more_than_the_bound(self):
        """Pushed far past the bound, a session keeps at most the bound, its newest operations."""
        sid = session_make().id
        for _ in range(10):
            version = push(sid, 20)
            assert stored_bytes(sid) <= 40_000
        versions = list(DocumentOperation.objects.filter(session_id=sid).values_list("version", flat=True))
        assert versions == list(range(versions[0], version + 1))
        assert len(versions) < version / 4
        assert InterviewSession.objects.get(pk=sid).log_bytes == stored_bytes(sid)

    def test_the_trim_keeps_about_half_the_bound(self):
        """Trimming goes down to half the bound, so it happens once per half-bound of writes."""
        sid = session_make().id
        push(sid, 40)
        assert 10_000 < stored_bytes(sid) <= 40_000

    def test_a_trimmed_session_stays_editable(self):
        """After trimming, a delta on the current version and a full text are applied as usual."""
        sid = session_make().id
        version = push(sid, 100)
        session_cache_forget(session_id=sid)
        start = InterviewSession.objects.get(pk=sid).code
        result = delta(sid, version, [{"from": 0, "to": 0, "insert": "A"}])
        assert (result.version, result.code) == (version + 1, "A" + start)
        result = code_change_apply(session_id=sid, change=CodeChange(code="fresh", user_id="u"), notify=False)
        assert (result.version, result.code) == (version + 2, "fresh")

    def test_a_delta_based_on_trimmed_versions_must_resync(self):
        """A delta based before the oldest kept operation gets RESYNC_REQUIRED with the document."""
        sid = session_make().id
        version = push(sid, 100)
        session_cache_forget(session_id=sid)  # as in another process, or past the cache's window
        oldest = DocumentOperation.objects.filter(session_id=sid).order_by("version").first().version
        with pytest.raises(ResyncRequired) as raised:
            delta(sid, oldest - 2, [{"from": 0, "to": 0, "insert": "late"}])
        assert raised.value.version == version
        assert raised.value.code == InterviewSession.objects.get(pk=sid).code
        result = delta(sid, oldest, [{"from": 0, "to": 0, "insert": "ok"}])
        assert result.version == version + 1
        assert InterviewSession.objects.get(pk=sid).version == version + 1

    def test_the_default_bound_is_far_above_an_interview(self):
        """10,000 keystrokes of about 100 bytes each stay far below the default bound."""
        from interview import settings as project

        assert project.SESSION_MAX_LOG_BYTES >= 10 * 10_000 * 100


class TestOperationCacheBound:
    def test_many_sessions_stay_within_the_byte_budget(self):
        """Large change lists in many sessions: the cache drops the least recent sessions to fit."""
        cache = OperationCache(max_bytes=1_000_000)
        sessions = [uuid.uuid4() for _ in range(50)]
        for sid in sessions:
            cache.add(
                sid, [(v, "u", v, [{"from": 0, "to": 0, "insert": "y" * 100_000}], None, f"d{v}") for v in range(1, 4)]
            )
            assert cache.total <= 1_000_000
        assert cache.since(sessions[-1], 0, 3) is not None
        assert cache.since(sessions[0], 0, 3) is None
        assert cache.total == sum(cache.sizes.values())

    def test_one_session_over_the_budget_keeps_its_newest_versions(self):
        """A session whose recent changes alone pass the budget keeps the newest that fit."""
        cache = OperationCache(max_bytes=1_000_000)
        sid = uuid.uuid4()
        cache.add(
            sid, [(v, "u", v, [{"from": 0, "to": 0, "insert": "z" * 300_000}], None, f"d{v}") for v in range(1, 11)]
        )
        assert cache.total <= 1_000_000
        assert sorted(cache.entries[sid]) == [8, 9, 10]
        assert cache.since(sid, 7, 10) is not None
        assert cache.since(sid, 6, 10) is None
        assert cache.seqs[sid]["u"] == {8: {"d8": 8}, 9: {"d9": 9}, 10: {"d10": 10}}

    def test_past_its_versions_a_session_drops_its_oldest_and_their_seqs(self):
        """Beyond max_versions the oldest versions go, with the seqs they made; later ones stay."""
        cache = OperationCache(versions=4, max_bytes=1_000_000)
        sid = uuid.uuid4()
        for v in range(1, 11):
            cache.add(sid, [(v, "u", v, [{"from": 0, "to": 0, "insert": "a"}], None, f"d{v}")])
        assert list(cache.entries[sid]) == [7, 8, 9, 10]
        assert cache.seqs[sid]["u"] == {7: {"d7": 7}, 8: {"d8": 8}, 9: {"d9": 9}, 10: {"d10": 10}}
        assert cache.total == sum(cache.sizes.values()) == 4 * (64 + 232 + 1)

    def test_a_version_added_out_of_order_is_still_dropped_oldest_first(self):
        """Two threads' commits may reach the cache in either order: the oldest version still goes first."""
        cache = OperationCache(versions=2, max_bytes=1_000_000)
        sid = uuid.uuid4()
        for v in (1, 3, 2, 4):
            cache.add(sid, [(v, "u", v, [{"from": 0, "to": 0, "insert": "a"}], None, "d")])
        assert list(cache.entries[sid]) == [3, 4]
        assert cache.since(sid, 2, 4) is not None
        assert cache.seqs[sid]["u"] == {3: {"d": 3}, 4: {"d": 4}}

    def test_a_request_made_again_is_kept_by_its_later_version(self):
        """The same (user, seq, digest) applied twice: dropping the first version keeps the second."""
        cache = OperationCache(versions=2, max_bytes=1_000_000)
        sid = uuid.uuid4()
        change = [{"from": 0, "to": 0, "insert": "a"}]
        cache.add(
            sid, [(1, "u", 1, change, None, "d"), (2, None, None, change, None, ""), (3, "u", 1, change, None, "d")]
        )
        assert list(cache.entries[sid]) == [2, 3]
        assert cache.seqs[sid]["u"] == {1: {"d": 3}}

    def test_forget_releases_the_bytes(self):
        """Forgetting a session gives its bytes back."""
        cache = OperationCache(max_bytes=1_000_000)
        sid = uuid.uuid4()
        cache.add(sid, [(1, None, None, [{"from": 0, "to": 0, "insert": "a" * 1000}], None, "d")])
        cache.forget(sid)
        assert cache.total == 0


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the WAL is SQLite's")
def test_the_wal_file_returns_to_its_limit_after_heavy_writes(tmp_path: Path, settings, django_db_blocker):
    """A file database opened with the project's options: after a 40 MB transaction and a
    checkpoint, the next write cuts the -wal file back to SQLITE_JOURNAL_SIZE_LIMIT."""
    limit = settings.SQLITE_JOURNAL_SIZE_LIMIT
    path = tmp_path / "wal.sqlite3"
    database = DatabaseWrapper({**connection.settings_dict, "NAME": str(path)}, alias="wal-test")
    # Its own database file, not the test database: pytest-django need not set one up.
    with django_db_blocker.unblock():
        _heavy_then_small_writes(database, path, limit)


def _heavy_then_small_writes(database, path: Path, limit: int) -> None:
    try:
        with database.cursor() as cursor:
            cursor.execute("CREATE TABLE blob (data TEXT)")
        database.set_autocommit(False)
        with database.cursor() as cursor:
            for _ in range(max(40, 3 * limit // 1_000_000)):
                cursor.execute("INSERT INTO blob VALUES (%s)", ["w" * 1_000_000])
        database.commit()
        assert Path(f"{path}-wal").stat().st_size > limit  # the transaction went through the WAL
        with database.cursor() as cursor:
            cursor.execute("DELETE FROM blob")
        database.commit()
        with database.cursor() as cursor:
            cursor.execute("INSERT INTO blob VALUES ('small')")
        database.commit()
        assert Path(f"{path}-wal").stat().st_size <= limit
    finally:
        database.close()

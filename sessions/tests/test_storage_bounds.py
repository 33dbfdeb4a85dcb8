"""Stored code per session: the newest SESSION_MAX_SNAPSHOTS snapshots, the newest
SESSION_MAX_HISTORY_CODES codes in history, trimmed in the transaction that adds one."""

import json
import uuid
from unittest import mock

import pytest
from django.db import connection

from execution import sandbox
from execution.services import execution_record
from sessions import services
from sessions.lifecycle import session_import
from sessions.models import ChangeType, CodeSnapshot, HistoryEntry, InterviewSession
from sessions.selectors import session_export
from sessions.services import snapshot_create
from sessions.tests.test_history import check_against_schema

pytestmark = pytest.mark.django_db

RESULT = sandbox.ExecutionResult(True, "", "", 0, 12, None, "ok")


@pytest.fixture(autouse=True)
def _bound_of_three(settings):
    settings.SESSION_MAX_SNAPSHOTS = 3
    settings.SESSION_MAX_HISTORY_CODES = 3


def save(api, sid, code: str) -> dict:
    response = api.post(f"/api/sessions/{sid}/code", {"code": code}, format="json")
    assert response.status_code == 200, response.content
    return response.json()


def run(sid, code: str) -> None:
    execution_record(session_id=sid, language="javascript", code=code, result=RESULT)


def stored_snapshots(sid) -> list[str]:
    return list(CodeSnapshot.objects.filter(session_id=sid).order_by("created_at", "id").values_list("code", flat=True))


def stored_history(sid) -> list[tuple]:
    return list(HistoryEntry.objects.filter(session_id=sid).order_by("id").values_list("change_type", "code_snapshot"))


def history_answer(api, sid) -> dict:
    response = api.get(f"/api/sessions/{sid}/history?limit=100")
    assert response.status_code == 200, response.content
    return response.json()


class TestSaves:
    def test_saves_beyond_the_bound_keep_the_newest_snapshots(self, api, make_session):
        """Six saves with a bound of 3: the three newest snapshots stay, intact, with their receipts'
        ids; the current code is the last save, at the version the saves gave it."""
        sid = make_session()["sessionId"]
        receipts = [save(api, sid, f"code {i}\n" * (i + 1)) for i in range(6)]
        assert stored_snapshots(sid) == [f"code {i}\n" * (i + 1) for i in (3, 4, 5)]
        kept = {str(i) for i in CodeSnapshot.objects.filter(session_id=sid).values_list("id", flat=True)}
        assert kept == {r["snapshotId"] for r in receipts[3:]}
        body = api.get(f"/api/sessions/{sid}/code").json()
        assert (body["code"], body["version"]) == ("code 5\n" * 6, 6)

    def test_history_keeps_every_entry_and_only_the_newest_codes(self, api, make_session):
        """Every save stays in the timeline; older ones answer codeSnapshot null, not flagged omitted."""
        sid = make_session()["sessionId"]
        for i in range(6):
            save(api, sid, f"v{i}")
        body = history_answer(api, sid)
        entries = body["history"]
        assert [e["changeType"] for e in entries] == ["snapshot"] * 6
        assert [e["codeSnapshot"] for e in entries] == [None, None, None, "v3", "v4", "v5"]
        assert [e["codeSnapshotOmitted"] for e in entries] == [False] * 6
        check_against_schema(api, body)

    def test_other_sessions_are_not_trimmed(self, api, make_session):
        """The bound is per session: one session's saves are trimmed, another's are left alone."""
        first, second = make_session()["sessionId"], make_session()["sessionId"]
        for i in range(3):
            save(api, first, f"first {i}")
        for i in range(5):
            save(api, second, f"second {i}")
        assert stored_snapshots(second) == ["second 2", "second 3", "second 4"]
        assert stored_snapshots(first) == ["first 0", "first 1", "first 2"]
        assert [code for _, code in stored_history(first)] == ["first 0", "first 1", "first 2"]


class TestRuns:
    def test_runs_count_with_saves(self, api, make_session):
        """Runs and saves share the bound on codes in history; runs keep no snapshot."""
        sid = make_session()["sessionId"]
        save(api, sid, "s0")
        run(sid, "r0")
        save(api, sid, "s1")
        run(sid, "r1")
        run(sid, "r2")
        assert stored_history(sid) == [
            (ChangeType.SNAPSHOT, None),
            (ChangeType.EXECUTION, None),
            (ChangeType.SNAPSHOT, "s1"),
            (ChangeType.EXECUTION, "r1"),
            (ChangeType.EXECUTION, "r2"),
        ]
        assert stored_snapshots(sid) == ["s0", "s1"]
        body = history_answer(api, sid)
        assert [e["codeSnapshot"] for e in body["history"]] == [None, None, "s1", "r1", "r2"]
        check_against_schema(api, body)

    def test_many_runs_keep_the_newest_codes(self, make_session):
        """Ten runs with a bound of 3: ten entries, the three newest with their code."""
        sid = make_session()["sessionId"]
        for i in range(10):
            run(sid, f"r{i}")
        assert [code for _, code in stored_history(sid)] == [None] * 7 + ["r7", "r8", "r9"]


def _then_fail(real):
    """The real trim, then an error: the transaction around it must undo it all."""

    def trim(**kwargs):
        real(**kwargs)
        raise RuntimeError("fail after the trim")

    return trim


class TestOneTransaction:
    def test_a_failed_save_changes_nothing(self, api, make_session):
        """A save that fails after trimming leaves the snapshots, history and code as they were."""
        sid = make_session()["sessionId"]
        for i in range(3):
            save(api, sid, f"v{i}")
        before = (stored_snapshots(sid), stored_history(sid), InterviewSession.objects.get(pk=sid).version)
        failing = _then_fail(services.history_codes_trim)
        with mock.patch.object(services, "history_codes_trim", failing), pytest.raises(RuntimeError):
            snapshot_create(session_id=sid, code="v3")
        assert (stored_snapshots(sid), stored_history(sid), InterviewSession.objects.get(pk=sid).version) == before
        assert api.get(f"/api/sessions/{sid}/code").json()["code"] == "v2"

    def test_a_failed_run_record_changes_nothing(self, make_session):
        """A run whose recording fails after trimming leaves every code in history."""
        sid = make_session()["sessionId"]
        for i in range(3):
            run(sid, f"r{i}")
        before = stored_history(sid)
        failing = _then_fail(services.history_codes_trim)
        with mock.patch("sessions.services.history_codes_trim", failing), pytest.raises(RuntimeError):
            run(sid, "r3")
        assert stored_history(sid) == before == [(ChangeType.EXECUTION, f"r{i}") for i in range(3)]


class TestCheap:
    def _plan(self, queryset) -> str:
        sql, params = queryset.query.sql_with_params()
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
            return " ".join(str(row[-1]) for row in cursor.fetchall())

    @pytest.mark.skipif(connection.vendor != "sqlite", reason="reads SQLite's query plan")
    def test_finding_what_to_trim_reads_only_an_index(self):
        """Both lookups are answered by an index of the session's code-carrying rows, never their code."""
        sid = uuid.uuid4()
        snapshots = CodeSnapshot.objects.filter(session_id=sid).order_by("-created_at", "-id").values_list("id")[3:]
        codes = (
            HistoryEntry.objects.filter(session_id=sid, code_snapshot__isnull=False)
            .order_by("-id")
            .values_list("id")[3:]
        )
        assert "COVERING INDEX snapshot_session_newest" in self._plan(snapshots)
        assert "INDEX history_session_codes" in self._plan(codes)

    def test_a_save_past_the_bound_takes_a_few_queries(self, api, make_session, django_assert_max_num_queries):
        """However many saves came before, one more costs the same handful of statements."""
        sid = make_session()["sessionId"]
        for i in range(10):
            save(api, sid, f"v{i}")
        with django_assert_max_num_queries(12):
            snapshot_create(session_id=sid, code="v10")
        assert len(stored_snapshots(sid)) == 3


class TestExport:
    def test_a_trimmed_session_round_trips(self, api, make_session):
        """Export, delete, import: the same export, pruned entries still without code."""
        sid = make_session()["sessionId"]
        for i in range(5):
            save(api, sid, f"v{i}")
            run(sid, f"r{i}")
        exported = session_export(session_id=sid)
        assert [s["code"] for s in exported["snapshots"]] == ["v2", "v3", "v4"]
        assert [h["codeSnapshot"] for h in exported["history"]][-4:] == [None, "r3", "v4", "r4"]
        InterviewSession.objects.filter(pk=sid).delete()
        session_import(data=json.loads(json.dumps(exported)))
        assert session_export(session_id=sid) == exported

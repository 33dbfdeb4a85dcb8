"""History: bursts of edits, their order, what ends them, and what a history answer holds."""

import gc
import tracemalloc
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from execution import sandbox
from execution.services import execution_record
from sessions.models import ChangeType, HistoryEntry
from sessions.services import CodeChange, code_change_apply, session_cache_forget
from sessions.tests.factories import snapshot_make

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _long_bursts(settings):
    """Every edit of a test falls in one coalescing window, however slow the machine."""
    settings.HISTORY_COALESCE_SECONDS = 3600


def type_text(session_id, user_id: str, text: str) -> None:
    """One full-text change, as the existing client sends on a keystroke."""
    code_change_apply(session_id=session_id, change=CodeChange(code=text, user_id=user_id), notify=False)


def history(api, sid, limit: int = 100) -> list[dict]:
    response = api.get(f"/api/sessions/{sid}/history?limit={limit}")
    assert response.status_code == 200, response.content
    return response.json()["history"]


def kinds(entries: list[dict]) -> list[tuple]:
    return [(e["changeType"], e["userId"], e["count"]) for e in entries]


class TestBursts:
    def test_a_snapshot_ends_the_burst_before_it(self, api, make_session):
        """Edits before and after a snapshot are two edit entries, on either side of it."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        type_text(sid, "alice", "ab")
        snapshot_make(sid, "saved")
        type_text(sid, "alice", "saved!")
        assert kinds(history(api, sid)) == [("edit", "alice", 2), ("snapshot", None, 1), ("edit", "alice", 1)]

    @pytest.mark.parametrize(
        ("change", "kind"), [({"language": "python"}, "language-change"), ({"title": "Two sum"}, "title-change")]
    )
    def test_a_language_or_title_change_ends_the_burst_before_it(self, api, make_session, change, kind):
        """A language or title change (REST) between edits splits the burst."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        assert api.patch(f"/api/sessions/{sid}", change, format="json").status_code == 200
        type_text(sid, "alice", "ab")
        assert [e["changeType"] for e in history(api, sid)] == ["edit", kind, "edit"]

    def test_a_run_ends_the_burst_before_it(self, api, make_session):
        """A run recorded in the session between edits splits the burst."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        result = sandbox.ExecutionResult(True, "", "", 0, 12, None, "ok")
        execution_record(session_id=sid, language="python", code="a", result=result)
        type_text(sid, "alice", "ab")
        assert [e["changeType"] for e in history(api, sid)] == ["edit", "execution", "edit"]

    def test_the_burst_ends_in_another_process_too(self, api, make_session):
        """A process that never saw the burst (its cache is empty) still does not extend it over a snapshot."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        snapshot_make(sid, "saved")
        session_cache_forget(session_id=uuid.UUID(sid))
        type_text(sid, "alice", "saved!")
        assert kinds(history(api, sid)) == [("edit", "alice", 1), ("snapshot", None, 1), ("edit", "alice", 1)]

    def test_another_users_edits_do_not_end_a_burst(self, api, make_session):
        """Two people typing at once keep one edit entry each."""
        sid = make_session()["sessionId"]
        for text, user in [("a", "alice"), ("ab", "bob"), ("abc", "alice"), ("abcd", "bob"), ("abcde", "alice")]:
            type_text(sid, user, text)
        assert sorted(kinds(history(api, sid))) == [("edit", "alice", 3), ("edit", "bob", 2)]


class TestOrder:
    def test_entries_are_in_time_order(self, api, make_session):
        """An edit entry sits where its latest change is, so timestamps never go back."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        type_text(sid, "bob", "ab")
        type_text(sid, "alice", "abc")
        entries = history(api, sid)
        assert kinds(entries) == [("edit", "bob", 1), ("edit", "alice", 2)]
        stamps = [e["timestamp"] for e in entries]
        assert stamps == sorted(stamps)

    def test_limit_1_is_the_latest_entry(self, api, make_session):
        """limit=1 answers the edit made after the last snapshot, not the snapshot."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        snapshot_make(sid, "saved")
        type_text(sid, "alice", "saved!")
        assert kinds(history(api, sid, limit=1)) == [("edit", "alice", 1)]

    def test_limit_gives_the_newest_by_time(self, api, make_session):
        """limit=N gives the N entries with the latest timestamps, oldest first."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        type_text(sid, "bob", "ab")
        type_text(sid, "carol", "abc")
        type_text(sid, "alice", "abcd")
        assert [e["userId"] for e in history(api, sid, limit=2)] == ["carol", "alice"]


class TestTitleChange:
    def test_a_new_title_is_recorded(self, api, make_session):
        """PATCH with a new title records a title-change entry naming both titles."""
        sid = make_session(title="Draft")["sessionId"]
        assert api.patch(f"/api/sessions/{sid}", {"title": "Two sum"}, format="json").status_code == 200
        (entry,) = history(api, sid)
        assert entry["changeType"] == "title-change"
        assert entry["description"] == 'Changed the title from "Draft" to "Two sum"'
        assert entry["codeSnapshot"] is None

    def test_clearing_the_title_is_recorded(self, api, make_session):
        """Setting the title to null is a change too."""
        sid = make_session(title="Draft")["sessionId"]
        assert api.patch(f"/api/sessions/{sid}", {"title": None}, format="json").status_code == 200
        assert history(api, sid)[0]["description"] == 'Changed the title from "Draft" to none'

    def test_the_same_title_records_nothing(self, api, make_session):
        """A PATCH that does not change the title adds no history."""
        sid = make_session(title="Draft")["sessionId"]
        assert api.patch(f"/api/sessions/{sid}", {"title": "Draft"}, format="json").status_code == 200
        assert history(api, sid) == []

    def test_null_and_empty_titles_are_the_same(self, api, make_session):
        """Replacing no title (null) with an empty one records nothing: both read as no title."""
        sid = make_session()["sessionId"]
        assert api.patch(f"/api/sessions/{sid}", {"title": ""}, format="json").status_code == 200
        assert history(api, sid) == []

    def test_language_and_title_together_record_both(self, api, make_session):
        """One PATCH changing both records a language-change and a title-change."""
        sid = make_session()["sessionId"]
        response = api.patch(f"/api/sessions/{sid}", {"language": "python", "title": "T"}, format="json")
        assert response.status_code == 200
        assert [e["changeType"] for e in history(api, sid)] == ["language-change", "title-change"]

    def test_an_invalid_title_records_nothing(self, api, make_session):
        """A refused PATCH (title too long) changes nothing and records nothing."""
        sid = make_session(title="Draft")["sessionId"]
        response = api.patch(f"/api/sessions/{sid}", {"language": "python", "title": "x" * 201}, format="json")
        assert response.status_code == 400
        assert history(api, sid) == []
        assert api.get(f"/api/sessions/{sid}").json()["language"] == "javascript"


def check_against_schema(api, body: dict) -> None:
    """The answer has every property the OpenAPI document gives HistoryEntry, of its type."""
    schemas = api.get("/openapi.json").json()["components"]["schemas"]
    entry_schema = schemas["HistoryEntry"]
    python_types = {"string": str, "integer": int, "boolean": bool}
    assert set(schemas["HistoryList"]["required"]) <= set(body)
    for entry in body["history"]:
        assert set(entry_schema["required"]) <= set(entry)
        for name, prop in entry_schema["properties"].items():
            if entry[name] is None:
                assert prop.get("nullable"), name
            elif prop.get("type") in python_types:
                assert isinstance(entry[name], python_types[prop["type"]]), name


class TestAnswerSize:
    def _snapshots(self, sid, n: int, size: int) -> None:
        code = "x" * size
        HistoryEntry.objects.bulk_create(
            HistoryEntry(
                session_id=sid, change_type=ChangeType.SNAPSHOT, description=f"s{i}", code_snapshot=code, timestamp=at
            )
            for i, at in enumerate(timezone.now() - timedelta(seconds=n - i) for i in range(n))
        )

    def test_large_snapshots_stay_under_the_bound(self, api, make_session, settings):
        """100 snapshots of 256 KB: the answer stays under 1 MiB, the newest keep their code, all valid."""
        assert settings.HISTORY_MAX_RESPONSE_BYTES == 1_048_576
        sid = make_session()["sessionId"]
        self._snapshots(sid, 100, 262_144)
        response = api.get(f"/api/sessions/{sid}/history?limit=100")
        assert response.status_code == 200
        assert len(response.content) <= settings.HISTORY_MAX_RESPONSE_BYTES
        body = response.json()
        entries = body["history"]
        assert [e["description"] for e in entries] == [f"s{i}" for i in range(100)]
        assert [e["codeSnapshot"] is not None for e in entries] == [False] * 97 + [True] * 3
        assert [e["codeSnapshotOmitted"] for e in entries] == [True] * 97 + [False] * 3
        assert entries[-1]["codeSnapshot"] == "x" * 262_144
        check_against_schema(api, body)

    def test_memory_stays_near_the_bound_and_returns(self, api, make_session):
        """Answering never holds every snapshot's code: the peak stays a few times the bound."""
        sid = make_session()["sessionId"]
        self._snapshots(sid, 100, 262_144)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            response = api.get(f"/api/sessions/{sid}/history?limit=100")
            assert response.status_code == 200
            del response
            gc.collect()
            after, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak - before < 5 * 1_048_576
        assert after - before < 256 * 1024

    def test_offset_reaches_an_older_entrys_code(self, api, make_session):
        """offset skips the newest entries, so an omitted code can be fetched on its own."""
        sid = make_session()["sessionId"]
        self._snapshots(sid, 100, 262_144)
        (entry,) = api.get(f"/api/sessions/{sid}/history?limit=1&offset=50").json()["history"]
        assert (entry["description"], entry["codeSnapshotOmitted"]) == ("s49", False)
        assert entry["codeSnapshot"] == "x" * 262_144
        page = api.get(f"/api/sessions/{sid}/history?limit=3&offset=98").json()["history"]
        assert [e["description"] for e in page] == ["s0", "s1"]

    @pytest.mark.parametrize("offset", ["-1", "abc", "1.5", "", "1000001"])
    def test_a_bad_offset_is_400(self, api, make_session, offset):
        """offset must be an integer from 0 to 1,000,000."""
        sid = make_session()["sessionId"]
        response = api.get(f"/api/sessions/{sid}/history?offset={offset}")
        assert response.status_code == 400
        assert response.json()["error"] == "VALIDATION_ERROR"
        assert "offset" in response.json()["fields"]

    def test_a_code_larger_than_the_bound_is_left_out(self, api, make_session, settings):
        """Even the newest entry loses its code when that alone would pass the bound."""
        settings.HISTORY_MAX_RESPONSE_BYTES = 10_000
        sid = make_session()["sessionId"]
        self._snapshots(sid, 1, 20_000)
        response = api.get(f"/api/sessions/{sid}/history")
        assert len(response.content) <= 10_000
        (entry,) = response.json()["history"]
        assert (entry["codeSnapshot"], entry["codeSnapshotOmitted"]) == (None, True)

    def test_escaped_code_is_counted_as_sent(self, api, make_session, settings):
        """Code that JSON escapes (quotes, control characters) is measured as it is sent."""
        settings.HISTORY_MAX_RESPONSE_BYTES = 25_000
        sid = make_session()["sessionId"]
        self._snapshots(sid, 3, 0)
        # 6,300 bytes of UTF-8 but 11,200 bytes of JSON each: two fit, not three.
        HistoryEntry.objects.filter(session_id=sid).update(code_snapshot='"\x01é😀\n' * 700)
        response = api.get(f"/api/sessions/{sid}/history")
        assert len(response.content) <= 25_000
        entries = response.json()["history"]
        assert [e["codeSnapshotOmitted"] for e in entries] == [True, False, False]
        assert entries[-1]["codeSnapshot"] == '"\x01é😀\n' * 700

    def test_entries_without_code_are_not_flagged(self, api, make_session):
        """Small answers are as before: codes present, nothing omitted, edits without code."""
        sid = make_session()["sessionId"]
        type_text(sid, "alice", "a")
        snapshot_make(sid, "saved")
        entries = history(api, sid)
        assert [(e["codeSnapshot"], e["codeSnapshotOmitted"]) for e in entries] == [(None, False), ("saved", False)]

    def test_the_schema_documents_the_flag(self, api):
        """The OpenAPI document describes codeSnapshotOmitted as a boolean."""
        prop = api.get("/openapi.json").json()["components"]["schemas"]["HistoryEntry"]["properties"]
        assert prop["codeSnapshotOmitted"]["type"] == "boolean"
        assert "HISTORY_MAX_RESPONSE_BYTES" in prop["codeSnapshotOmitted"]["description"]
        parameters = api.get("/openapi.json").json()["paths"]["/api/sessions/{id}/history"]["get"]["parameters"]
        offset = next(p for p in parameters if p["name"] == "offset")
        assert (offset["in"], offset["schema"]["minimum"]) == ("query", 0)

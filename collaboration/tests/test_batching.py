"""Requests of many connections in one database call: the batcher, the batched presence
changes and welcome reads, and a crowd joining the real server at once."""

import asyncio
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from websockets.asyncio.client import connect

from collaboration.presence import Join, Leave, presence_apply
from interview.batching import Batcher
from interview.testing import RunningServer, http_json, next_message
from sessions.exceptions import OwnerTokenMismatch, SessionNotFound
from sessions.models import InterviewSession
from sessions.selectors import Welcome, participants_active, welcome_states
from sessions.tests.factories import participant_make, session_make, snapshot_make


class Recorder:
    """A batch function that records the batches it got; a request "boom" is an error of its
    own, a batch holding "sink" fails whole, and `gate` (when set) holds the first batch."""

    def __init__(self, gate: threading.Event | None = None):
        self.batches: list[list] = []
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, requests: list) -> list:
        self.batches.append(list(requests))
        self.entered.set()
        if self.gate is not None and len(self.batches) == 1:
            self.gate.wait(30)
        if "sink" in requests and len(requests) > 1:
            raise RuntimeError("the batch failed")
        return [ValueError(r) if r in ("boom", "sink") else f"done {r}" for r in requests]


@pytest.fixture
def executor():
    with ThreadPoolExecutor(max_workers=1) as pool:
        yield pool


async def test_requests_of_one_turn_go_in_one_call_answered_in_order(executor):
    recorder = Recorder()
    batcher = Batcher(recorder, executor=executor)
    results = await asyncio.gather(*(batcher(i) for i in range(5)))
    assert results == [f"done {i}" for i in range(5)]
    assert recorder.batches == [[0, 1, 2, 3, 4]]


async def test_requests_made_while_a_batch_runs_share_the_next(executor):
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = Batcher(recorder, executor=executor)
    first = asyncio.ensure_future(batcher("a"))
    await asyncio.to_thread(recorder.entered.wait, 30)
    later = [asyncio.ensure_future(batcher(x)) for x in "bcd"]
    gate.set()
    assert await first == "done a"
    assert [await f for f in later] == ["done b", "done c", "done d"]
    assert recorder.batches == [["a"], ["b", "c", "d"]]


async def test_batches_hold_at_most_limit_requests_in_order(executor):
    recorder = Recorder()
    batcher = Batcher(recorder, limit=3, executor=executor)
    results = await asyncio.gather(*(batcher(i) for i in range(7)))
    assert results == [f"done {i}" for i in range(7)]
    assert recorder.batches == [[0, 1, 2], [3, 4, 5], [6]]


async def test_an_error_result_fails_only_its_request(executor):
    batcher = Batcher(Recorder(), executor=executor)
    results = await asyncio.gather(batcher("x"), batcher("boom"), batcher("y"), return_exceptions=True)
    assert results[0] == "done x" and results[2] == "done y"
    assert isinstance(results[1], ValueError)


async def test_a_failing_batch_is_retried_one_by_one(executor):
    recorder = Recorder()
    batcher = Batcher(recorder, executor=executor)
    results = await asyncio.gather(batcher("x"), batcher("sink"), batcher("y"), return_exceptions=True)
    assert results[0] == "done x" and results[2] == "done y"
    assert isinstance(results[1], ValueError)
    assert recorder.batches == [["x", "sink", "y"], ["x"], ["sink"], ["y"]]


async def test_a_caller_that_went_away_leaves_the_others_answered(executor):
    gate = threading.Event()
    recorder = Recorder(gate)
    batcher = Batcher(recorder, executor=executor)
    first = asyncio.ensure_future(batcher("a"))
    await asyncio.to_thread(recorder.entered.wait, 30)
    gone, kept = asyncio.ensure_future(batcher("b")), asyncio.ensure_future(batcher("c"))
    await asyncio.sleep(0)
    gone.cancel()
    gate.set()
    assert await first == "done a"
    assert await kept == "done c"
    assert gone.cancelled()


@pytest.mark.django_db
class TestPresenceBatch:
    def test_one_user_on_two_connections_arrives_once(self):
        session = session_make()
        first, second = presence_apply(
            changes=[Join(session.id, "ann", "Ann", "chan.1"), Join(session.id, "ann", "Ann B", "chan.2")]
        )
        assert (first.changed, first.participant_count) == (True, 1)
        assert (second.changed, second.participant_count) == (False, 1)
        (ann,) = participants_active(session=session)
        assert (ann.user_id, ann.name) == ("ann", "Ann B")

    def test_counts_follow_each_change_of_a_batch(self):
        session = session_make()
        participant_make(session, "old", "Old", live=1)
        results = presence_apply(
            changes=[
                Join(session.id, "a", "A", "chan.a"),
                Join(session.id, "b", "B", "chan.b"),
                Leave("chan.a"),
                Join(session.id, "b", "B", "chan.b2"),
                Leave("chan.b"),
                Leave("chan.b2"),
            ]
        )
        assert [(r.user_id, r.changed, r.participant_count) for r in results] == [
            ("a", True, 2),
            ("b", True, 3),
            ("a", True, 2),
            ("b", False, 2),
            ("b", False, 2),
            ("b", True, 1),
        ]
        assert [p.user_id for p in participants_active(session=session)] == ["old"]

    def test_an_unknown_session_fails_its_join_alone(self):
        one, two = session_make(), session_make()
        results = presence_apply(
            changes=[
                Join(one.id, "a", "A", "chan.a"),
                Join(uuid.uuid4(), "x", "X", "chan.x"),
                Join(two.id, "b", "B", "chan.b"),
                Leave("chan.never-joined"),
            ]
        )
        assert (results[0].session_id, results[0].participant_count) == (one.id, 1)
        assert isinstance(results[1], SessionNotFound)
        assert (results[2].session_id, results[2].participant_count) == (two.id, 1)
        assert results[3] is None
        assert [p.user_id for p in participants_active(session=one)] == ["a"]
        assert [p.user_id for p in participants_active(session=two)] == ["b"]

    @pytest.mark.parametrize(
        "returning",
        [
            True,
            # The ORM's fallback for a database without RETURNING reads the driver's lastrowid,
            # which SQLite's has and PostgreSQL's has not.
            pytest.param(
                False, marks=pytest.mark.skipif(connection.vendor != "sqlite", reason="lastrowid is SQLite's")
            ),
        ],
        ids=["insert-returning", "get-or-create"],
    )
    def test_each_join_sets_the_role_and_a_bad_token_fails_its_join_alone(self, monkeypatch, returning):
        """In one batch: the owner token makes an interviewer, a wrong one is OwnerTokenMismatch and
        writes nothing, a join without one is a candidate (an interviewer's too)."""
        monkeypatch.setattr(connection.features, "can_return_columns_from_insert", returning)
        session, other = session_make(), session_make()
        token = session.owner_token
        results = presence_apply(
            changes=[
                Join(session.id, "ada", "Ada", "chan.ada", owner_token=token),
                Join(session.id, "eve", "Eve", "chan.eve", owner_token=other.owner_token),
                Join(session.id, "cara", "Cara", "chan.cara"),
                Join(session.id, "cara", "Cara", "chan.cara2", owner_token=token),
                Join(session.id, "ada", "Ada", "chan.ada2"),
                Join(session.id, "cara", "Cara", "chan.cara2", owner_token="wrong"),
            ]
        )
        assert isinstance(results[1], OwnerTokenMismatch)
        assert isinstance(results[5], OwnerTokenMismatch)
        changes = [results[i] for i in (0, 2, 3, 4)]
        assert [(c.user_id, c.role, c.changed, c.participant_count) for c in changes] == [
            ("ada", "interviewer", True, 1),
            ("cara", "candidate", True, 2),
            ("cara", "interviewer", False, 2),
            ("ada", "candidate", False, 2),
        ]
        assert [(p.user_id, p.role) for p in participants_active(session=session)] == [
            ("ada", "candidate"),
            ("cara", "interviewer"),
        ]
        assert welcome_states(session_ids=[session.id])[0].participants == [
            {"userId": "ada", "name": "Ada", "role": "candidate"},
            {"userId": "cara", "name": "Cara", "role": "interviewer"},
        ]

    def test_a_session_without_an_owner_token_has_no_interviewer(self):
        """An imported session has no owner token hash: every token is refused, the empty one too."""
        session = session_make()
        InterviewSession.objects.filter(pk=session.id).update(owner_token_hash="")
        results = presence_apply(
            changes=[Join(session.id, "a", "A", "chan.a", owner_token=t) for t in ("", session.owner_token)]
        )
        assert all(isinstance(r, OwnerTokenMismatch) for r in results)
        assert participants_active(session=session) == []

    def test_an_owner_token_costs_no_query(self):
        """A batch of joins with the owner token makes the same statements as one without."""

        def statements(with_token: bool) -> list[str]:
            session = session_make()
            token = session.owner_token if with_token else None
            joins = [Join(session.id, f"u{i}", "U", f"chan.{with_token}.{i}", owner_token=token) for i in range(3)]
            with CaptureQueriesContext(connection) as queries:
                results = presence_apply(changes=[*joins, joins[0]])
            assert [r.role for r in results] == ["interviewer" if with_token else "candidate"] * 4
            # Each statement's kind and table (savepoint names and values differ from run to run).
            words = [q["sql"].split() for q in queries.captured_queries]
            return [w[0] if w[0] in ("SAVEPOINT", "RELEASE") else " ".join(w[:3]) for w in words]

        assert statements(with_token=True) == statements(with_token=False)

    def test_a_join_keeps_its_token_out_of_its_repr(self):
        """The owner token never shows in a Join's repr (what a log line or a traceback would print)."""
        join = Join(uuid.uuid4(), "a", "A", "chan.a", owner_token="s3cret-token")
        assert "s3cret-token" not in repr(join)

    def test_welcomes_of_many_sessions_each_their_own(self):
        one, two = session_make(code="print(1)\n"), session_make(language="javascript", code="let b\n")
        participant_make(one, "a", "A", live=1)
        participant_make(one, "gone", "Gone", stale=1)
        participant_make(two, "b", "B", live=2)
        results = welcome_states(session_ids=[one.id, uuid.uuid4(), "not-a-uuid", two.id, one.id])
        assert isinstance(results[1], SessionNotFound) and isinstance(results[2], SessionNotFound)
        first, second, again = results[0], results[3], results[4]
        assert isinstance(first, Welcome) and first == again
        assert (first.session_id, first.code, first.version) == (one.id, "print(1)\n", 1)
        assert first.participants == [{"userId": "a", "name": "A", "role": "candidate"}]
        assert (second.session_id, second.language, second.code) == (two.id, "javascript", "let b\n")
        assert second.participants == [{"userId": "b", "name": "B", "role": "candidate"}]
        snapshot_make(one.id, "print(2)\n")
        assert welcome_states(session_ids=[one.id])[0].version == 2


@pytest.fixture(scope="module")
def crowd_server(tmp_path_factory):
    env = {"WS_RATE_LIMIT_PER_SECOND": "1000", "WS_RATE_LIMIT_BURST": "1000"}
    with RunningServer(tmp_path_factory.mktemp("crowd"), env=env) as server:
        yield server


async def test_a_crowd_joining_at_once_sees_the_right_welcomes_and_counts(crowd_server):
    """Forty clients of four sessions connect and join at once (so the server reads their
    welcomes and applies their joins in batches): each welcome is its own session's, a
    watcher of each session sees every arrival with the counts 2, 3, ... 11 (each join
    counted once, in order), and /participants and activeParticipants agree."""
    server, per_session = crowd_server, 10
    sessions = []
    for i in range(4):
        sid = (await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {}))["sessionId"]
        await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/code", "POST", {"code": f"# {i}\n"})
        sessions.append(sid)
    watchers = []
    for sid in sessions:
        watcher = await connect(f"{server.ws_url}/ws/sessions/{sid}")
        await next_message(watcher, "welcome")
        await watcher.send(json.dumps({"type": "join", "userId": "watcher", "data": {"name": "W"}}))
        watchers.append(watcher)
    # The watcher's own join is done once a ping after it is answered (frames of a
    # connection are handled in order).
    for watcher in watchers:
        await watcher.send(json.dumps({"type": "ping"}))
        await next_message(watcher, "pong")

    async def arrive(sid: str, i: int, user: str):
        ws = await connect(f"{server.ws_url}/ws/sessions/{sid}")
        welcome = await next_message(ws)
        await ws.send(json.dumps({"type": "join", "userId": user, "data": {"name": user.upper()}}))
        return ws, welcome

    crowd = [(sid, i, f"u{n}-{i}") for n, sid in enumerate(sessions) for i in range(per_session)]
    arrived = await asyncio.gather(*(arrive(*who) for who in crowd))
    try:
        for (sid, _, _), (_, welcome) in zip(crowd, arrived, strict=True):
            assert welcome["type"] == "welcome"
            assert welcome["data"]["sessionId"] == sid
            assert welcome["data"]["currentCode"] == f"# {sessions.index(sid)}\n"
            assert {"userId": "watcher", "name": "W", "role": "candidate"} in welcome["data"]["participants"]
        for n, (sid, watcher) in enumerate(zip(sessions, watchers, strict=True)):
            seen = [await next_message(watcher, "user-joined") for _ in range(per_session)]
            assert sorted(m["userId"] for m in seen) == sorted(f"u{n}-{i}" for i in range(per_session))
            assert [m["data"]["participantCount"] for m in seen] == list(range(2, per_session + 2))
            body = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}/participants")
            assert sorted(p["userId"] for p in body["participants"]) == sorted(
                ["watcher", *(f"u{n}-{i}" for i in range(per_session))]
            )
            state = await asyncio.to_thread(http_json, f"{server.url}/api/sessions/{sid}")
            assert state["activeParticipants"] == per_session + 1
    finally:
        await asyncio.gather(*(ws.close() for ws, _ in arrived), *(w.close() for w in watchers))

"""Overload is pushed back to the senders: the writer's queue is bounded (per session, in all,
in age), a refused change gets RATE_LIMIT_EXCEEDED and is not applied, a newer full text
supersedes a waiting one, and nothing acknowledged is lost."""

import asyncio
import threading

import pytest
from channels.db import database_sync_to_async

from collaboration import writer as writer_module
from collaboration.tests.helpers import close_all, get_document, open_joined, receive_type
from collaboration.writer import DocumentWriter, Submission, get_writer
from interview.testing import PATIENCE_SECONDS
from sessions.services import CodeChange

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def held_writer(monkeypatch):
    """Commits wait until `release()`: the writer's first round holds its changes, later ones queue."""

    class Hold:
        def __init__(self):
            self.gate = threading.Event()
            self.entered = threading.Event()

        async def wait_entered(self):
            assert await asyncio.to_thread(self.entered.wait, PATIENCE_SECONDS), "no round started"

        def release(self):
            self.gate.set()

    hold = Hold()
    real = writer_module._apply_round

    def held(submissions):
        hold.entered.set()
        hold.gate.wait(PATIENCE_SECONDS)
        return real(submissions)

    monkeypatch.setattr(writer_module, "_apply_round", held)
    yield hold
    hold.release()


def delta(token: str, version: int, seq: int) -> dict:
    return {"type": "code-update", "data": {"changes": [{"from": 0, "insert": token}], "version": version, "seq": seq}}


async def barrier(ws) -> list[dict]:
    """Every frame sent before it was handled (the consumer answers frames in order); the
    messages that came before the pong."""
    await ws.send_json_to({"type": "ping"})
    before = []
    while (message := await ws.receive_json_from(timeout=PATIENCE_SECONDS))["type"] != "pong":
        before.append(message)
    return before


async def answers(ws, count: int, before: list[dict] = ()) -> dict[int, dict]:
    """The answers to this connection's changes (acks and errors) by seq, until there are
    `count`: those among `before` first, then the next ones."""
    found: dict[int, dict] = {}
    pending = list(before)
    while len(found) < count:
        message = pending.pop(0) if pending else await ws.receive_json_from(timeout=PATIENCE_SECONDS)
        if message["type"] in ("code-ack", "error"):
            found[message["data"]["seq"]] = message
    return found


async def texts_until(ws, version: int) -> str:
    """The text of the code-update that brings this connection to `version`."""
    while True:
        message = await receive_type(ws, "code-update")
        if message["data"]["version"] == version:
            return message["data"]["code"]


class TestSessionBound:
    async def test_changes_past_the_session_bound_are_refused_and_what_was_acked_is_kept(
        self, settings, new_session, open_socket, held_writer
    ):
        """A sender flooding a held writer: beyond WRITER_MAX_QUEUED_PER_SESSION it gets
        RATE_LIMIT_EXCEEDED with the seq; every acknowledged change is in the document, no refused one is."""
        settings.WRITER_MAX_QUEUED_PER_SESSION = 3
        session = await new_session(code="")
        a, b = await open_joined(open_socket, session.id, "alice", "bob")
        base = a.welcome["data"]["version"]
        await a.send_json_to(delta("[1]", base, 1))
        await held_writer.wait_entered()
        for seq in range(2, 11):
            await a.send_json_to(delta(f"[{seq}]", base, seq))
        before = await barrier(a)
        held_writer.release()
        found = await answers(a, 10, before)
        refused = {seq for seq, m in found.items() if m["type"] == "error"}
        acked = {seq: m["data"]["version"] for seq, m in found.items() if m["type"] == "code-ack"}
        assert refused == set(range(5, 11))
        assert all(found[seq]["data"]["code"] == "RATE_LIMIT_EXCEEDED" for seq in refused)
        assert set(acked) == {1, 2, 3, 4}
        final = max(acked.values())
        assert final == base + 4
        text = await texts_until(b, final)
        assert sorted(text.replace("][", "] [").split()) == sorted(f"[{seq}]" for seq in acked)
        await close_all(a, b)

    async def test_a_refused_change_resent_later_is_applied(self, settings, new_session, open_socket, held_writer):
        """Once the writer catches up, the refused change resent with its seq is applied once."""
        settings.WRITER_MAX_QUEUED_PER_SESSION = 1
        session = await new_session(code="")
        (a,) = await open_joined(open_socket, session.id, "alice")
        base = a.welcome["data"]["version"]
        await a.send_json_to(delta("a", base, 1))
        await held_writer.wait_entered()
        await a.send_json_to(delta("b", base, 2))
        await a.send_json_to(delta("c", base, 3))
        before = await barrier(a)
        held_writer.release()
        found = await answers(a, 3, before)
        assert [found[s]["type"] for s in (1, 2, 3)] == ["code-ack", "code-ack", "error"]
        await a.send_json_to(delta("c", base + 2, 3))
        (ack,) = (await answers(a, 1)).values()
        assert ack["type"] == "code-ack"
        assert ack["data"]["version"] == base + 3
        await close_all(a)


class TestAge:
    async def test_a_change_that_waited_too_long_is_refused_with_those_behind_it(
        self, settings, new_session, open_socket, held_writer
    ):
        """Past WRITER_MAX_WAIT_SECONDS in the queue, a change and its connection's later ones
        are refused; another connection's fresh change goes through."""
        settings.WRITER_MAX_WAIT_SECONDS = 0.5
        session = await new_session(code="")
        a, b = await open_joined(open_socket, session.id, "alice", "bob")
        base = a.welcome["data"]["version"]
        writer = get_writer()
        now = [1000.0]
        writer.clock = lambda: now[0]
        await a.send_json_to(delta("a1 ", base, 1))
        await held_writer.wait_entered()
        await a.send_json_to(delta("a2 ", base, 2))
        await a.send_json_to(delta("a3 ", base, 3))
        await barrier(a)
        now[0] += 1.0  # the two have waited a second
        await b.send_json_to(delta("b1 ", base, 1))
        await barrier(b)
        held_writer.release()
        found = await answers(a, 3)
        assert found[1]["type"] == "code-ack"
        assert [found[s]["data"]["code"] for s in (2, 3)] == ["RATE_LIMIT_EXCEEDED"] * 2
        (b_answer,) = (await answers(b, 1)).values()
        assert b_answer["type"] == "code-ack"
        assert b_answer["data"]["version"] == base + 2
        code, version, _ = await get_document(session.id)
        assert (sorted(code.split()), version) == (["a1", "b1"], base + 2)
        assert writer.refused == 2
        await close_all(a, b)


class TestSupersede:
    async def test_a_newer_full_text_replaces_the_waiting_one_once_the_session_is_behind(
        self, settings, new_session, open_socket, held_writer
    ):
        """Full texts without seq from one connection while the writer is held: each is applied
        while its session keeps up; once the oldest waiting one has waited
        WRITER_SUPERSEDE_AFTER_SECONDS, a newer one replaces the connection's latest waiting
        one (it holds it): one version and one ack fewer, no error."""
        settings.WRITER_SUPERSEDE_AFTER_SECONDS = 0.25
        settings.WRITER_MAX_WAIT_SECONDS = 60.0
        session = await new_session(code="")
        a, b = await open_joined(open_socket, session.id, "alice", "bob")
        base = a.welcome["data"]["version"]
        writer = get_writer()
        now = [1000.0]
        writer.clock = lambda: now[0]
        await a.send_json_to({"type": "code-update", "data": {"code": "v1", "changes": []}})
        await held_writer.wait_entered()
        for text in ("v2", "v3"):
            await a.send_json_to({"type": "code-update", "data": {"code": text, "changes": []}})
        await barrier(a)
        assert writer.superseded == 0
        now[0] += 0.3  # v2 and v3 have waited past the bound
        await a.send_json_to({"type": "code-update", "data": {"code": "v4", "changes": []}})
        await barrier(a)
        held_writer.release()
        assert [await texts_until(b, base + n) for n in (1, 2, 3)] == ["v1", "v2", "v4"]
        acks = [await receive_type(a, "code-ack") for _ in range(3)]
        assert [m["data"]["version"] for m in acks] == [base + 1, base + 2, base + 3]
        await barrier(a)
        assert await a.receive_nothing()
        assert writer.superseded == 1
        assert (await get_document(session.id))[:2] == ("v4", base + 3)
        await close_all(a, b)


class TestCounts:
    async def test_the_bounds_count_live_changes_only(self, settings):
        """The total bound refuses beyond WRITER_MAX_QUEUED; superseded and taken changes free their place."""
        settings.WRITER_MAX_QUEUED = 3
        settings.WRITER_MAX_QUEUED_PER_SESSION = 10
        writer = DocumentWriter()
        writer.task.cancel()

        def change(session, seq):
            return Submission(session, CodeChange(changes=[{"from": 0, "insert": "x"}], base_version=0, seq=seq), "c")

        assert writer.submit(change("s1", 1))
        assert writer.submit(change("s2", 1))
        assert writer.submit(Submission("s2", CodeChange(code="t1"), "d"))
        assert not writer.submit(change("s3", 1))
        # A full text without seq is never refused: it takes its connection's one place.
        assert writer.submit(Submission("s2", CodeChange(code="t2"), "d"))
        assert (writer.waiting_total, writer.waiting_in, writer.superseded) == (3, {"s1": 1, "s2": 2}, 1)
        assert [s.change.code for s in writer._take_round()] == [None, None, "t2"]
        assert (writer.waiting_total, writer.waiting_in) == (0, {})
        assert writer.submit(change("s3", 1))


class TestDatabaseThread:
    async def test_rounds_run_on_the_thread_of_database_sync_to_async(self, monkeypatch):
        """A round hops straight to the one database thread the consumers' and presence's
        database calls use, so they never interleave with it."""
        threads = []

        def record(submissions):
            threads.append(threading.get_ident())
            return [ValueError("not applied")] * len(submissions)

        monkeypatch.setattr(writer_module, "_apply_round", record)
        writer = DocumentWriter()
        try:
            assert writer.executor is not None
            writer.submit(Submission("s1", CodeChange(code="t"), "c"))
            await writer.idle()
            assert threads == [await database_sync_to_async(threading.get_ident)()]
        finally:
            writer.task.cancel()

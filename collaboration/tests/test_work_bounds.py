"""The work one message may cause is bounded, and one session's work cannot stall another's."""

import asyncio
import json
import statistics
import time

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect

from collaboration import messages
from collaboration.writer import DocumentWriter, Submission
from interview.testing import RunningServer, http_json, next_message
from sessions import document
from sessions.models import InterviewSession
from sessions.services import (
    CodeChange,
    CodeChangeResult,
    Deferred,
    ResyncRequired,
    code_change_apply,
    code_changes_apply,
    rebase_work_budget,
)
from sessions.tests.factories import session_make, snapshot_make
from sessions.tests.test_document import change_lists, texts


def _sequential(changes, log):
    """The reference: transform over each accepted list in turn, from change lists."""
    result = document.normalize(changes, None)
    for accepted in log:
        result = document.transform(result, accepted)
    return result


class TestTransformOverLogInSections:
    @given(data=st.data(), text=texts)
    @hypothesis_settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
    def test_same_result_as_transforming_list_by_list(self, data, text):
        """Staying in section form from the first accepted list to the last changes no result."""
        mine = data.draw(change_lists(text))
        log, current = [], text
        for _ in range(data.draw(st.integers(0, 4))):
            accepted = data.draw(change_lists(current))
            log.append(document.normalize(accepted, None))
            current = document.apply(current, accepted)
        fast = document.transform_over_log(mine, log, length=document.utf16_len(text))
        assert fast == _sequential(mine, log)
        assert document.apply(current, fast) == document.apply(current, _sequential(mine, log))

    def test_changes_beyond_the_length_are_refused(self):
        """The stated length is checked, not trusted."""
        with pytest.raises(document.ChangeError):
            document.transform_over_log([{"from": 5, "to": 6, "insert": ""}], [], length=3)


class TestMaxChanges:
    def test_more_changes_than_the_setting_is_invalid(self, settings):
        """A delta with more than WS_MAX_CHANGES changes is refused at the edge."""
        settings.WS_MAX_CHANGES = 3
        changes = [{"from": i, "to": i, "insert": "x"} for i in range(4)]
        with pytest.raises(messages.MessageError, match="At most 3 changes"):
            messages.parse_code_update({"changes": changes, "version": 0})
        assert messages.parse_code_update({"changes": changes[:3], "version": 0}).changes == changes[:3]

    def test_default_is_far_below_the_attack(self):
        """The default allows a multi-cursor edit, not a 10,000-change message."""
        from django.conf import settings

        assert 100 <= settings.WS_MAX_CHANGES <= 1000


def _versions(session_id, count):
    for i in range(count):
        snapshot_make(session_id, f"v{i}\n" + "x" * 100)


@pytest.mark.django_db(transaction=True)
class TestRebaseWork:
    def test_changes_times_versions_behind_over_the_bound_must_resync(self, settings):
        """A delta whose changes x versions behind exceed OT_MAX_REBASE_WORK gets RESYNC, changing nothing."""
        settings.OT_MAX_REBASE_WORK = 100
        session = session_make()
        base = InterviewSession.objects.get(pk=session.id).version
        _versions(session.id, 30)
        before = InterviewSession.objects.get(pk=session.id)
        changes = [{"from": i, "to": i, "insert": "y"} for i in range(0, 8, 2)]  # 4 x 30 > 100
        with pytest.raises(ResyncRequired) as resync:
            code_change_apply(session_id=session.id, change=CodeChange(changes=changes, base_version=base))
        after = InterviewSession.objects.get(pk=session.id)
        assert (after.code, after.version) == (before.code, before.version)
        assert (resync.value.code, resync.value.version) == (before.code, before.version)
        # The same delta closer to the present is rebased and applied.
        result = code_change_apply(
            session_id=session.id, change=CodeChange(changes=changes, base_version=before.version - 20)
        )
        assert isinstance(result, CodeChangeResult)
        assert result.version == before.version + 1

    def test_a_long_log_must_resync(self, settings):
        """The changes of the versions rebased over count too: a huge log is not decoded and walked."""
        settings.OT_MAX_REBASE_WORK = 50
        session = session_make(code="y" * 200)
        base = InterviewSession.objects.get(pk=session.id).version
        wide = [{"from": i, "to": i, "insert": "z"} for i in range(0, 60, 2)]
        code_change_apply(session_id=session.id, change=CodeChange(changes=wide[:30], base_version=base))
        code_change_apply(session_id=session.id, change=CodeChange(changes=wide[:30], base_version=base + 1))
        one = CodeChange(changes=[{"from": 0, "to": 0, "insert": "q"}], base_version=base)
        with pytest.raises(ResyncRequired):
            code_change_apply(session_id=session.id, change=one)

    def test_a_round_defers_work_past_its_budget(self, settings):
        """Changes past a round's work budget are deferred unchanged (later ones of their session too)."""
        settings.OT_MAX_REBASE_WORK = 1000
        a, b = session_make(code="y" * 200), session_make()
        base_a = InterviewSession.objects.get(pk=a.id).version
        base_b = InterviewSession.objects.get(pk=b.id).version
        _versions(a.id, 10)
        heavy = [{"from": i, "to": i, "insert": "h"} for i in range(0, 100, 2)]  # 50 x 10 = 500 units
        submissions = [
            (a.id, CodeChange(changes=heavy, base_version=base_a)),
            (a.id, CodeChange(changes=heavy, base_version=base_a)),
            (a.id, CodeChange(code="full text after the deferred one")),
            (b.id, CodeChange(changes=[{"from": 0, "to": 0, "insert": "b"}], base_version=base_b)),
        ]
        with rebase_work_budget(600):
            results = code_changes_apply(submissions=submissions, notify=False)
        assert isinstance(results[0], CodeChangeResult)
        assert isinstance(results[1], Deferred)
        assert isinstance(results[2], Deferred)
        # A cheap change of another session still fits in what the round has left.
        assert isinstance(results[3], CodeChangeResult)
        assert InterviewSession.objects.get(pk=a.id).version == base_a + 11
        assert InterviewSession.objects.get(pk=b.id).version == base_b + 1


class TestWriterTurns:
    async def test_deferred_changes_go_first_in_their_queue_and_served_sessions_go_last(self):
        """A session served in a round waits behind the others next round; deferred changes keep their order."""
        writer = DocumentWriter()
        writer.task.cancel()
        # From four connections: a connection's newer full text would supersede its older one.
        subs = {name: Submission(name[0], CodeChange(code=name), f"reply-{name}") for name in ("a1", "a2", "a3", "b1")}
        for name in ("a1", "a2", "a3", "b1"):
            writer.submit(subs[name])
        batch = writer._take_round()
        assert [s.change.code for s in batch] == ["a1", "a2", "a3", "b1"]
        done = writer._settle_round(batch, ["ok", Deferred(), Deferred(), Deferred()])
        assert [s.change.code for s, _ in done] == ["a1"]
        assert list(writer.pending) == ["b", "a"]
        assert [s.change.code for s in writer._take_round()] == ["b1", "a2", "a3"]


# --- The attack of issue 8 against the real server ---------------------------------------------


@pytest.fixture
def attack_server(tmp_path):
    with RunningServer(tmp_path, env={"WS_RATE_LIMIT_PER_SECOND": "1000", "WS_RATE_LIMIT_BURST": "1000"}) as server:
        yield server


async def test_an_expensive_delta_does_not_stall_another_session(attack_server):
    """The issue's attack (10,000 changes based 300 versions back, made with REST saves) and the
    largest deltas the bounds let through, sent without pause, leave another session's acks fast."""
    server = attack_server
    attacker = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {})
    victim = await asyncio.to_thread(http_json, f"{server.url}/api/sessions", "POST", {})
    code_url = f"{server.url}/api/sessions/{attacker['sessionId']}/code"
    body = "".join(f"line {i:06d}\n" for i in range(2_000))  # 24 KB
    await asyncio.to_thread(http_json, code_url, "POST", {"code": body})
    base = (await asyncio.to_thread(http_json, code_url))["version"]
    for i in range(300):
        await asyncio.to_thread(http_json, code_url, "POST", {"code": body + f"save {i}\n"})
    attack = [{"from": i * 2, "to": i * 2 + 1, "insert": "Q" * 40} for i in range(10_000)]
    legal = [{"from": i * 2, "to": i * 2 + 1, "insert": "Q"} for i in range(1000)]

    ws_base = server.ws_url + "/ws/sessions/"
    async with (
        connect(ws_base + attacker["sessionId"], max_size=None) as bad,
        connect(ws_base + victim["sessionId"]) as good,
    ):
        await next_message(bad, "welcome")
        version = (await next_message(good, "welcome"))["data"]["version"]
        await bad.send(json.dumps({"type": "join", "userId": "mallory", "data": {}}))
        await good.send(json.dumps({"type": "join", "userId": "victor", "data": {}}))

        answered = {"resync": 0, "invalid": 0, "ack": 0, "version": base}
        answer = asyncio.Event()

        async def read_attack_answers():
            async for frame in bad:
                message = json.loads(frame)
                if message["type"] == "code-ack":
                    answered["ack"] += 1
                    answered["version"] = max(answered["version"], message["data"]["version"])
                elif message["type"] == "error":
                    kind = message["data"]["code"]
                    answered["resync" if kind == "RESYNC_REQUIRED" else "invalid"] += 1
                    answered["version"] = max(answered["version"], message["data"].get("version", 0))
                else:
                    continue
                answer.set()

        reader = asyncio.ensure_future(read_attack_answers())

        async def victim_types(seqs) -> list[float]:
            """The victim types one character per seq; how long each ack took."""
            nonlocal version
            times = []
            for seq in seqs:
                started = time.perf_counter()
                data = {"changes": [{"from": 0, "to": 0, "insert": "k"}], "version": version, "seq": seq}
                await good.send(json.dumps({"type": "code-update", "data": data}))
                version = (await next_message(good, "code-ack"))["data"]["version"]
                times.append(time.perf_counter() - started)
            return times

        # Before: the victim's ack times with nobody else busy.
        quiet = await victim_types(range(1, 21))

        stop = asyncio.Event()

        async def attack_loop():
            # The message, then the costliest ones the bounds accept (1,000 changes
            # one version of 1,000 changes back: 2,000 units), two in flight at all times,
            # while the victim types.
            await bad.send(json.dumps({"type": "code-update", "data": {"changes": attack, "version": base}}))
            while not stop.is_set():
                current = answered["version"]
                expected = answered["ack"] + answered["resync"] + 2
                for _ in range(2):  # the second one is one version behind when its turn comes
                    data = {"changes": legal, "version": max(current, base)}
                    await bad.send(json.dumps({"type": "code-update", "data": data}))
                while answered["ack"] + answered["resync"] < expected and not stop.is_set():
                    answer.clear()
                    await answer.wait()

        attacking = asyncio.ensure_future(attack_loop())
        try:
            await answer.wait()
            served_before = answered["ack"]
            busy = await victim_types(range(21, 321))
            served = answered["ack"] - served_before
        finally:
            stop.set()
            answer.set()
            await attacking
            reader.cancel()
    busy.sort()
    p99 = busy[int(len(busy) * 0.99) - 1]
    print(f"victim ack: quiet median {statistics.median(quiet) * 1000:.1f} ms, under attack p99 {p99 * 1000:.1f} ms,")
    print(f"slowest {[round(b * 1000) for b in busy[-5:]]} ms; attacker: {served} costly deltas applied meanwhile")
    # A stall is what this guards against (before: the attack held every session for 13-48 s,
    # and the victim's p99 was 274 ms with a worst of 5 s). The p99 itself (28-51 ms here, the
    # issue's target is 100 ms) swings with whatever else the machine runs, so it is reported,
    # not asserted: no single ack may wait a second.
    assert busy[-1] < 1.0
    assert answered["invalid"] >= 1  # the 10,000-change message: over WS_MAX_CHANGES
    assert answered["resync"] >= 1  # 1,000 changes 300 versions back: over OT_MAX_REBASE_WORK
    # The costly deltas the bounds let through were being applied while the victim typed.
    assert served >= 10

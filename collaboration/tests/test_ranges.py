"""Integers at the edge: every number of the protocol lies in 0..2^53-1 (what JavaScript holds exactly)."""

import json

import pytest
from channels.db import database_sync_to_async

from collaboration import messages
from collaboration.messages import MAX_INT, MessageError
from collaboration.tests.helpers import close_all, join
from sessions.models import DocumentOperation, InterviewSession, Participant

TOO_BIG = [2**53, 2**63, 2**64, 2**70]


def delta(version=1, seq=None, **change) -> dict:
    data = {"changes": [{"from": 0, "to": 0, "insert": "x", **change}], "version": version}
    if seq is not None:
        data["seq"] = seq
    return data


class TestParse:
    @pytest.mark.parametrize("seq", [*TOO_BIG, -1])
    def test_seq_out_of_range_is_invalid(self, seq):
        """seq beyond 2^53-1 (or negative) is refused before it reaches a 64-bit column."""
        with pytest.raises(MessageError, match="seq"):
            messages.parse_code_update(delta(seq=seq))

    @pytest.mark.parametrize("version", [*TOO_BIG, -1])
    def test_version_out_of_range_is_invalid(self, version):
        with pytest.raises(MessageError, match="version"):
            messages.parse_code_update(delta(version=version))

    @pytest.mark.parametrize(("key", "value"), [("from", 2**53), ("to", 2**70), ("from", -1), ("to", -5), ("to", 1.0)])
    def test_offsets_out_of_range_are_invalid(self, key, value):
        with pytest.raises(MessageError, match=key):
            messages.parse_code_update(delta(**{key: value}))

    @pytest.mark.parametrize("change", [5, {"from": 0, "insert": 3}, {"to": 1}])
    def test_malformed_changes_are_invalid(self, change):
        with pytest.raises(MessageError):
            messages.parse_code_update({"changes": [change], "version": 0})

    @pytest.mark.parametrize(("line", "column"), [(2**70, 0), (0, 2**53), (-1, 0)])
    def test_cursor_out_of_range_is_invalid(self, line, column):
        with pytest.raises(MessageError, match="line and column"):
            messages.parse_cursor({"line": line, "column": column})

    def test_numbers_in_a_selection_must_be_exact(self):
        with pytest.raises(MessageError, match="selection"):
            messages.parse_cursor({"line": 0, "column": 0, "selection": {"anchor": 2**70, "head": 0}})
        assert messages.parse_cursor({"line": 0, "column": 0, "selection": {"ranges": [{"anchor": -(2**53) + 1}]}})

    @pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
    def test_numbers_json_cannot_carry_are_invalid(self, number):
        """Python reads NaN, Infinity and overflowing floats; echoed to a browser they would break its JSON.parse."""
        text = '{"type": "cursor-position", "data": {"line": 0, "column": 0, "selection": {"anchor": NUMBER}}}'
        text = text.replace("NUMBER", number)
        with pytest.raises(MessageError, match="JSON"):
            messages.parse(text)

    def test_the_largest_exact_integers_pass(self):
        """2^53-1 is accepted wherever an integer is."""
        update = messages.parse_code_update(delta(version=MAX_INT, seq=MAX_INT, to=MAX_INT))
        assert (update.version, update.seq) == (MAX_INT, MAX_INT)
        assert messages.parse_cursor({"line": MAX_INT, "column": MAX_INT}) == {"line": MAX_INT, "column": MAX_INT}


@pytest.mark.django_db(transaction=True)
class TestOverASocket:
    @pytest.mark.parametrize(
        "message",
        [
            {"type": "code-update", "data": delta(seq=2**63)},
            {"type": "code-update", "data": delta(seq=2**64 + 1)},
            {"type": "code-update", "data": delta(seq=2**53)},
            {"type": "code-update", "data": delta(version=2**63)},
            {"type": "code-update", "data": delta(**{"from": 2**63, "to": 2**63})},
            {"type": "cursor-position", "data": {"line": 2**70, "column": 0}},
            {"type": "cursor-position", "data": {"line": 0, "column": 2**53}},
        ],
    )
    async def test_out_of_range_integers_are_invalid_message(self, new_session, open_socket, caplog, message):
        """INVALID_MESSAGE (never INTERNAL_ERROR or a traceback), nothing stored, nothing broadcast."""
        session = await new_session(code="abc")
        watcher, ws = await open_socket(session.id), await open_socket(session.id)
        await join(ws, "u")
        await join(watcher, "w")
        await ws.send_to(text_data=json.dumps(message))
        while (answer := await ws.receive_json_from(timeout=5))["type"] == "user-joined":
            pass
        assert answer["type"] == "error"
        assert answer["data"]["code"] == "INVALID_MESSAGE"
        # A valid cursor after it: the watcher's first cursor-position must be this one.
        await ws.send_json_to({"type": "cursor-position", "data": {"line": 1, "column": 1}})
        while (seen := await watcher.receive_json_from(timeout=5))["type"] != "cursor-position":
            pass
        assert seen["data"] == {"line": 1, "column": 1}
        row = await database_sync_to_async(InterviewSession.objects.get)(pk=session.id)
        assert (row.code, row.version) == ("abc", 1)
        assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]
        await close_all(watcher, ws)

    async def test_the_largest_seq_and_cursor_are_stored(self, new_session, open_socket, settings):
        """seq and line/column of 2^53-1 are kept as sent."""
        settings.CURSOR_STORE_INTERVAL_SECONDS = 0
        session = await new_session(code="abc")
        ws = await open_socket(session.id)
        await join(ws, "u")
        await ws.send_json_to({"type": "code-update", "data": delta(seq=MAX_INT)})
        while (ack := await ws.receive_json_from(timeout=5))["type"] != "code-ack":
            pass
        assert ack["data"] == {"version": 2, "seq": MAX_INT}
        seq = await database_sync_to_async(lambda: DocumentOperation.objects.get(session=session, version=2).seq)()
        assert seq == MAX_INT
        cursor = {"line": MAX_INT, "column": MAX_INT}
        await ws.send_json_to({"type": "cursor-position", "data": cursor})
        await ws.disconnect()  # stores the pending cursor
        stored = await database_sync_to_async(lambda: Participant.objects.get(session=session).cursor_position)()
        assert stored == cursor

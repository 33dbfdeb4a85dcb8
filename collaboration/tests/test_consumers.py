"""The WebSocket protocol through Channels' WebsocketCommunicator and the real ASGI app."""

import asyncio
import json
import uuid

import pytest
from channels.db import database_sync_to_async

from collaboration.tests.helpers import close_all, join, open_joined, play, receive_type, settle
from collaboration.tests.otclient import OTClient, boundaries
from interview.asgi import application
from interview.testing import PatientCommunicator, eventually
from sessions.models import ChangeType, DocumentOperation, HistoryEntry, InterviewSession, Participant
from sessions.services import session_delete, session_update, snapshot_create
from sessions.tests.factories import snapshot_make

pytestmark = pytest.mark.django_db(transaction=True)


async def error_code(communicator) -> str:
    return (await receive_type(communicator, "error"))["data"]["code"]


def session_row(session_id):
    return InterviewSession.objects.get(pk=session_id)


get_session = database_sync_to_async(session_row)


class TestConnect:
    async def test_welcome_comes_first_with_the_document(self, new_session, open_socket):
        """The first frame is welcome with sessionId, currentCode, language, participants, version."""
        session = await new_session(language="python")
        ws = await open_socket(session.id)
        assert ws.welcome["type"] == "welcome"
        data = ws.welcome["data"]
        assert data["sessionId"] == str(session.id)
        assert data["currentCode"] == session.code
        assert data["language"] == "python"
        assert data["participants"] == []
        assert data["version"] == 0
        assert ws.welcome["timestamp"].endswith("Z")
        await close_all(ws)

    @pytest.mark.parametrize("path", ["00000000-0000-4000-8000-000000000000", "not-a-uuid"])
    async def test_unknown_session_gets_error_and_close_4404(self, transactional_db, open_socket, path):
        """An unknown session answers SESSION_NOT_FOUND and closes with 4404."""
        ws = await open_socket(path, welcome=False)
        message = await ws.receive_json_from()
        assert message["type"] == "error"
        assert message["data"]["code"] == "SESSION_NOT_FOUND"
        assert (await ws.receive_output())["code"] == 4404

    @pytest.mark.parametrize(
        ("origin", "accepted"),
        [
            (None, True),
            ("http://localhost:3001", True),
            ("http://localhost:5173", True),
            ("http://evil.example", False),
            ("null", False),
        ],
    )
    async def test_origin_is_checked_against_the_cors_list(self, new_session, open_socket, origin, accepted):
        """Handshakes from CORS origins' hosts (any port) or without Origin pass; others are refused."""
        session = await new_session()
        ws = await open_socket(session.id, origin=origin, welcome=False)
        assert ws.connected is accepted
        if accepted:
            await close_all(ws)


class TestPresence:
    async def test_join_is_announced_to_others_with_count(self, new_session, open_socket):
        """join makes a participant; the others get user-joined with participantCount."""
        session = await new_session()
        a, b = await open_socket(session.id), await open_socket(session.id)
        await join(a, "u-a", "Ann")
        message = await receive_type(b, "user-joined")
        assert message["userId"] == "u-a"
        assert message["data"] == {"name": "Ann", "participantCount": 1, "role": "candidate"}
        await join(b, "u-b", "Bob")
        assert (await receive_type(a, "user-joined"))["data"]["participantCount"] == 2
        c = await open_socket(session.id)
        assert {p["userId"] for p in c.welcome["data"]["participants"]} == {"u-a", "u-b"}
        await close_all(a, b, c)

    async def test_same_user_twice_is_one_participant_and_leaves_once(self, new_session, open_socket):
        """Two connections of one userId count once; user-left comes when the last one closes."""
        session = await new_session()
        watcher = await open_socket(session.id)
        await join(watcher, "w", "Watcher")
        first = await open_socket(session.id)
        await join(first, "u", "U")
        assert (await receive_type(watcher, "user-joined"))["data"]["participantCount"] == 2
        second = await open_socket(session.id)
        await join(second, "u", "U")
        await first.disconnect()
        # No user-left: the watcher's next message is the pong to a ping sent after the disconnect.
        await watcher.send_json_to({"type": "ping"})
        assert (await watcher.receive_json_from())["type"] == "pong"
        count = await database_sync_to_async(Participant.objects.filter(session=session).count)()
        assert count == 2
        await second.disconnect()
        left = await receive_type(watcher, "user-left")
        assert left["userId"] == "u"
        assert left["data"] == {"participantCount": 1}
        await close_all(watcher)

    @pytest.mark.parametrize(
        "message",
        [
            {"type": "join", "userId": "u\x00", "data": {"name": "x"}},
            {"type": "join", "userId": "u", "data": {"name": "\ud800"}},
            {"type": "join", "userId": "u", "data": {"name": "x" * 101}},
        ],
    )
    async def test_join_with_unstorable_text_is_invalid(self, new_session, open_socket, message):
        """NUL, lone surrogates or an over-long name are INVALID_MESSAGE; the socket stays."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_to(text_data=json.dumps(message))
        assert await error_code(ws) == "INVALID_MESSAGE"
        await ws.send_json_to({"type": "ping"})
        assert (await ws.receive_json_from())["type"] == "pong"
        await close_all(ws)

    async def test_join_needs_a_user_id(self, new_session, open_socket):
        """join without userId is INVALID_MESSAGE."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_json_to({"type": "join", "data": {"name": "x"}})
        assert await error_code(ws) == "INVALID_MESSAGE"
        await close_all(ws)


class TestMessages:
    async def test_ping_gets_pong(self, new_session, open_socket):
        """ping answers pong to the sender."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_json_to({"type": "ping"})
        assert (await ws.receive_json_from())["type"] == "pong"
        await close_all(ws)

    @pytest.mark.parametrize(
        "frame",
        [
            "not json",
            "[1, 2]",
            json.dumps({"type": "dance"}),
            json.dumps({"type": "code-update", "data": {"code": 5}}),
            json.dumps({"type": "code-update", "data": {"changes": [{"from": 0, "to": 0, "insert": "x"}]}}),
            json.dumps({"type": "cursor-position", "data": {"line": "1", "column": 0}}),
            json.dumps({"type": "language-change", "data": {"language": "cobol"}}),
            json.dumps({"type": "ping", "userId": 12}),
            json.dumps({"type": "ping", "data": "x"}),
        ],
    )
    async def test_invalid_frames_are_answered_and_the_connection_stays(self, new_session, open_socket, frame):
        """Bad frames get INVALID_MESSAGE, change nothing, and the socket keeps working."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_to(text_data=frame)
        assert await error_code(ws) == "INVALID_MESSAGE"
        await ws.send_json_to({"type": "ping"})
        assert (await ws.receive_json_from())["type"] == "pong"
        row = await get_session(session.id)
        assert (row.code, row.version, row.language) == (session.code, 0, session.language)
        await close_all(ws)

    async def test_binary_frame_is_invalid(self, new_session, open_socket):
        """Binary frames get INVALID_MESSAGE."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_to(bytes_data=b"\x00\x01")
        assert await error_code(ws) == "INVALID_MESSAGE"
        await close_all(ws)

    async def test_oversized_frame_is_invalid(self, new_session, open_socket, settings):
        """A frame over WS_MAX_MESSAGE_BYTES is INVALID_MESSAGE and changes nothing."""
        settings.WS_MAX_MESSAGE_BYTES = 100
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_json_to({"type": "code-update", "data": {"code": "x" * 200, "changes": []}})
        assert await error_code(ws) == "INVALID_MESSAGE"
        assert (await get_session(session.id)).version == 0
        await close_all(ws)

    async def test_rate_limit_drops_excess_messages(self, new_session, open_socket, settings):
        """Past the per-connection burst, messages get RATE_LIMIT_EXCEEDED and the socket stays."""
        settings.WS_RATE_LIMIT_BURST = 3
        settings.WS_RATE_LIMIT_PER_SECOND = 0.001
        session = await new_session()
        ws = await open_socket(session.id)
        for _ in range(5):
            await ws.send_json_to({"type": "ping"})
        types = [(await ws.receive_json_from())["type"] for _ in range(5)]
        assert types.count("pong") == 3
        assert types.count("error") == 2
        await close_all(ws)

    async def test_idle_connection_is_closed(self, new_session, open_socket, settings):
        """A connection silent for WS_IDLE_TIMEOUT_SECONDS is closed."""
        settings.WS_IDLE_TIMEOUT_SECONDS = 0.3
        session = await new_session()
        ws = await open_socket(session.id)
        output = await ws.receive_output(timeout=2)
        assert output["type"] == "websocket.close"

    async def test_cursor_is_broadcast_and_stored(self, new_session, open_socket, settings):
        """cursor-position reaches the others with the sender's userId and is stored on the participant."""
        settings.CURSOR_STORE_INTERVAL_SECONDS = 0.05
        session = await new_session()
        a, b = await open_socket(session.id), await open_socket(session.id)
        await join(a, "ua")
        cursor = {"line": 3, "column": 7, "selection": {"anchor": 1, "head": 4}}
        await a.send_json_to({"type": "cursor-position", "data": cursor})
        message = await receive_type(b, "cursor-position")
        assert message["userId"] == "ua"
        assert message["data"] == cursor
        # Stored by a task CURSOR_STORE_INTERVAL_SECONDS later: wait for the row to say so.
        stored = database_sync_to_async(lambda: Participant.objects.get(user_id="ua").cursor_position)
        assert await eventually(stored, cursor) == cursor
        await close_all(a, b)

    async def test_language_change_is_applied_announced_and_recorded(self, new_session, open_socket):
        """language-change updates the session, tells the others, and records history."""
        session = await new_session()
        a, b = await open_socket(session.id), await open_socket(session.id)
        await join(a, "ua")
        await a.send_json_to({"type": "language-change", "data": {"language": "java"}})
        message = await receive_type(b, "language-changed")
        assert message["data"] == {"language": "java"}
        assert (await get_session(session.id)).language == "java"
        entry = await database_sync_to_async(lambda: HistoryEntry.objects.get(session_id=session.id))()
        assert (entry.change_type, entry.user_id) == (ChangeType.LANGUAGE_CHANGE, "ua")
        await close_all(a, b)


class TestEditing:
    async def test_full_text_update_as_the_existing_client_sends_it(self, new_session, open_socket):
        """A full-text update with changes [] and no version reaches others with full code, changes, version."""
        session = await new_session()
        a, b = await open_joined(open_socket, session.id, "ua", "ub")
        new_code = session.code + "let x = 1;\n"
        await a.send_json_to({"type": "code-update", "userId": "ua", "data": {"code": new_code, "changes": []}})
        update = await receive_type(b, "code-update")
        assert update["userId"] == "ua"
        assert update["data"]["code"] == new_code
        assert update["data"]["version"] == 1
        assert update["data"]["changes"] == [
            {"from": len(session.code), "to": len(session.code), "insert": "let x = 1;\n"}
        ]
        ack = await receive_type(a, "code-ack")
        assert ack["data"]["version"] == 1
        row = await get_session(session.id)
        assert (row.code, row.version) == (new_code, 1)
        await close_all(a, b)

    async def test_concurrent_deltas_are_transformed(self, new_session, open_socket):
        """Two deltas on the same version both apply; the later is rebased over the earlier."""
        session = await new_session(code="abc")
        a, b = await open_joined(open_socket, session.id, "ua", "ub")
        base = a.welcome["data"]["version"]
        await a.send_json_to(
            {"type": "code-update", "data": {"changes": [{"from": 0, "to": 0, "insert": "X"}], "version": base}}
        )
        assert (await receive_type(a, "code-ack"))["data"]["version"] == base + 1
        await b.send_json_to(
            {"type": "code-update", "data": {"changes": [{"from": 3, "to": 3, "insert": "Y"}], "version": base}}
        )
        first = await receive_type(b, "code-update")
        assert first["data"]["version"] == base + 1
        assert (await receive_type(b, "code-ack"))["data"]["version"] == base + 2
        second = await receive_type(a, "code-update")
        assert second["data"] == {
            "code": "XabcY",
            "changes": [{"from": 4, "to": 4, "insert": "Y"}],
            "version": base + 2,
        }
        assert (await get_session(session.id)).code == "XabcY"
        await close_all(a, b)

    async def test_astral_offsets_count_utf16_units(self, new_session, open_socket):
        """Offsets after an emoji count it as two units, as a browser does."""
        session = await new_session(code="😀b")
        ws = await open_socket(session.id)
        await join(ws, "u")
        version = ws.welcome["data"]["version"]
        await ws.send_json_to(
            {"type": "code-update", "data": {"changes": [{"from": 2, "to": 3, "insert": "c"}], "version": version}}
        )
        await receive_type(ws, "code-ack")
        assert (await get_session(session.id)).code == "😀c"
        await close_all(ws)

    @pytest.mark.parametrize(
        "changes",
        [
            [{"from": 0, "to": 99, "insert": ""}],
            [{"from": 0, "to": 2, "insert": ""}, {"from": 1, "to": 3, "insert": "x"}],
            [{"from": 1, "to": 1, "insert": "x"}],  # inside the emoji's surrogate pair
            [{"from": -1, "to": 0, "insert": ""}],
            [{"from": 0, "to": 0, "insert": "a\x00b"}],
        ],
    )
    async def test_bad_ranges_are_invalid_and_change_nothing(self, new_session, open_socket, changes):
        """Out of bounds, overlapping or pair-splitting ranges are INVALID_MESSAGE; nothing changes."""
        session = await new_session(code="😀abc")
        ws = await open_socket(session.id)
        await join(ws, "u")
        version = ws.welcome["data"]["version"]
        await ws.send_json_to({"type": "code-update", "data": {"changes": changes, "version": version}})
        assert await error_code(ws) == "INVALID_MESSAGE"
        row = await get_session(session.id)
        assert (row.code, row.version) == ("😀abc", version)
        await close_all(ws)

    async def test_resent_seq_is_acknowledged_not_applied_twice(self, new_session, open_socket):
        """A delta resent with the same userId and seq (after a reconnect) is acked again only."""
        session = await new_session(code="")
        ws = await open_socket(session.id)
        await join(ws, "typist")
        version = ws.welcome["data"]["version"]
        delta = {
            "type": "code-update",
            "data": {"changes": [{"from": 0, "to": 0, "insert": "a"}], "version": version, "seq": 1},
        }
        await ws.send_json_to(delta)
        first = await receive_type(ws, "code-ack")
        await ws.disconnect()
        again = await open_socket(session.id)
        await join(again, "typist")
        await again.send_json_to(delta)
        second = await receive_type(again, "code-ack")
        assert second["data"]["version"] == first["data"]["version"] == version + 1
        assert second["data"]["seq"] == 1
        row = await get_session(session.id)
        assert (row.code, row.version) == ("a", version + 1)
        await close_all(again)

    async def test_too_old_base_version_must_resync(self, new_session, open_socket, settings):
        """A delta based further back than the kept changes gets RESYNC_REQUIRED with code and version."""
        settings.OT_MAX_REBASE_VERSIONS = 2
        session = await new_session()
        ws = await open_socket(session.id)
        await join(ws, "u")
        for i in range(3):
            await database_sync_to_async(snapshot_make)(session.id, f"v{i}")
        await ws.send_json_to(
            {"type": "code-update", "data": {"changes": [{"from": 0, "to": 0, "insert": "x"}], "version": 0}}
        )
        error = await receive_type(ws, "error")
        assert error["data"]["code"] == "RESYNC_REQUIRED"
        assert error["data"]["currentCode"] == "v2"
        assert error["data"]["version"] == 3
        assert (await get_session(session.id)).code == "v2"
        await close_all(ws)

    async def test_edits_are_logged_and_history_is_coalesced(self, new_session, open_socket):
        """Every change is in the operation log; a burst of typing is one history entry with a count."""
        session = await new_session()
        ws = await open_socket(session.id)
        await join(ws, "typist")
        code = session.code
        for ch in "hello":
            code += ch
            await ws.send_json_to({"type": "code-update", "data": {"code": code, "changes": []}})
            await receive_type(ws, "code-ack")
        ops = await database_sync_to_async(lambda: list(DocumentOperation.objects.filter(session=session)))()
        assert [op.version for op in ops] == [1, 2, 3, 4, 5]
        assert all(op.user_id == "typist" for op in ops)
        entries = await database_sync_to_async(lambda: list(HistoryEntry.objects.filter(session=session)))()
        assert len(entries) == 1
        assert (entries[0].change_type, entries[0].count) == (ChangeType.EDIT, 5)
        await close_all(ws)

    async def test_three_ot_clients_converge_under_concurrency(self, new_session, open_socket):
        """Three clients typing concurrently with OT end with the server's text, astral characters included."""
        import random

        rng = random.Random(7)
        session = await new_session(code="start😀\n")
        sockets = [await open_socket(session.id) for _ in range(3)]
        clients = [OTClient.from_welcome(s.welcome) for s in sockets]
        for i, ws in enumerate(sockets):
            await join(ws, f"user{i}")

        async def pump(ws, client, until_idle):
            # Mixes reading into the typing; a timed-out receive would cancel the application.
            while not await ws.receive_nothing(timeout=until_idle):
                await play(ws, client, await ws.receive_json_from())

        def random_edit(text):
            bounds = boundaries(text)
            start = rng.choice(bounds)
            end = rng.choice([b for b in bounds if b >= start][:4])
            return [{"from": start, "to": end, "insert": rng.choice(["a", "𝄞", "😀x", "", "\n"])}]

        edits = 0
        for _round in range(15):
            for ws, client in zip(sockets, clients, strict=True):
                edits += 1
                outgoing = client.edit(random_edit(client.text))
                if outgoing:
                    await ws.send_json_to({"type": "code-update", "data": outgoing})
            await asyncio.gather(*(pump(ws, c, 0.02) for ws, c in zip(sockets, clients, strict=True)))
        final = sockets[0].welcome["data"]["version"] + edits
        # Every edit takes one version: done when all are acknowledged and seen.
        await asyncio.gather(*(settle(ws, c, final) for ws, c in zip(sockets, clients, strict=True)))
        row = await get_session(session.id)
        assert all(c.inflight is None and not c.queued for c in clients)
        assert [c.text for c in clients] == [row.code] * 3
        assert {c.version for c in clients} == {row.version}
        await close_all(*sockets)


class TestRestReachesSockets:
    async def test_rest_save_reaches_connected_clients(self, new_session, open_socket):
        """A REST code save sends code-update with the full text to connected clients."""
        session = await new_session()
        ws = await open_socket(session.id)
        await database_sync_to_async(snapshot_create)(session_id=session.id, code="saved\n")
        update = await receive_type(ws, "code-update")
        assert update["data"]["code"] == "saved\n"
        assert update["data"]["version"] == 1
        await close_all(ws)

    async def test_rest_language_change_reaches_clients(self, new_session, open_socket):
        """A REST language change sends language-changed."""
        session = await new_session()
        ws = await open_socket(session.id)
        await database_sync_to_async(session_update)(session_id=session.id, language="cpp")
        assert (await receive_type(ws, "language-changed"))["data"] == {"language": "cpp"}
        await close_all(ws)

    async def test_deleting_the_session_closes_clients_with_4404(self, new_session, open_socket):
        """Deleting over REST sends SESSION_NOT_FOUND and closes with 4404."""
        session = await new_session()
        ws = await open_socket(session.id)
        await database_sync_to_async(session_delete)(session_id=session.id)
        assert await error_code(ws) == "SESSION_NOT_FOUND"
        assert (await ws.receive_output(timeout=2))["code"] == 4404

    async def test_expiry_closes_clients_with_4404(self, new_session, open_socket):
        """A session that expires while connected tells its clients and closes them."""
        from datetime import timedelta

        from django.utils import timezone

        session = await new_session()
        session.expires_at = timezone.now() + timedelta(seconds=1)
        await database_sync_to_async(session.save)()
        ws = await open_socket(session.id, welcome=False)
        # The welcome comes first and the expiry a second later; on a loaded machine the session
        # may be gone by the time it connects: either way the client is told and closed.
        first = await ws.receive_json_from()
        if first["type"] == "welcome":
            assert await error_code(ws) == "SESSION_NOT_FOUND"
        else:
            assert first["data"]["code"] == "SESSION_NOT_FOUND"
        assert (await ws.receive_output(timeout=2))["code"] == 4404

    async def test_participants_endpoint_reflects_live_connections(self, new_session, open_socket, client):
        """GET participants and activeParticipants follow joins and disconnects."""
        session = await new_session()
        ws = await open_socket(session.id)
        await join(ws, "live", "Live")
        await ws.send_json_to({"type": "ping"})
        await receive_type(ws, "pong")
        get = database_sync_to_async(client.get)
        body = (await get(f"/api/sessions/{session.id}/participants")).json()
        assert [p["userId"] for p in body["participants"]] == ["live"]
        assert (await get(f"/api/sessions/{session.id}")).json()["activeParticipants"] == 1
        await ws.disconnect()  # returns once the consumer's disconnect (the leave included) has run
        assert (await get(f"/api/sessions/{session.id}")).json()["activeParticipants"] == 0


async def test_communicator_for_a_path_outside_the_routes_is_refused(transactional_db):
    """Only /ws/sessions/{id} is a WebSocket route; any other path is refused at the handshake."""
    for path in ["/ws/other", f"/ws/sessions/{uuid.uuid4()}/extra"]:
        communicator = PatientCommunicator(application, path)
        connected, _ = await communicator.connect()
        assert not connected
        await communicator.disconnect()

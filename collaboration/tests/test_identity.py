"""Identity: a connection is the user it joined as; seqs are that user's, and only a resend is deduplicated."""

import asyncio
import json

import pytest
from channels.db import database_sync_to_async

from collaboration.tests.helpers import close_all, get_document, join, receive_type, settle, until_pong
from collaboration.tests.otclient import OTClient
from sessions.models import DocumentOperation, Participant
from sessions.services import session_cache_forget

pytestmark = pytest.mark.django_db(transaction=True)

NOOP = [{"from": 0, "to": 0, "insert": ""}]


def delta(changes, version, seq=None, user_id=None) -> dict:
    message = {"type": "code-update", "data": {"changes": changes, "version": version}}
    if seq is not None:
        message["data"]["seq"] = seq
    if user_id is not None:
        message["userId"] = user_id
    return message


operations = database_sync_to_async(lambda sid: DocumentOperation.objects.filter(session_id=sid).count())


async def two_tabs(open_socket, session_id, user_id="u") -> tuple[list, list[OTClient], int]:
    """Two sockets joined as one user, each with its OT client, and the version they start from."""
    tabs = [await open_socket(session_id), await open_socket(session_id)]
    clients = [OTClient.from_welcome(t.welcome) for t in tabs]
    for tab in tabs:
        await join(tab, user_id)
    return tabs, clients, clients[0].version


class TestBeforeJoin:
    @pytest.mark.parametrize(
        "message",
        [
            delta([{"from": 0, "to": 0, "insert": "x"}], 1, seq=1, user_id="alice"),
            delta([{"from": 0, "to": 0, "insert": "x"}], 1),
            {"type": "code-update", "data": {"code": "replaced", "changes": []}},
            {"type": "language-change", "userId": "alice", "data": {"language": "java"}},
            {"type": "cursor-position", "userId": "alice", "data": {"line": 1, "column": 2}},
        ],
    )
    async def test_edit_cursor_and_language_before_join_are_refused(self, new_session, open_socket, message):
        """Before join, edits, cursors and language changes are INVALID_MESSAGE and change nothing."""
        session = await new_session(code="abc")
        watcher, ws = await open_socket(session.id), await open_socket(session.id)
        await join(watcher, "watcher")
        await receive_type(ws, "user-joined")  # the watcher's, so it cannot arrive later
        before = await get_document(session.id)
        await ws.send_json_to(message)
        assert (await receive_type(ws, "error"))["data"]["code"] == "INVALID_MESSAGE"
        assert await until_pong(ws) == []
        assert await get_document(session.id) == before
        # Whatever the refused message would have sent would come before this.
        await join(ws, "alice")
        await ws.send_json_to({"type": "cursor-position", "data": {"line": 9, "column": 9}})
        seen = [
            m["type"]
            for m in [await receive_type(watcher, "user-joined"), await receive_type(watcher, "cursor-position")]
        ]
        assert seen == ["user-joined", "cursor-position"]
        await close_all(watcher, ws)

    async def test_ping_before_join_is_answered(self, new_session, open_socket):
        """ping needs no join."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_json_to({"type": "ping", "userId": "anyone"})
        assert (await ws.receive_json_from())["type"] == "pong"
        await close_all(ws)

    async def test_a_socket_that_never_joined_cannot_use_alices_seqs(self, new_session, open_socket):
        """The attack: empty deltas as alice (seq 2-5) from a never-joined socket are refused; her seq 2 applies."""
        session = await new_session(code="abc")
        alice, attacker = await open_socket(session.id), await open_socket(session.id)
        await join(alice, "alice", "Alice")
        version = alice.welcome["data"]["version"]
        for seq in range(2, 6):
            await attacker.send_json_to(delta(NOOP, version, seq=seq, user_id="alice"))
            assert (await receive_type(attacker, "error"))["data"]["code"] == "INVALID_MESSAGE"
        await alice.send_json_to(delta([{"from": 3, "to": 3, "insert": "!"}], version, seq=2, user_id="alice"))
        ack = await receive_type(alice, "code-ack")
        assert ack["data"] == {"version": version + 1, "seq": 2}
        assert (await get_document(session.id))[:2] == ("abc!", version + 1)
        await close_all(alice, attacker)


class TestJoinedIdentity:
    async def test_a_message_naming_another_user_is_refused(self, new_session, open_socket):
        """After join, a userId other than the joined one is INVALID_MESSAGE; no userId means the joined user."""
        session = await new_session(code="abc")
        ws = await open_socket(session.id)
        await join(ws, "alice")
        version = ws.welcome["data"]["version"]
        for message in [
            delta([{"from": 0, "to": 0, "insert": "x"}], version, seq=1, user_id="bob"),
            {"type": "cursor-position", "userId": "bob", "data": {"line": 0, "column": 0}},
            {"type": "language-change", "userId": "bob", "data": {"language": "java"}},
            {"type": "ping", "userId": "bob"},
        ]:
            await ws.send_json_to(message)
            assert (await ws.receive_json_from())["data"]["code"] == "INVALID_MESSAGE"
        assert (await get_document(session.id))[1:] == (version, "javascript")
        await ws.send_json_to(delta([{"from": 0, "to": 0, "insert": "x"}], version, seq=1))
        assert (await receive_type(ws, "code-ack"))["data"]["version"] == version + 1
        user = await database_sync_to_async(lambda: DocumentOperation.objects.get(session=session, seq=1).user_id)()
        assert user == "alice"
        await close_all(ws)

    async def test_a_socket_joined_as_alice_cannot_swallow_her_edit(self, new_session, open_socket):
        """Joined as alice too, empty deltas with seq 2-5 are changes of their own; her real seq 2 still applies."""
        session = await new_session(code="abc")
        alice, attacker = await open_socket(session.id), await open_socket(session.id)
        await join(alice, "alice", "Alice")
        await join(attacker, "alice", "Alice")
        version = alice.welcome["data"]["version"]
        for seq in range(2, 6):
            await attacker.send_json_to(delta(NOOP, version, seq=seq, user_id="alice"))
            await receive_type(attacker, "code-ack")
        await alice.send_json_to(delta([{"from": 3, "to": 3, "insert": "!"}], version, seq=2, user_id="alice"))
        assert (await receive_type(alice, "code-ack"))["data"] == {"version": version + 5, "seq": 2}
        assert (await get_document(session.id))[:2] == ("abc!", version + 5)
        await close_all(alice, attacker)

    async def test_two_tabs_of_one_user_with_the_same_seqs_all_apply(self, new_session, open_socket):
        """Two tabs of one userId both count seq from 1 with different edits: every edit applies, all converge."""
        session = await new_session(code="")
        tabs, clients, version = await two_tabs(open_socket, session.id)
        for letters in ("ab", "cd", "ef"):
            for tab, client, letter in zip(tabs, clients, letters, strict=True):
                outgoing = client.edit([{"from": 0, "to": 0, "insert": letter}])
                if outgoing:
                    await tab.send_json_to({"type": "code-update", "data": outgoing})
        await asyncio.gather(*(settle(tab, client, version + 6) for tab, client in zip(tabs, clients, strict=True)))
        code, stored_version, _ = await get_document(session.id)
        assert stored_version == version + 6
        assert sorted(code) == list("abcdef")
        assert [c.text for c in clients] == [code, code]
        await close_all(*tabs)

    async def test_two_tabs_sending_the_identical_request_both_apply(self, new_session, open_socket):
        """The same seq, base and change from two tabs is two changes: the second tab got the first as a broadcast."""
        session = await new_session(code="abc")
        tabs, clients, version = await two_tabs(open_socket, session.id)
        for tab, client in zip(tabs, clients, strict=True):
            await tab.send_json_to({"type": "code-update", "data": client.edit([{"from": 0, "to": 0, "insert": "x"}])})
        await asyncio.gather(*(settle(tab, client, version + 2) for tab, client in zip(tabs, clients, strict=True)))
        assert await get_document(session.id) == ("xxabc", version + 2, "javascript")
        assert [c.text for c in clients] == ["xxabc", "xxabc"]
        await close_all(*tabs)

    @pytest.mark.parametrize("cold_cache", [False, True])
    async def test_a_resend_after_reconnect_is_acknowledged_once_not_applied(
        self, new_session, open_socket, cold_cache
    ):
        """The same request (user, seq, base, changes) on a new connection is acked with its version, not applied."""
        session = await new_session(code="")
        ws = await open_socket(session.id)
        await join(ws, "typist")
        version = ws.welcome["data"]["version"]
        request = delta([{"from": 0, "to": 0, "insert": "a"}], version, seq=1)
        await ws.send_json_to(request)
        assert (await receive_type(ws, "code-ack"))["data"] == {"version": version + 1, "seq": 1}
        await ws.disconnect()
        if cold_cache:
            session_cache_forget(session_id=session.id)
        again = await open_socket(session.id)
        await join(again, "typist")
        for _ in range(2):
            await again.send_json_to(request)
            assert (await receive_type(again, "code-ack"))["data"] == {"version": version + 1, "seq": 1}
        assert (await get_document(session.id))[:2] == ("a", version + 1)
        assert await operations(session.id) == version + 1
        # The next seq is a new change.
        await again.send_json_to(delta([{"from": 1, "to": 1, "insert": "b"}], version + 1, seq=2))
        assert (await receive_type(again, "code-ack"))["data"] == {"version": version + 2, "seq": 2}
        assert (await get_document(session.id))[:2] == ("ab", version + 2)
        await close_all(again)


class TestJoinAgain:
    async def test_joining_again_on_one_connection_is_not_announced_and_updates_the_name(
        self, new_session, open_socket
    ):
        """A second join with the same userId sends no user-joined; the new name is stored, nobody is told."""
        session = await new_session()
        watcher, ws = await open_socket(session.id), await open_socket(session.id)
        await join(watcher, "w")
        await receive_type(ws, "user-joined")  # the watcher's, so it cannot arrive later
        await join(ws, "u", "Old")
        await join(ws, "u", "New")
        assert await until_pong(ws) == []
        # Ordered after anything the second join broadcast.
        await ws.send_json_to({"type": "cursor-position", "data": {"line": 1, "column": 1}})
        seen = []
        while not seen or seen[-1]["type"] != "cursor-position":
            seen.append(await watcher.receive_json_from(timeout=5))
        assert [m["type"] for m in seen] == ["user-joined", "cursor-position"]
        assert seen[0]["data"] == {"name": "Old", "participantCount": 2, "role": "candidate"}
        name = await database_sync_to_async(lambda: Participant.objects.get(session=session, user_id="u").name)()
        assert name == "New"
        await close_all(watcher, ws)

    async def test_joining_as_another_user_on_a_joined_connection_is_refused(self, new_session, open_socket):
        """A connection keeps the identity it joined with: join as someone else is INVALID_MESSAGE, changes nothing."""
        session = await new_session()
        ws = await open_socket(session.id)
        await join(ws, "u")
        await ws.send_to(text_data=json.dumps({"type": "join", "userId": "other", "data": {"name": "O"}}))
        assert (await receive_type(ws, "error"))["data"]["code"] == "INVALID_MESSAGE"
        users = await database_sync_to_async(
            lambda: sorted(
                Participant.objects.filter(session=session, connections__isnull=False).values_list("user_id", flat=True)
            )
        )()
        assert users == ["u"]
        await close_all(ws)

"""Participant roles: a join with the session's owner token is the interviewer's, any other a
candidate's; a bad token refuses the join, and the token is never shown to anyone."""

import json
import logging
import secrets

import pytest
from channels.db import database_sync_to_async

from collaboration.tests.helpers import close_all, join, receive_type, until_pong
from sessions.models import Participant

pytestmark = pytest.mark.django_db(transaction=True)


def stored(session_id) -> dict[str, tuple[str, str]]:
    """Every participant row of the session: userId -> (name, role)."""
    rows = Participant.objects.filter(session_id=session_id).values_list("user_id", "name", "role")
    return {user_id: (name, role) for user_id, name, role in rows}


get_stored = database_sync_to_async(stored)


async def roles_listed(client, session_id) -> dict[str, str]:
    """userId -> role, as GET /participants lists them."""
    response = await database_sync_to_async(client.get)(f"/api/sessions/{session_id}/participants")
    return {p["userId"]: p["role"] for p in response.json()["participants"]}


async def texts_until(communicator, type_: str, user_id: str) -> list[str]:
    """The raw frames a connection receives up to the first `type_` from `user_id` (included)."""
    texts = []
    while True:
        text = await communicator.receive_from(timeout=5)
        texts.append(text)
        message = json.loads(text)
        if message["type"] == type_ and message["userId"] == user_id:
            return texts


class TestInterviewer:
    async def test_a_join_with_the_owner_token_is_the_interviewer_everywhere(self, new_session, open_socket, client):
        """With the owner token: `role: interviewer` in user-joined, a later welcome and /participants."""
        session = await new_session()
        watcher, ada = await open_socket(session.id), await open_socket(session.id)
        await join(watcher, "cara", "Cara")
        await receive_type(ada, "user-joined")  # Cara's, so she joined first
        await join(ada, "ada", "Ada", owner_token=session.owner_token)
        joined = await receive_type(watcher, "user-joined")
        assert joined["userId"] == "ada"
        assert joined["data"] == {"name": "Ada", "participantCount": 2, "role": "interviewer"}
        later = await open_socket(session.id)
        assert later.welcome["data"]["participants"] == [
            {"userId": "cara", "name": "Cara", "role": "candidate"},
            {"userId": "ada", "name": "Ada", "role": "interviewer"},
        ]
        assert await roles_listed(client, session.id) == {"cara": "candidate", "ada": "interviewer"}
        assert await get_stored(session.id) == {"cara": ("Cara", "candidate"), "ada": ("Ada", "interviewer")}
        await close_all(watcher, ada, later)

    @pytest.mark.parametrize("data", [{"name": "Ada"}, {"name": "Ada", "ownerToken": None}], ids=["old-client", "null"])
    async def test_a_join_without_a_token_is_a_candidate_as_before(self, new_session, open_socket, client, data):
        """The existing client's join (`{name}` only; a null token is no token) is a candidate's and works as
        before: announced with its name and count, and the user can edit."""
        session = await new_session(code="abc")
        watcher, ws = await open_socket(session.id), await open_socket(session.id)
        await join(watcher, "watcher")
        await receive_type(ws, "user-joined")
        await ws.send_json_to({"type": "join", "userId": "u1", "data": data})
        joined = await receive_type(watcher, "user-joined")
        assert (joined["userId"], joined["data"]) == ("u1", {"name": "Ada", "participantCount": 2, "role": "candidate"})
        await ws.send_json_to({"type": "code-update", "userId": "u1", "data": {"code": "abcd", "changes": []}})
        update = await receive_type(watcher, "code-update")
        assert (update["userId"], update["data"]["code"]) == ("u1", "abcd")
        later = await open_socket(session.id)
        assert later.welcome["data"]["participants"][1] == {"userId": "u1", "name": "Ada", "role": "candidate"}
        assert await roles_listed(client, session.id) == {"watcher": "candidate", "u1": "candidate"}
        await close_all(watcher, ws, later)


# Tokens a join may not carry: `None` stands for another live session's (real) owner token.
BAD_TOKENS = {
    "wrong": "not-the-owner-token",
    "empty": "",
    "other-session": None,
    "number": 12345,
    "list": ["token"],
    "object": {"token": "x"},
    "true": True,
}


class TestRefused:
    @pytest.mark.parametrize("token", list(BAD_TOKENS.values()), ids=list(BAD_TOKENS))
    async def test_a_bad_owner_token_refuses_the_join(self, new_session, open_socket, client, token):
        """A token that is not a string or not this session's is INVALID_MESSAGE: no participant, no
        user-joined, the connection stays open and unjoined."""
        session = await new_session()
        if token is None:
            token = (await new_session()).owner_token
        watcher, ws = await open_socket(session.id), await open_socket(session.id)
        await join(watcher, "watcher")
        await receive_type(ws, "user-joined")  # the watcher's, so it cannot arrive later
        await ws.send_json_to({"type": "join", "userId": "mallory", "data": {"name": "M", "ownerToken": token}})
        error = await receive_type(ws, "error")
        assert error["data"]["code"] == "INVALID_MESSAGE"
        assert "ownerToken" in error["data"]["message"]
        if isinstance(token, str) and token:
            assert token not in json.dumps(error)
        assert await until_pong(ws) == []
        assert await get_stored(session.id) == {"watcher": ("User", "candidate")}
        assert await roles_listed(client, session.id) == {"watcher": "candidate"}
        # Still not joined: a cursor is refused as before any join.
        await ws.send_json_to({"type": "cursor-position", "data": {"line": 1, "column": 1}})
        assert (await receive_type(ws, "error"))["data"]["code"] == "INVALID_MESSAGE"
        # Whatever the refused join would have sent the watcher would come before this.
        await join(ws, "later", "L")
        joined = await receive_type(watcher, "user-joined")
        assert (joined["userId"], joined["data"]["participantCount"]) == ("later", 2)
        await close_all(watcher, ws)

    @pytest.mark.parametrize("first_token", [False, True], ids=["candidate", "interviewer"])
    async def test_a_bad_token_on_a_joined_connection_changes_nothing(self, new_session, open_socket, first_token):
        """Joining again with a wrong token is INVALID_MESSAGE; the name and role stay as they were."""
        session = await new_session()
        ws = await open_socket(session.id)
        await join(ws, "u", "Old", owner_token=session.owner_token if first_token else None)
        role = "interviewer" if first_token else "candidate"
        assert await until_pong(ws) == []
        assert await get_stored(session.id) == {"u": ("Old", role)}
        await join(ws, "u", "New", owner_token="wrong")
        assert (await receive_type(ws, "error"))["data"]["code"] == "INVALID_MESSAGE"
        assert await until_pong(ws) == []
        assert await get_stored(session.id) == {"u": ("Old", role)}
        await close_all(ws)


class TestEveryJoinSetsTheRole:
    async def test_a_rejoin_without_the_token_makes_a_candidate_again(self, new_session, open_socket, client):
        """On one connection: with the token interviewer, joining again without it candidate, with it again
        interviewer; what /participants and a later welcome show follows."""
        session = await new_session()
        ws = await open_socket(session.id)
        for token, role in [
            (session.owner_token, "interviewer"),
            (None, "candidate"),
            (session.owner_token, "interviewer"),
        ]:
            await join(ws, "ada", "Ada", owner_token=token)
            assert await until_pong(ws) == []
            assert await roles_listed(client, session.id) == {"ada": role}
            later = await open_socket(session.id)
            assert later.welcome["data"]["participants"] == [{"userId": "ada", "name": "Ada", "role": role}]
            await close_all(later)
        await close_all(ws)

    async def test_each_connection_of_a_user_sets_the_role_by_its_join(self, new_session, open_socket):
        """A second tab without the token makes the user a candidate; a reconnect with it, interviewer."""
        session = await new_session()
        first, second = await open_socket(session.id), await open_socket(session.id)
        await join(first, "ada", "Ada", owner_token=session.owner_token)
        assert await until_pong(first) == []
        assert (await get_stored(session.id))["ada"][1] == "interviewer"
        await receive_type(second, "user-joined")  # the first tab's
        await join(second, "ada", "Ada")
        assert await until_pong(second) == []
        assert (await get_stored(session.id))["ada"][1] == "candidate"
        await close_all(first, second)
        watcher = await open_socket(session.id)
        await join(watcher, "watcher")
        again = await open_socket(session.id)
        await join(again, "ada", "Ada", owner_token=session.owner_token)
        joined = await receive_type(watcher, "user-joined")
        assert (joined["userId"], joined["data"]["role"]) == ("ada", "interviewer")
        assert (await get_stored(session.id))["ada"][1] == "interviewer"
        await close_all(watcher, again)


class TestSecrecy:
    async def test_the_token_is_in_no_frame_others_receive_and_in_no_log(
        self, new_session, open_socket, client, caplog
    ):
        """Neither the owner token nor a wrong one appears in what other clients receive (user-joined,
        cursors, a later welcome), in /participants, in the sender's own errors, or in the log."""
        caplog.set_level(logging.DEBUG)
        session = await new_session()
        token, wrong = session.owner_token, secrets.token_urlsafe(32)
        watcher, ada = await open_socket(session.id), await open_socket(session.id)
        await join(watcher, "watcher")
        await receive_type(ada, "user-joined")
        await join(ada, "ada", "Ada", owner_token=token)
        await join(ada, "ada", "Ada", owner_token=wrong)
        await join(ada, "ada", "Ada", owner_token=token)
        await ada.send_json_to({"type": "cursor-position", "data": {"line": 1, "column": 2}})
        seen_by_ada = await until_pong(ada)
        assert [m["data"]["code"] for m in seen_by_ada] == ["INVALID_MESSAGE"]
        seen_by_watcher = await texts_until(watcher, "cursor-position", "ada")
        assert [json.loads(t)["type"] for t in seen_by_watcher] == ["user-joined", "cursor-position"]
        later = await open_socket(session.id, welcome=False)
        welcome = await later.receive_from()
        response = await database_sync_to_async(client.get)(f"/api/sessions/{session.id}/participants")
        assert await roles_listed(client, session.id) == {"watcher": "candidate", "ada": "interviewer"}
        for text in [*seen_by_watcher, welcome, response.content.decode()]:
            assert token not in text
            assert wrong not in text
            assert '"ownerToken"' not in text
        own = json.dumps(seen_by_ada)
        assert token not in own
        assert wrong not in own
        assert token not in caplog.text
        assert wrong not in caplog.text
        await close_all(watcher, ada, later)

"""Ending a session: its REST answers, and a client connected over a WebSocket when it ends."""

import uuid

import pytest
from channels.db import database_sync_to_async

from sessions.exceptions import SessionNotFound
from sessions.lifecycle import session_end
from sessions.tests.factories import populate
from sessions.tests.helpers import rows


@pytest.mark.django_db
class TestSessionEnd:
    def test_ended_session_answers_404(self, api):
        """After session_end the session's endpoints answer 404 SESSION_NOT_FOUND."""
        session = populate()
        assert api.get(f"/api/sessions/{session.id}").status_code == 200
        session_end(session_id=session.id)
        for path in ("", "/code", "/history"):
            response = api.get(f"/api/sessions/{session.id}{path}")
            assert response.status_code == 404
            assert response.json()["error"] == "SESSION_NOT_FOUND"
        assert rows(session.id)["snapshots"] == 1  # ended, not deleted

    @pytest.mark.parametrize("which", ["expired", "unknown", "malformed"])
    def test_ending_a_session_that_is_not_live_raises(self, which):
        """Ending an expired, unknown or malformed id raises SessionNotFound."""
        session_id = {
            "expired": lambda: populate(expired_hours_ago=1).id,
            "unknown": uuid.uuid4,
            "malformed": lambda: "not-a-uuid",
        }[which]()
        with pytest.raises(SessionNotFound):
            session_end(session_id=session_id)


@pytest.mark.django_db(transaction=True)
class TestSessionEndOverWebSocket:
    async def test_connected_client_gets_session_not_found_and_4404(self, new_session, open_socket, client):
        """A client connected when its session is ended gets SESSION_NOT_FOUND, then close code 4404."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_json_to({"type": "join", "userId": "u1", "data": {"name": "U1"}})

        await database_sync_to_async(session_end)(session_id=session.id)

        while True:
            message = await ws.receive_json_from(timeout=2)
            if message["type"] == "error":
                break
        assert message["data"]["code"] == "SESSION_NOT_FOUND"
        assert (await ws.receive_output(timeout=2))["code"] == 4404
        response = await database_sync_to_async(client.get)(f"/api/sessions/{session.id}")
        assert response.status_code == 404

"""Fixtures shared by every app's tests."""

import pytest


@pytest.fixture
def api():
    """A DRF test client that sends JSON."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.default_format = "json"
    return client


@pytest.fixture
def make_session(api, db):
    """Create a session over the API and return its JSON."""

    def make(**body):
        response = api.post("/api/sessions", body, format="json")
        assert response.status_code == 201, response.content
        return response.json()

    return make


@pytest.fixture(scope="session")
def live_server_process(tmp_path_factory):
    """The real server, started as `make run` starts it, shared by the tests that need one."""
    from interview.testing import RunningServer

    server = RunningServer(tmp_path_factory.mktemp("server")).start()
    yield server
    server.stop()


@pytest.fixture
def new_session(transactional_db):
    """Create a session from async code."""
    from channels.db import database_sync_to_async

    from sessions.services import session_create

    async def make(**kwargs):
        return await database_sync_to_async(session_create)(**kwargs)

    return make


@pytest.fixture
def open_socket():
    """Open a WebSocket (Channels' communicator on the real ASGI app) and read its welcome."""
    from channels.testing import WebsocketCommunicator

    from interview.asgi import application

    async def open_(session_id, *, origin: str | None = None, welcome: bool = True):
        headers = [(b"origin", origin.encode())] if origin else []
        communicator = WebsocketCommunicator(application, f"/ws/sessions/{session_id}", headers=headers)
        connected, code = await communicator.connect()
        communicator.connected = connected
        communicator.close_code = code
        if connected and welcome:
            communicator.welcome = await communicator.receive_json_from()
        return communicator

    return open_


@pytest.fixture(autouse=True)
def _generous_rate_limits(settings):
    """Tests share one client address; only the tests of rate limits set real ones."""
    from django.core.cache import cache

    settings.RATE_LIMITS = {
        "session_create": "100000/minute",
        "code_save": "100000/minute",
        "execution": "100000/minute",
    }
    cache.clear()

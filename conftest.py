"""Fixtures shared by every app's tests."""

import pytest
from rest_framework.test import APIClient


@pytest.fixture
def api():
    """A DRF test client that sends JSON."""
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

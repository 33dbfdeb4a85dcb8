"""Fixtures shared by every app's tests."""

import contextlib
import functools
import os
import re
import tempfile
from pathlib import Path

import pytest

# The test database file of each test process (settings: DATABASES TEST NAME).
_TEST_DB = re.compile(r"^interview-test-(\d+)\.sqlite3")


def _remove_database_files(name: str) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        with contextlib.suppress(FileNotFoundError):
            os.remove(name + suffix)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_databases_of_dead_runs() -> None:
    """A killed run leaves its file (and WAL) behind; a later run clears them."""
    for path in Path(tempfile.gettempdir()).glob("interview-test-*.sqlite3*"):
        match = _TEST_DB.match(path.name)
        if match and not _process_alive(int(match.group(1))):
            with contextlib.suppress(OSError):
                path.unlink()


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """Start each run on a fresh SQLite file: no leftover database, WAL or shared memory."""
    from django.conf import settings

    names = [
        db["TEST"]["NAME"]
        for db in settings.DATABASES.values()
        if db["ENGINE"] == "django.db.backends.sqlite3" and db.get("TEST", {}).get("NAME")
    ]
    _remove_databases_of_dead_runs()
    for name in names:
        _remove_database_files(name)
    yield
    for name in names:
        _remove_database_files(name)


@pytest.fixture
def api():
    """A DRF test client that sends JSON."""
    from rest_framework.test import APIClient

    client = APIClient()
    client.default_format = "json"
    return client


@pytest.fixture
def make_session(api, db):
    """Create a session over the API and return its JSON (`factories.session_post`)."""
    from sessions.tests.factories import session_post

    return functools.partial(session_post, api)


@pytest.fixture
def staff_client(client, db):
    """Django's test client logged in as a superuser, for the admin."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_superuser("admin", "admin@example.com", "pw-1234567")
    client.force_login(user)
    return client


@pytest.fixture(scope="session")
def live_server_process(tmp_path_factory):
    """The real server, started as `make run` starts it, shared by the tests that need one."""
    from interview.testing import RunningServer

    with RunningServer(tmp_path_factory.mktemp("server")) as server:
        yield server


@pytest.fixture
def new_session(transactional_db):
    """Create a session from async code (`factories.session_make`, `code=` saves a first snapshot)."""
    from channels.db import database_sync_to_async

    from sessions.tests.factories import session_make

    return database_sync_to_async(session_make)


@pytest.fixture
def open_socket():
    """Open a WebSocket (Channels' communicator on the real ASGI app) and read its welcome."""
    from interview.asgi import application
    from interview.testing import PatientCommunicator

    async def open_(session_id, *, origin: str | None = None, welcome: bool = True):
        headers = [(b"origin", origin.encode())] if origin else []
        communicator = PatientCommunicator(application, f"/ws/sessions/{session_id}", headers=headers)
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

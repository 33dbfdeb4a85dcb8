"""Helpers for driving the consumer through Channels' WebsocketCommunicator."""

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from interview.asgi import application
from sessions.services import session_create


@pytest.fixture
def new_session(transactional_db):
    async def make(**kwargs):
        return await database_sync_to_async(session_create)(**kwargs)

    return make


@pytest.fixture
def open_socket():
    """Open a socket to a session and read its welcome; all are closed after the test."""
    opened = []

    async def open_(session_id, *, origin: str | None = None, welcome: bool = True):
        headers = [(b"origin", origin.encode())] if origin else []
        communicator = WebsocketCommunicator(application, f"/ws/sessions/{session_id}", headers=headers)
        connected, code = await communicator.connect()
        opened.append(communicator)
        communicator.connected = connected
        communicator.close_code = code
        if connected and welcome:
            communicator.welcome = await communicator.receive_json_from()
        return communicator

    yield open_
    # Closing happens in each async test (the event loop is gone by teardown); see close_all.
    opened.clear()


async def close_all(*communicators):
    for communicator in communicators:
        await communicator.disconnect()


async def join(communicator, user_id: str, name: str = "User"):
    await communicator.send_json_to({"type": "join", "userId": user_id, "data": {"name": name}})

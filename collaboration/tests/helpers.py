"""Helpers for driving the consumer and reading what it stored (the fixtures live in the root conftest)."""

from channels.db import database_sync_to_async

from sessions.models import InterviewSession


async def close_all(*communicators):
    for communicator in communicators:
        await communicator.disconnect()


async def join(communicator, user_id: str, name: str = "User"):
    await communicator.send_json_to({"type": "join", "userId": user_id, "data": {"name": name}})


async def receive_type(communicator, type_, timeout=5):  # noqa: ASYNC109 - passed to the communicator
    """The next message of `type_`, skipping others."""
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message["type"] == type_:
            return message


def stored_document(session_id) -> tuple[str, int, str]:
    """The session's stored code, version and language."""
    row = InterviewSession.objects.get(pk=session_id)
    return row.code, row.version, row.language


get_document = database_sync_to_async(stored_document)

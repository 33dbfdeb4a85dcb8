"""The heartbeat that keeps this process's open connections alive in the database, and the
registry of which connections those are."""

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async
from django.conf import settings

from collaboration.services import connections_heartbeat

logger = logging.getLogger(__name__)

_tasks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()

# Channel names of the connections open in this process: a consumer adds its own when it
# starts and removes it when it ends, whatever ended it. Only these are kept alive.
_open: set[str] = set()


def connection_opened(channel_name: str) -> None:
    _open.add(channel_name)


def connection_closed(channel_name: str) -> None:
    _open.discard(channel_name)


def open_connections() -> frozenset[str]:
    return frozenset(_open)


async def _beat():
    while True:
        try:
            await database_sync_to_async(connections_heartbeat)(channel_names=open_connections())
        except Exception:
            logger.exception("Presence heartbeat failed")
        await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)


def ensure_heartbeat() -> None:
    """Start the heartbeat of the running event loop once; it also clears dead processes' rows."""
    loop = asyncio.get_running_loop()
    task = _tasks.get(loop)
    if task is None or task.done():
        _tasks[loop] = loop.create_task(_beat())

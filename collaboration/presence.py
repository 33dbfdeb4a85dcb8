"""The heartbeat that keeps this process's connections alive in the database."""

import asyncio
import logging
import weakref

from channels.db import database_sync_to_async
from django.conf import settings

from collaboration.services import connections_heartbeat

logger = logging.getLogger(__name__)

_tasks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task]" = weakref.WeakKeyDictionary()


async def _beat():
    while True:
        try:
            await database_sync_to_async(connections_heartbeat)()
        except Exception:
            logger.exception("Presence heartbeat failed")
        await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)


def ensure_heartbeat() -> None:
    """Start the heartbeat of the running event loop once; it also clears dead processes' rows."""
    loop = asyncio.get_running_loop()
    task = _tasks.get(loop)
    if task is None or task.done():
        _tasks[loop] = loop.create_task(_beat())

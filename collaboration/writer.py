"""Group commit of document changes: one writer per process and event loop.

Changes from every connection queue here; each round applies all that are waiting in
one transaction (sessions.services.code_changes_apply), then, in version order, sends
each change to the session's other connections and its acknowledgement to its author.
A change is acknowledged and broadcast only after it is committed.
"""

import asyncio
import logging
import weakref
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer

from interview.errors import SessionNotFound
from sessions import events
from sessions.services import CodeChange, CodeChangeResult, InvalidChange, ResyncRequired, code_changes_apply

logger = logging.getLogger(__name__)

MAX_BATCH = 500


@dataclass(frozen=True)
class Submission:
    session_id: object
    change: CodeChange
    reply_channel: str


class DocumentWriter:
    def __init__(self):
        self.queue: asyncio.Queue[Submission] = asyncio.Queue()
        self.layer = get_channel_layer()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, submission: Submission) -> None:
        self.queue.put_nowait(submission)

    async def _run(self) -> None:
        while True:
            batch = [await self.queue.get()]
            # Whatever arrived while the previous round was committing shares this one.
            while len(batch) < MAX_BATCH and not self.queue.empty():
                batch.append(self.queue.get_nowait())
            try:
                results = await database_sync_to_async(code_changes_apply)(
                    submissions=[(s.session_id, s.change) for s in batch], notify=False
                )
            except Exception:
                # One bad change must not sink the others: retry each in a transaction of its own.
                logger.exception("Could not commit %d document changes together; retrying one by one", len(batch))
                results = [await self._apply_alone(submission) for submission in batch]
            for submission, result in zip(batch, results, strict=True):
                try:
                    await self._publish(submission, result)
                except Exception:
                    logger.exception("Could not deliver the result of a change")

    async def _apply_alone(self, submission: Submission):
        try:
            (result,) = await database_sync_to_async(code_changes_apply)(
                submissions=[(submission.session_id, submission.change)], notify=False
            )
        except Exception as exc:
            logger.exception("Could not commit a document change")
            return exc
        return result

    async def _reply(self, submission: Submission, message: dict, version: int | None = None) -> None:
        await self.layer.send(submission.reply_channel, events.group_event(message, version=version))

    async def _publish(self, submission: Submission, result) -> None:
        change = submission.change
        if isinstance(result, CodeChangeResult):
            ack = {"version": result.version}
            if change.seq is not None:
                ack["seq"] = change.seq
            if not result.changed:
                await self._reply(submission, events.wire_message("code-ack", ack, change.user_id))
                return
            update = events.code_update_message(
                user_id=result.user_id, code=result.code, changes=result.changes, version=result.version
            )
            await self.layer.group_send(
                events.group_name(result.session_id),
                events.group_event(update, exclude=submission.reply_channel, version=result.version),
            )
            await self._reply(submission, events.wire_message("code-ack", ack, change.user_id), result.version)
        elif isinstance(result, ResyncRequired):
            await self._reply(
                submission,
                events.wire_message(
                    "error",
                    {
                        "code": "RESYNC_REQUIRED",
                        "message": str(result),
                        "currentCode": result.code,
                        "version": result.version,
                    },
                ),
            )
        elif isinstance(result, InvalidChange):
            await self._reply(
                submission, events.wire_message("error", {"code": "INVALID_MESSAGE", "message": str(result)})
            )
        elif isinstance(result, SessionNotFound):
            await self.layer.send(submission.reply_channel, events.ended_event("not found"))
        else:
            await self._reply(
                submission,
                events.wire_message("error", {"code": "INTERNAL_ERROR", "message": "The change could not be saved."}),
            )


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DocumentWriter]" = weakref.WeakKeyDictionary()


def get_writer() -> DocumentWriter:
    """The writer of the running event loop, started on first use."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None or writer.task.done():
        writer = _writers[loop] = DocumentWriter()
    return writer

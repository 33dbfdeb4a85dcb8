"""Group commit of document changes: one writer per process and event loop.

Changes from every connection queue here, one queue per session; each round applies
what is waiting in one transaction (sessions.services.code_changes_apply), then, in
version order, sends each change to the session's other connections and its
acknowledgement to its author. A change is acknowledged and broadcast only after it is
committed.

After its first change, a round spends at most WRITER_ROUND_WORK units of rebase work:
changes beyond are deferred (unchanged) to the next round, and the sessions served in a
round go to the back of the line. So an expensive change (at most OT_MAX_REBASE_WORK)
commits in a round of its own, and every other session's changes go in the next round.
"""

import asyncio
import logging
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from sessions import events, frames
from sessions.exceptions import SessionNotFound
from sessions.services import (
    CodeChange,
    CodeChangeResult,
    Deferred,
    InvalidChange,
    ResyncRequired,
    code_changes_apply,
    rebase_work_budget,
)

logger = logging.getLogger(__name__)

MAX_BATCH = 500


@dataclass(frozen=True)
class Submission:
    session_id: object
    change: CodeChange
    reply_channel: str


def _apply_round(submissions: list[tuple[object, CodeChange]]) -> list:
    with rebase_work_budget(settings.WRITER_ROUND_WORK):
        return code_changes_apply(submissions=submissions, notify=False)


class DocumentWriter:
    def __init__(self):
        # Session -> its waiting submissions, in arrival order; the dict's order is whose turn it is.
        self.pending: OrderedDict[object, deque[Submission]] = OrderedDict()
        self.waiting = asyncio.Event()
        # Set while nothing waits and no round is in flight: every result so far is published.
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.layer = get_channel_layer()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def submit(self, submission: Submission) -> None:
        queue = self.pending.get(submission.session_id)
        if queue is None:
            queue = self.pending[submission.session_id] = deque()
        queue.append(submission)
        self.quiet.clear()
        self.waiting.set()

    def _take_round(self) -> list[Submission]:
        """Whatever waits (up to MAX_BATCH), session by session in turn order."""
        batch: list[Submission] = []
        for queue in self.pending.values():
            while queue and len(batch) < MAX_BATCH:
                batch.append(queue.popleft())
        return batch

    def _settle_round(self, batch: list[Submission], results: list) -> list[tuple[Submission, object]]:
        """Put deferred submissions back at the head of their session's queue, in order, and
        send the sessions that got something done to the back of the line."""
        done, served, deferred = [], set(), {}
        for submission, result in zip(batch, results, strict=True):
            if isinstance(result, Deferred):
                deferred.setdefault(submission.session_id, []).append(submission)
            else:
                done.append((submission, result))
                served.add(submission.session_id)
        for session_id, submissions in deferred.items():
            self.pending[session_id].extendleft(reversed(submissions))
        for session_id in list(self.pending):
            if not self.pending[session_id]:
                del self.pending[session_id]
            elif session_id in served:
                self.pending.move_to_end(session_id)
        return done

    async def _run(self) -> None:
        while True:
            if not self.pending:
                self.quiet.set()
                self.waiting.clear()
                await self.waiting.wait()
            # Whatever arrived while the previous round was committing shares this one.
            batch = self._take_round()
            try:
                results = await database_sync_to_async(_apply_round)([(s.session_id, s.change) for s in batch])
            except Exception:
                # One bad change must not sink the others: retry each in a transaction of its own.
                logger.exception("Could not commit %d document changes together; retrying one by one", len(batch))
                results = [await self._apply_alone(submission) for submission in batch]
            for submission, result in self._settle_round(batch, results):
                try:
                    await self._publish(submission, result)
                except Exception:
                    logger.exception("Could not deliver the result of a change")

    async def idle(self) -> None:
        """Return once every change submitted so far is committed and its answers are sent."""
        await self.quiet.wait()

    async def _apply_alone(self, submission: Submission):
        try:
            (result,) = await database_sync_to_async(code_changes_apply)(
                submissions=[(submission.session_id, submission.change)], notify=False
            )
        except Exception as exc:
            logger.exception("Could not commit a document change")
            return exc
        return result

    async def _reply(self, submission: Submission, frame: dict, version: int | None = None) -> None:
        await self.layer.send(submission.reply_channel, events.serialized_event(frame, version=version))

    async def _publish(self, submission: Submission, result) -> None:
        """Tell the session and the author what became of a change: an applied change goes
        to the others and is acknowledged to its author; anything else answers the author."""
        change = submission.change
        if isinstance(result, CodeChangeResult):
            ack = frames.code_ack(user_id=change.user_id, version=result.version, seq=change.seq)
            if not result.changed:
                await self._reply(submission, ack)
                return
            update = frames.code_update(
                user_id=result.user_id, code=result.code, changes=result.changes, version=result.version
            )
            await self.layer.group_send(
                events.group_name(result.session_id),
                events.serialized_event(update, exclude=submission.reply_channel, version=result.version),
            )
            await self._reply(submission, ack, result.version)
        elif isinstance(result, ResyncRequired):
            await self._reply(
                submission, frames.resync_required(code=result.code, version=result.version, message=str(result))
            )
        elif isinstance(result, InvalidChange):
            await self._reply(submission, frames.invalid_message(str(result)))
        elif isinstance(result, SessionNotFound):
            await self.layer.send(submission.reply_channel, events.ended_event("not found"))
        else:
            await self._reply(submission, frames.change_not_saved())


_writers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, DocumentWriter]" = weakref.WeakKeyDictionary()


def get_writer() -> DocumentWriter:
    """The writer of the running event loop, started on first use."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None or writer.task.done():
        writer = _writers[loop] = DocumentWriter()
    return writer

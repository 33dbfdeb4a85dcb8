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

Overload is pushed back to the senders rather than queued (each bound a setting):

- A full-text update without `seq` (what the existing client sends on every keystroke),
  once its session is behind (its oldest waiting change waited WRITER_SUPERSEDE_AFTER_SECONDS,
  or a queue bound below is reached), supersedes the one its connection still has waiting:
  the newer text holds the older, so only the newer is applied, in the newer's place in the
  queue, and acknowledged. So while the writer keeps up every text is applied and broadcast
  (each keystroke reaches the others), and past that such a connection adds nothing to the
  queue, however fast it sends.
- Every other change (a delta, a full text with `seq`) is refused at once with
  RATE_LIMIT_EXCEEDED (`server_busy`) when its session already has
  WRITER_MAX_QUEUED_PER_SESSION changes waiting or the writer WRITER_MAX_QUEUED in all.
- A change that waited more than WRITER_MAX_WAIT_SECONDS when its round comes is refused
  the same way instead of applied late, and so are the changes of the same connection
  queued behind it in its session (they were made on top of it).

A refused change was not applied and is not acknowledged; its sender resends it. Nothing
acknowledged is ever dropped: refusals happen before a change is applied.
"""

import asyncio
import logging
import time
import weakref
from collections import OrderedDict, deque
from concurrent.futures import Executor

from asgiref.sync import AsyncToSync, SyncToAsync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import close_old_connections

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
# Waiting changes that make a round worth running at once, without WRITER_GATHER_SECONDS.
GATHER_ENOUGH = 8


class Submission:
    """A change waiting for the writer, with who to answer and when it arrived."""

    __slots__ = ("arrived", "change", "replaced", "reply_channel", "session_id", "superseded")

    def __init__(self, session_id, change: CodeChange, reply_channel: str):
        self.session_id = session_id
        self.change = change
        self.reply_channel = reply_channel
        self.arrived = 0.0
        self.superseded = False
        # Set by `submit` when this one superseded its connection's waiting text, which so
        # gets no answer of its own (the connection counts its unanswered changes).
        self.replaced = False

    @property
    def supersedable(self) -> bool:
        """A full text without seq: a later full text of its connection holds all of it."""
        return self.change.changes is None and self.change.seq is None


def _apply_round(submissions: list[tuple[object, CodeChange]]) -> list:
    # What database_sync_to_async does around a call, once per round: a connection that
    # errored or outlived CONN_MAX_AGE is replaced before the round uses it.
    close_old_connections()
    with rebase_work_budget(settings.WRITER_ROUND_WORK):
        return code_changes_apply(submissions=submissions, notify=False)


def _database_thread(loop: asyncio.AbstractEventLoop) -> Executor | None:
    """The executor of the one database thread that `database_sync_to_async` uses from a
    task of this loop (the presence batches' and the consumers' calls run there too, so
    they and the rounds never interleave), or None where asgiref would choose another
    (a loop that `async_to_sync` runs, or under a sync caller): use it there.

    A round hops to that thread with `run_in_executor` alone: through
    `database_sync_to_async` each hop also built a SyncToAsync, copied and restored the
    context and closed old connections twice: 6% of the server's GIL samples at 20 x 5
    clients x 10 updates/s (about 150 rounds a second). With the two trims below it
    (`messages.parse`, `events.group_name`), 174 -> 162 µs of server CPU per delivery."""
    # asgiref's own bookkeeping, read defensively: should a release rename it, rounds take
    # `database_sync_to_async` as before rather than fail.
    loop_executors = getattr(AsyncToSync, "loop_thread_executors", None)
    executors = getattr(AsyncToSync, "executors", None)
    single = getattr(SyncToAsync, "single_thread_executor", None)
    if loop_executors is None or executors is None or single is None:
        return None
    if loop in loop_executors or getattr(executors, "current", None):
        return None
    return single


class DocumentWriter:
    # Monotonic seconds; a test may replace it to age what waits.
    clock = staticmethod(time.monotonic)

    def __init__(self):
        # Session -> its waiting submissions, in arrival order; the dict's order is whose turn it is.
        # A superseded submission stays in its queue (skipped when taken) so a supersede costs O(1).
        self.pending: OrderedDict[object, deque[Submission]] = OrderedDict()
        # Live (not superseded) waiting submissions, per session and in all.
        self.waiting_in: dict[object, int] = {}
        self.waiting_total = 0
        # (session, connection) -> its latest waiting full text without seq, which a newer one supersedes.
        self.latest_text: dict[tuple, Submission] = {}
        self.superseded = 0
        self.refused = 0
        self.next_report = 0.0
        # Submissions refused by age in the last round taken, for `_run` to answer.
        self.stale: list[Submission] = []
        self.waiting = asyncio.Event()
        # Set while nothing waits and no round is in flight: every result so far is published.
        self.quiet = asyncio.Event()
        self.quiet.set()
        self.layer = get_channel_layer()
        self.loop = asyncio.get_running_loop()
        self.executor = _database_thread(self.loop)
        self.task = self.loop.create_task(self._run())

    def submit(self, submission: Submission) -> bool:
        """Queue a change; False when it is refused at once: the caller tells its sender
        (`frames.server_busy`)."""
        session_id = submission.session_id
        submission.arrived = self.clock()
        key = (session_id, submission.reply_channel)
        if submission.supersedable:
            older = self.latest_text.get(key)
            if older is not None and self._behind(session_id):
                older.superseded = True
                submission.replaced = True
                self.superseded += 1
                self._uncount(session_id)
            self.latest_text[key] = submission
        else:
            # A change of another kind after a full text: that text may no longer be superseded.
            self.latest_text.pop(key, None)
            if self._full(session_id):
                self._count_refused(1)
                return False
        queue = self.pending.get(session_id)
        if queue is None:
            queue = self.pending[session_id] = deque()
        queue.append(submission)
        self.waiting_in[session_id] = self.waiting_in.get(session_id, 0) + 1
        self.waiting_total += 1
        self.quiet.clear()
        self.waiting.set()
        return True

    def _behind(self, session_id) -> bool:
        """Whether the session's queue is past what the writer keeps up with: its oldest
        waiting change has waited WRITER_SUPERSEDE_AFTER_SECONDS, or a queue bound is reached."""
        if self._full(session_id):
            return True
        queue = self.pending.get(session_id)
        # The head may be a superseded one not yet taken: at most a round older than the oldest live one.
        return bool(queue) and self.clock() - queue[0].arrived >= settings.WRITER_SUPERSEDE_AFTER_SECONDS

    def _full(self, session_id) -> bool:
        """Whether a queue bound is reached: the session's or the writer's."""
        return (
            self.waiting_in.get(session_id, 0) >= settings.WRITER_MAX_QUEUED_PER_SESSION
            or self.waiting_total >= settings.WRITER_MAX_QUEUED
        )

    def _uncount(self, session_id) -> None:
        self.waiting_total -= 1
        left = self.waiting_in[session_id] - 1
        if left:
            self.waiting_in[session_id] = left
        else:
            del self.waiting_in[session_id]

    def _take_round(self) -> list[Submission]:
        """Whatever waits (up to MAX_BATCH), session by session in turn order; a change that
        waited past WRITER_MAX_WAIT_SECONDS is refused instead, with the changes of its
        connection behind it."""
        batch: list[Submission] = []
        stale: list[Submission] = []
        too_old = self.clock() - settings.WRITER_MAX_WAIT_SECONDS
        for session_id, queue in self.pending.items():
            refusing: set[str] = set()
            while queue and len(batch) < MAX_BATCH:
                submission = queue.popleft()
                if submission.superseded:
                    continue
                self._uncount(session_id)
                key = (session_id, submission.reply_channel)
                if self.latest_text.get(key) is submission:
                    del self.latest_text[key]
                if submission.arrived < too_old or submission.reply_channel in refusing:
                    refusing.add(submission.reply_channel)
                    stale.append(submission)
                else:
                    batch.append(submission)
        if stale:
            self._count_refused(len(stale))
            self.stale.extend(stale)
        return batch

    def _count_refused(self, count: int) -> None:
        self.refused += count
        now = self.clock()
        if now >= self.next_report:
            # At most one line a few seconds, however hard the server is pushed.
            self.next_report = now + 5.0
            logger.warning(
                "Writer busy: %d changes refused and %d full texts superseded so far", self.refused, self.superseded
            )

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
            self.waiting_in[session_id] = self.waiting_in.get(session_id, 0) + len(submissions)
            self.waiting_total += len(submissions)
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
                gather = settings.WRITER_GATHER_SECONDS
                if gather > 0 and self.waiting_total < GATHER_ENOUGH:
                    # A round's fixed cost (a thread hop, a transaction) dwarfs one change's:
                    # at low load, let the changes of the next moment share it.
                    await asyncio.sleep(gather)
            # Whatever arrived while the previous round was committing shares this one.
            batch = self._take_round()
            stale, self.stale = self.stale, []
            for submission in stale:
                try:
                    await self._reply(submission, frames.server_busy(seq=submission.change.seq))
                except Exception:
                    logger.exception("Could not tell a sender that its change was refused")
            if not batch:
                # Everything taken was superseded or refused.
                for session_id in [key for key, queue in self.pending.items() if not queue]:
                    del self.pending[session_id]
                continue
            submissions = [(s.session_id, s.change) for s in batch]
            try:
                if self.executor is not None:
                    results = await self.loop.run_in_executor(self.executor, _apply_round, submissions)
                else:
                    results = await database_sync_to_async(_apply_round)(submissions)
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

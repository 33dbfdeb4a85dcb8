"""A run's lifecycle in a real sandbox: cancelled, run concurrently, bounded and queued by the pool (no Django)."""

import asyncio

import pytest

from execution.sandbox import ExecutionPool, Limits, QueueFull
from execution.tests.helpers import CONFIG, IS_ROOT, host_uids_of, needs_sandbox, processes_with, run, sleep_token
from interview.testing import PATIENCE_SECONDS

pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]


def sleeping_run(pool: ExecutionPool):
    """A run of 0.3 s on `pool`."""
    return pool.run(language="python", code="import time; time.sleep(0.3)", limits=Limits(), config=CONFIG)


async def start_sleeping_run(pool: ExecutionPool) -> asyncio.Task:
    """A sleeping run started on `pool`, given time to take a slot or its place in the queue."""
    task = asyncio.create_task(sleeping_run(pool))
    await asyncio.sleep(0.05)
    return task


class TestLifecycle:
    async def test_cancelled_run_leaves_nothing(self):
        """Cancelling run_code kills the sandbox and removes its directory."""
        token = sleep_token()
        code = f"import os\nos.system('/bin/sleep {token} &')\nwhile True: pass"
        task = asyncio.create_task(run("python", code, limits=Limits(timeout_s=10)))
        assert await host_uids_of(token), "the sleeper never started"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert processes_with(token) == []

    async def test_concurrent_runs_get_distinct_uids(self):
        """Runs in parallel each get their own uid and all succeed."""
        tokens = [sleep_token() for _ in range(6)]
        tasks = [
            asyncio.create_task(run("python", f"import subprocess\nsubprocess.run(['/bin/sleep', '{t}'], timeout=1.5)"))
            for t in tokens
        ]
        seen = await asyncio.gather(*(host_uids_of(t) for t in tokens))
        results = await asyncio.gather(*tasks)
        assert all(r.error and r.error.startswith("subprocess.TimeoutExpired") for r in results), results
        assert all(seen)
        if IS_ROOT:
            assert len({uids[0][0] for uids in seen}) == 6

    async def test_pool_bounds_concurrency_and_queue(self):
        """ExecutionPool runs max_concurrent at once, queues max_queue, refuses the rest."""
        pool = ExecutionPool(max_concurrent=1, max_queue=1)
        first, second = await start_sleeping_run(pool), await start_sleeping_run(pool)
        assert (pool.active, pool.queued) == (1, 1)
        with pytest.raises(QueueFull):
            await sleeping_run(pool)
        results = await asyncio.gather(first, second)
        assert [r.status for r in results] == ["ok", "ok"]
        assert (pool.active, pool.queued) == (0, 0)

    async def test_pool_queue_survives_cancellation(self):
        """A cancelled waiter gives its place back."""
        pool = ExecutionPool(max_concurrent=1, max_queue=2)
        first, waiting = await start_sleeping_run(pool), await start_sleeping_run(pool)
        waiting.cancel()
        await asyncio.sleep(0)
        assert pool.queued == 0
        assert (await first).status == "ok"
        assert pool.active == 0


def timed_run(pool: ExecutionPool, key: str, seconds: float, done: list[str], name: str, address: str = ""):
    """A run on `pool` for client `key` that sleeps `seconds`, then notes `name` in `done`."""

    async def go():
        result = await pool.run(
            key=key,
            address=address or key,
            language="python",
            code=f"import time; time.sleep({seconds})",
            limits=Limits(timeout_s=10),
            config=CONFIG,
        )
        done.append(name)
        return result

    return asyncio.create_task(go())


async def until_queued(pool: ExecutionPool, queued: int) -> None:
    """Until `queued` runs wait (and so a slot is held)."""
    async with asyncio.timeout(PATIENCE_SECONDS):
        while True:
            if pool.queued >= queued and pool.active:
                return
            await asyncio.sleep(0.01)  # the pool has no event to wait on


class TestFairQueue:
    async def test_one_flooding_session_does_not_starve_another(self):
        """Session A queues five runs behind its first; session B's single run goes after A's
        second, not after A's sixth."""
        pool = ExecutionPool(max_concurrent=1, max_queue=10, max_queue_per_client=6)
        done: list[str] = []
        flood = [timed_run(pool, "session:A", 3 if i == 0 else 0, done, f"A{i}") for i in range(6)]
        await until_queued(pool, 5)  # A0 runs (3 s: longer than the queueing below)
        single = timed_run(pool, "session:B", 0, done, "B")
        await until_queued(pool, 6)
        results = await asyncio.gather(*flood, single)
        assert all(r.status == "ok" for r in results), results
        assert done == ["A0", "A1", "B", "A2", "A3", "A4", "A5"]

    async def test_a_client_over_its_share_of_the_queue_is_refused_at_once(self):
        """Past max_queue_per_client waiting, a session (or an address) gets QueueFull; another still queues."""
        pool = ExecutionPool(max_concurrent=1, max_queue=10, max_queue_per_client=2)
        done: list[str] = []
        tasks = [timed_run(pool, "session:A", 3 if i == 0 else 0, done, f"A{i}", address="10.0.0.1") for i in range(3)]
        await until_queued(pool, 2)
        with pytest.raises(QueueFull):
            await pool.run(key="session:A", address="10.0.0.1", language="python", code="pass", config=CONFIG)
        with pytest.raises(QueueFull):  # the same address under another session
            await pool.run(key="session:C", address="10.0.0.1", language="python", code="pass", config=CONFIG)
        tasks.append(timed_run(pool, "session:B", 0, done, "B", address="10.0.0.2"))
        await until_queued(pool, 3)
        assert all(r.status == "ok" for r in await asyncio.gather(*tasks))
        assert (pool.active, pool.queued) == (0, 0)

    async def test_a_run_waits_up_to_the_limit_then_is_refused(self):
        """A queued run that gets no slot within max_wait_s gets QueueFull and leaves the queue."""
        pool = ExecutionPool(max_concurrent=1, max_queue=4, max_wait_s=0.2)
        hog = timed_run(pool, "session:A", 3, [], "A")
        await until_queued(pool, 0)
        with pytest.raises(QueueFull, match=r"waited 0\.2 s"):
            await pool.run(key="session:B", language="python", code="pass", config=CONFIG)
        assert pool.queued == 0
        assert (await hog).status == "ok"

    async def test_eight_one_second_runs_at_once_on_two_slots_all_finish(self):
        """With the defaults (two slots, a 10 s wait), eight 1-second runs sent together all run."""
        pool = ExecutionPool(max_concurrent=2, max_queue=16, max_queue_per_client=8, max_wait_s=10.0)
        code = "import time; time.sleep(1); print('done')"
        runs = [pool.run(key="session:A", language="python", code=code, config=CONFIG) for _ in range(8)]
        results = await asyncio.gather(*runs)
        assert [r.stdout for r in results] == ["done\n"] * 8

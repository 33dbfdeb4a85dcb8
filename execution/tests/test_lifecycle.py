"""A run's lifecycle in a real sandbox: cancelled, run concurrently, bounded and queued by the pool (no Django)."""

import asyncio

import pytest

from execution.sandbox import ExecutionPool, Limits, QueueFull
from execution.tests.helpers import CONFIG, IS_ROOT, host_uids_of, needs_sandbox, processes_with, run, sleep_token

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

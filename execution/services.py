"""Running code for the API: limits and sandbox from settings, a bounded pool, session records."""

import asyncio
import weakref

from django.conf import settings

from execution import sandbox
from sessions import events, frames
from sessions.services import run_record


def sandbox_config() -> sandbox.SandboxConfig:
    return sandbox.SandboxConfig(
        mode=settings.EXECUTION_SANDBOX,
        uid_base=settings.EXECUTION_UID_BASE,
        uid_count=settings.EXECUTION_UID_COUNT,
        cgroups=settings.EXECUTION_CGROUPS,
        work_root=settings.EXECUTION_WORK_ROOT,
    )


def limits(timeout_s: float) -> sandbox.Limits:
    return sandbox.Limits(
        timeout_s=timeout_s,
        compile_timeout_s=settings.EXECUTION_COMPILE_TIMEOUT,
        memory_mb=settings.EXECUTION_MEMORY_MB,
        max_processes=settings.EXECUTION_MAX_PROCESSES,
        output_bytes=settings.EXECUTION_OUTPUT_BYTES,
        file_size_mb=settings.EXECUTION_FILE_SIZE_MB,
        open_files=settings.EXECUTION_OPEN_FILES,
        compile_memory_mb=settings.EXECUTION_COMPILE_MEMORY_MB,
        disk_mb=settings.EXECUTION_DISK_MB,
        disk_inodes=settings.EXECUTION_DISK_INODES,
    )


_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, sandbox.ExecutionPool]" = weakref.WeakKeyDictionary()


def pool() -> sandbox.ExecutionPool:
    """The running event loop's pool: EXECUTION_MAX_CONCURRENT at once, EXECUTION_MAX_QUEUE waiting.

    Only the server's own loop (the one `execution_warm` ran on) keeps EXECUTION_SPARES spare
    sandboxes per language: a loop made for one call (a test client, a management command)
    would leave them behind, so there every run builds its own."""
    loop = asyncio.get_running_loop()
    current = _pools.get(loop)
    if current is None:
        spares = None
        if loop in _server_loops and settings.EXECUTION_SPARES > 0:
            spares = sandbox.Spares(settings.EXECUTION_SPARES, max_timeout_s=settings.EXECUTION_MAX_TIMEOUT)
        current = _pools[loop] = sandbox.ExecutionPool(
            settings.EXECUTION_MAX_CONCURRENT,
            settings.EXECUTION_MAX_QUEUE,
            max_queue_per_client=settings.EXECUTION_MAX_QUEUE_PER_CLIENT,
            max_wait_s=settings.EXECUTION_QUEUE_WAIT,
            spares=spares,
        )
    return current


_server_loops: "weakref.WeakSet[asyncio.AbstractEventLoop]" = weakref.WeakSet()


async def execution_run(
    *, language: str, code: str, stdin: str, timeout_s: float, session_id=None, address: str = ""
) -> sandbox.ExecutionResult:
    """Run code in the sandbox, queued fairly by session (or address); raises sandbox.QueueFull
    when the queue is full for this client or the wait runs out."""
    key = f"session:{session_id}" if session_id is not None else f"address:{address}"
    return await pool().run(
        key=key,
        address=address,
        language=language,
        code=code,
        stdin=stdin,
        limits=limits(timeout_s),
        config=sandbox_config(),
    )


async def execution_warm() -> None:
    """Make the running loop the server's (spares kept) and build every available language's
    spares. The sandbox's probe (a second or more: a trial sandbox, each toolchain's version)
    runs on a thread, so a worker that has not probed yet serves while it does."""
    loop = asyncio.get_running_loop()
    if loop not in _server_loops:
        _server_loops.add(loop)
        _pools.pop(loop, None)
    config = sandbox_config()
    if not (await asyncio.to_thread(sandbox.sandbox_status, config)).usable:
        return
    statuses = await asyncio.to_thread(sandbox.toolchains, config)
    available = [name for name, tc in statuses.items() if tc.available]
    pool().warm(languages=available, limits=limits(settings.EXECUTION_DEFAULT_TIMEOUT), config=config)


async def execution_stop() -> None:
    """Destroy the running loop's spare sandboxes (at a clean stop)."""
    current = _pools.get(asyncio.get_running_loop())
    if current is not None:
        await current.close()


# What a run's history entry keeps of its answer beside the output (the timeline's run item).
_RUN_DETAILS = ("status", "success", "exitCode", "executionTime", "error", "truncated")


def execution_record(*, session_id, language: str, code: str, result: sandbox.ExecutionResult) -> None:
    """Record a run in its session's history (`run_record`) and send it to the session's clients."""
    outcome = "succeeded" if result.success else (result.error or result.status)
    answer = result.as_dict()
    entry = run_record(
        session_id=session_id,
        code=code,
        description=f"Ran {language}: {outcome} ({result.execution_time_ms} ms)",
        details={"language": language, **{key: answer[key] for key in _RUN_DETAILS}},
        stdout=answer["stdout"],
        stderr=answer["stderr"],
    )
    message = frames.execution_result(language=language, result=answer)
    events.publish(entry.session_id, events.serialized_event(message))


def sandbox_report() -> dict:
    """The sandbox's state and each language's toolchain, for /health and check_sandbox."""
    config = sandbox_config()
    status = sandbox.sandbox_status(config)
    return {
        "ok": status.usable,
        "required": False,
        **status.as_dict(),
        "languages": {name: tc.as_dict() for name, tc in sandbox.toolchains(config).items()},
        "runs": runs_report(),
    }


def runs_report() -> dict:
    """This process's runs now: running, waiting for a slot, and the spare sandboxes ready per
    language (EXECUTION_SPARES each; fewer while they are being rebuilt after runs). Read from
    another thread than the server loop's: plain counts, a moment's view."""
    server = next((_pools[loop] for loop in list(_server_loops) if loop in _pools), None)
    if server is None:
        return {"running": 0, "waiting": 0, "spares": {}}
    spares = server.spares
    return {
        "running": server.active,
        "waiting": server.queued,
        "spares": spares.ready_by_language() if spares is not None else {},
    }

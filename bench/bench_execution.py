"""Latency and throughput of the execution sandbox (no Django): `python bench/bench_execution.py`.

Prints, per language, p50/p90/p99 of an end-to-end run_code() of hello world over N runs,
then executions per second with C concurrent clients, and a breakdown of where the time
of a Python run goes (bare interpreter, empty sandbox, full run).
"""

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from execution.sandbox import (
    LANGUAGES,
    Limits,
    SandboxConfig,
    run_code,
    sandbox_status,
    toolchains,
)
from execution.sandbox.host.setup import host_for, trial_stage
from execution.sandbox.process import run_stage_with_own_uid

HELLO = {
    "python": "print(1)",
    "javascript": "console.log(1)",
    "cpp": '#include <cstdio>\nint main() { std::puts("1"); }',
    "java": "public class Main { public static void main(String[] a) { System.out.println(1); } }",
}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> str:
    return (
        f"p50 {percentile(values, 50):7.1f} ms  p90 {percentile(values, 90):7.1f} ms  "
        f"p99 {percentile(values, 99):7.1f} ms  mean {statistics.fmean(values):7.1f} ms  (n={len(values)})"
    )


async def one(language: str, config: SandboxConfig, limits: Limits) -> float:
    started = time.perf_counter()
    result = await run_code(language=language, code=HELLO[language], stdin="", limits=limits, config=config)
    elapsed = (time.perf_counter() - started) * 1000
    if result.status != "ok" or result.stdout != "1\n":
        raise SystemExit(f"{language} run failed: {result}")
    return elapsed


async def latency(language: str, runs: int, config: SandboxConfig, limits: Limits) -> list[float]:
    for _ in range(2):  # warm caches (page cache, CDS, the probe)
        await one(language, config, limits)
    return [await one(language, config, limits) for _ in range(runs)]


async def throughput(
    language: str, clients: int, seconds: float, config: SandboxConfig, limits: Limits
) -> tuple[int, float, list[float]]:
    deadline = time.perf_counter() + seconds
    times: list[float] = []

    async def client() -> None:
        while time.perf_counter() < deadline:
            times.append(await one(language, config, limits))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return len(times), time.perf_counter() - started, times


def timed_host(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000


async def breakdown(runs: int, config: SandboxConfig) -> None:
    """Where a Python run's time goes: interpreter alone, an empty sandbox, the whole run."""
    python = config.python_path
    bare = [await asyncio.to_thread(timed_host, [python, "-I", "-B", "-u", "-c", "print(1)"]) for _ in range(runs)]
    print(f"  python -I -B -u print(1), host, no sandbox : {summary(bare)}  (host site-packages .pth files)")
    argv = [python, "-I", "-S", "-B", "-u", "-c", "print(1)"]
    bare_s = [await asyncio.to_thread(timed_host, argv) for _ in range(runs)]
    print(f"  the same with -S (no site at all)          : {summary(bare_s)}")
    # The sandbox alone: bwrap with every mount, per-run uid and cgroups, running /usr/bin/true.
    host = host_for(config)
    empty = []
    for _ in range(runs):
        started = time.perf_counter()
        outcome = await run_stage_with_own_uid(host, trial_stage(["/usr/bin/true"]))
        empty.append((time.perf_counter() - started) * 1000)
        assert outcome.returncode == 0, outcome
    print(f"  empty sandbox (bwrap ... true)             : {summary(empty)}")
    full = await latency("python", runs, config, Limits())
    print(f"  run_code python print(1)                   : {summary(full)}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=60, help="sequential runs for python/javascript")
    parser.add_argument("--compiled-runs", type=int, default=20, help="sequential runs for cpp/java")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients for the throughput test")
    parser.add_argument("--seconds", type=float, default=8.0, help="duration of each throughput test")
    parser.add_argument("--languages", default=",".join(LANGUAGES))
    args = parser.parse_args()

    config = SandboxConfig()
    limits = Limits()
    status = await asyncio.to_thread(sandbox_status, config)
    print(f"sandbox: {status}")
    if not status.usable:
        raise SystemExit("no usable sandbox")
    found = await asyncio.to_thread(toolchains, config)
    for tc in found.values():
        print(f"  {tc.language:<10} {tc.version or tc.reason}")
    print(f"cpus: {os.cpu_count()}")
    languages = [lang for lang in args.languages.split(",") if found[lang].available]

    print("\nlatency, one client, end to end (hello world):")
    for lang in languages:
        runs = args.runs if lang in ("python", "javascript") else args.compiled_runs
        print(f"  {lang:<10} {summary(await latency(lang, runs, config, limits))}")

    print(f"\nthroughput, {args.clients} concurrent clients, {args.seconds:g} s each:")
    for lang in languages:
        count, elapsed, times = await throughput(lang, args.clients, args.seconds, config, limits)
        print(f"  {lang:<10} {count / elapsed:6.1f} executions/s   {summary(times)}")

    print("\nbreakdown of a Python run:")
    await breakdown(args.runs, config)


if __name__ == "__main__":
    asyncio.run(main())

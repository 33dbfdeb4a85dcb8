"""Joins against the real server, started as `make run` does: handshake to welcome, and memory.

    .venv/bin/python bench/bench_joins.py                 # 1,000 joins over 50 sessions, 50 at a time

Each client opens a WebSocket, waits for its `welcome` (the time from starting the
handshake to it is what is measured) and joins; all stay open and idle, then the server's
RSS growth is divided by the connections. Server CPU per join is its CPU time over the
whole connecting phase divided by the connections.
"""

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_collaboration import cpu_seconds, create_session
from websockets.asyncio.client import connect

from interview.testing import RunningServer


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run(server: RunningServer, connections: int, sessions: int, concurrency: int) -> dict:
    sids = [create_session(server.url) for _ in range(sessions)]
    gate = asyncio.Semaphore(concurrency)
    sockets, waits = [], []

    async def one(index: int):
        async with gate:
            started = time.perf_counter()
            ws = await connect(f"{server.ws_url}/ws/sessions/{sids[index % sessions]}", ping_interval=None)
            message = json.loads(await ws.recv())
            waits.append(time.perf_counter() - started)
            assert message["type"] == "welcome", message
            await ws.send(json.dumps({"type": "join", "userId": f"u{index}", "data": {"name": f"User {index}"}}))
            sockets.append(ws)

    pid = server.process.pid
    rss_before, cpu_before, started = rss_kb(pid), cpu_seconds(pid), time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(connections)))
    elapsed, cpu = time.perf_counter() - started, cpu_seconds(pid) - cpu_before
    await asyncio.sleep(2)  # let the joins' user-joined broadcasts settle before reading RSS
    rss = rss_kb(pid) - rss_before
    for ws in sockets:
        await ws.close()
    waits.sort()
    return {
        "p50_ms": 1000 * waits[len(waits) // 2],
        "p99_ms": 1000 * waits[int(len(waits) * 0.99)],
        "joins_per_s": connections / elapsed,
        "server_ms_per_join": 1000 * cpu / connections,
        "kb_per_connection": rss / connections,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, default in (("connections", 1000), ("sessions", 50), ("concurrency", 50)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    env = {"WS_RATE_LIMIT_PER_SECOND": "100000", "WS_RATE_LIMIT_BURST": "100000", "LOG_LEVEL": "error"}
    with tempfile.TemporaryDirectory() as workdir, RunningServer(Path(workdir), env=env) as server:
        result = asyncio.run(run(server, args.connections, args.sessions, args.concurrency))
    print(f"{os.cpu_count()} CPUs; {args.connections} joins, {args.sessions} sessions, {args.concurrency} at a time")
    print(
        f"handshake to welcome p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms; "
        f"{result['joins_per_s']:.0f} joins/s, {result['server_ms_per_join']:.2f} ms server CPU per join; "
        f"{result['kb_per_connection']:.1f} kB RSS per idle joined connection"
    )


if __name__ == "__main__":
    main()

"""Load benchmark of the REST API against the real server, started as `make run` does.

    .venv/bin/python bench/bench_rest.py                       # every endpoint, then the mix
    .venv/bin/python bench/bench_rest.py --only mix,get_code   # some of them
    .venv/bin/python bench/bench_rest.py --url http://127.0.0.1:3000 --pid 1234   # a running server

For each endpoint (and the 70/20/10 mix of GET code, POST code and POST session that
`../shared/bench/compare.sh rest` drives), CLIENTS closed-loop clients send requests on
keep-alive connections for DURATION seconds after a warm-up. Printed per endpoint: req/s,
p50 and p99 latency, errors (any status outside 2xx), and the server's CPU per request:
user + system time of the server process and its children (from /proc/<pid>/stat) over the
measured window, divided by the requests in it. The client is a minimal HTTP/1.1 client on
raw asyncio streams, so the load generator takes as little as possible of the machine it
shares with the server. Loopback only; every loop is bounded in time and count.
"""

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interview.testing import RunningServer

CLK_TCK = os.sysconf("SC_CLK_TCK")
# A request that takes longer than this counts as an error (a bound for a hung server).
REQUEST_TIMEOUT_SECONDS = 30.0
MAX_REQUESTS_PER_CLIENT = 1_000_000
CODE = "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(12))  # ~400 bytes, as loadbench


class Connection:
    """One keep-alive HTTP/1.1 connection: a request, then its whole answer."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader = self.writer = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + (body or b""))
        raw = await self.reader.readuntil(b"\r\n\r\n")
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        length = int(headers.get("content-length", "0"))
        payload = await self.reader.readexactly(length) if length else b""
        if headers.get("connection", "").lower() == "close":
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


def server_cpu_ticks(pid: int) -> int:
    """utime + stime (and reaped children's) of `pid` and every process below it."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    text = fh.read()
            except OSError:
                continue
            fields = text[text.rfind(")") + 2 :].split()
            stats[int(name)] = fields
            children.setdefault(int(fields[1]), []).append(int(name))
    total, todo, seen = 0, [pid], 0
    while todo and seen < 10_000:
        current = todo.pop()
        seen += 1
        fields = stats.get(current)
        if fields:
            total += sum(int(f) for f in fields[11:15])
        todo.extend(children.get(current, []))
    return total


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(p * len(values)))]


class Setup:
    """Sessions created before the runs, each with saved code, so reads find something."""

    def __init__(self, ids: list[str]):
        self.ids = ids


def operations(setup: Setup) -> dict:
    """Each endpoint as a function of (random, client number, request number) -> (method, path, body)."""
    code_body = json.dumps({"code": CODE, "language": "python"}).encode()
    session_body = json.dumps({"language": "python"}).encode()

    def sid(rng):
        return setup.ids[rng.randrange(len(setup.ids))]

    ops = {
        "get_index": lambda rng, c, n: ("GET", "/", None),  # the floor: no database, a tiny answer
        "get_session": lambda rng, c, n: ("GET", f"/api/sessions/{sid(rng)}", None),
        "get_code": lambda rng, c, n: ("GET", f"/api/sessions/{sid(rng)}/code", None),
        "post_code": lambda rng, c, n: ("POST", f"/api/sessions/{sid(rng)}/code", code_body),
        "post_session": lambda rng, c, n: ("POST", "/api/sessions", session_body),
        "patch_session": lambda rng, c, n: (
            "PATCH",
            f"/api/sessions/{sid(rng)}",
            json.dumps({"title": f"client {c} request {n}"}).encode(),
        ),
        "get_participants": lambda rng, c, n: ("GET", f"/api/sessions/{sid(rng)}/participants", None),
        "get_history": lambda rng, c, n: ("GET", f"/api/sessions/{sid(rng)}/history?limit=20", None),
    }

    def mix(rng, c, n):
        x = rng.random()
        name = "get_code" if x < 0.7 else "post_code" if x < 0.9 else "post_session"
        return ops[name](rng, c, n)

    return {**ops, "mix": mix}


async def run_one(host, port, pid, op, clients: int, duration: float, warmup: float, seed: int) -> dict:
    latencies: list[float] = []
    errors: dict[str, int] = {}
    done_in_window = 0
    start = time.perf_counter()
    warm_end = start + warmup
    end = warm_end + duration
    ticks_at: dict[str, int] = {}

    async def client(index: int):
        nonlocal done_in_window
        rng = random.Random(seed * 1000 + index)
        conn = Connection(host, port)
        try:
            for n in range(MAX_REQUESTS_PER_CLIENT):
                t0 = time.perf_counter()
                if t0 >= end:
                    break
                method, path, body = op(rng, index, n)
                try:
                    async with asyncio.timeout(REQUEST_TIMEOUT_SECONDS):
                        status, _ = await conn.request(method, path, body)
                    error = None if 200 <= status < 300 else f"http_{status}"
                except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError) as exc:
                    error = type(exc).__name__
                    await conn.close()
                t1 = time.perf_counter()
                if t0 >= warm_end:
                    if error:
                        errors[error] = errors.get(error, 0) + 1
                    else:
                        latencies.append((t1 - t0) * 1000)
                        if t1 <= end:
                            done_in_window += 1
        finally:
            await conn.close()

    async def cpu_window():
        await asyncio.sleep(max(0.0, warm_end - time.perf_counter()))
        ticks_at["start"] = server_cpu_ticks(pid)
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        ticks_at["end"] = server_cpu_ticks(pid)

    await asyncio.gather(cpu_window(), *(client(i) for i in range(clients)))
    latencies.sort()
    measured = len(latencies) + sum(errors.values())
    cpu_seconds = (ticks_at["end"] - ticks_at["start"]) / CLK_TCK
    # Requests that ran inside the CPU window: completions in it (the window is long
    # enough that the in-flight requests at its two edges are a rounding error).
    return {
        "rps": done_in_window / duration,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "errors": errors,
        "requests": measured,
        "cpu_ms_per_req": 1000 * cpu_seconds / done_in_window if done_in_window else float("nan"),
        "cpu_cores": cpu_seconds / duration,
    }


async def prepare(host, port, sessions: int) -> Setup:
    conn = Connection(host, port)
    ids = []
    try:
        for i in range(sessions):
            status, body = await conn.request("POST", "/api/sessions", json.dumps({"language": "python"}).encode())
            if status != 201:
                raise RuntimeError(f"creating a session answered {status}: {body[:200]!r}")
            ids.append(json.loads(body)["sessionId"])
            for k in range(3):
                code = json.dumps({"code": f"{CODE}# save {k} of {i}\n"}).encode()
                status, body = await conn.request("POST", f"/api/sessions/{ids[-1]}/code", code)
                if status != 200:
                    raise RuntimeError(f"saving code answered {status}: {body[:200]!r}")
    finally:
        await conn.close()
    return Setup(ids)


async def run_all(host, port, pid, args) -> None:
    setup = await prepare(host, port, args.sessions)
    ops = operations(setup)
    names = list(ops) if args.only == "all" else args.only.split(",")
    unknown = [n for n in names if n not in ops]
    if unknown:
        raise SystemExit(f"unknown endpoints {unknown}; known: {', '.join(ops)}")
    print(f"server pid {pid}, {os.cpu_count()} CPUs, {args.clients} clients, {args.duration:g} s per endpoint")
    print(f"{'endpoint':<17} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms/req':>11} {'cores':>6}  errors")
    for name in names:
        result = await run_one(host, port, pid, ops[name], args.clients, args.duration, args.warmup, args.seed)
        print(
            f"{name:<17} {result['rps']:>8.0f} {result['p50_ms']:>8.2f} {result['p99_ms']:>8.2f} "
            f"{result['cpu_ms_per_req']:>11.3f} {result['cpu_cores']:>6.2f}  {result['errors'] or ''}",
            flush=True,
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds per endpoint")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--sessions", type=int, default=50, help="sessions created before the runs")
    parser.add_argument("--only", default="all", help="comma-separated endpoints (default: all, then the mix)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--url", default=None, help="a server already running (loopback only); needs --pid")
    parser.add_argument("--pid", type=int, default=None, help="the process serving --url, for its CPU time")
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes (`serve --workers`; needs --redis-url)"
    )
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default=None)
    args = parser.parse_args()
    if args.url:
        from urllib.parse import urlsplit

        parts = urlsplit(args.url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1") or args.pid is None:
            raise SystemExit("--url must be a loopback address, and --pid is needed with it")
        asyncio.run(run_all(parts.hostname, parts.port or 80, args.pid, args))
        return
    with tempfile.TemporaryDirectory() as workdir:
        env = {"LOG_LEVEL": "error", "WORKERS": str(args.workers)}
        if args.database_url:
            env["DATABASE_URL"] = args.database_url
        if args.redis_url:
            env["REDIS_URL"] = args.redis_url
        server = RunningServer(Path(workdir), env=env)
        server.start()
        try:
            asyncio.run(run_all("127.0.0.1", server.port, server.process.pid, args))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

"""Load benchmark of the WebSocket protocol against the real server, started as `make run` does.

    .venv/bin/python bench/bench_collaboration.py                # the target load, then saturation
    .venv/bin/python bench/bench_collaboration.py --rates 10     # one load only

Each of SESSIONS x PARTICIPANTS clients joins its session and sends delta code-updates
at RATE per second (each inserts a unique token at offset 0, based on the newest version
it has seen, so the server rebases it), or with `--full-text` the whole text as the
existing client does (a 400-byte document led by a unique token). Every other participant
of the session must receive each accepted update: latency is measured from the send to
each receipt (one clock: all clients live in this process), and lost = expected
deliveries - received. `server us/delivery` is the server process's CPU time (user +
system, from /proc) over the sending window divided by the deliveries in it.
"""

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect

from bench.bench_rest import server_cpu_ticks
from interview.testing import RunningServer

CLK_TCK = os.sysconf("SC_CLK_TCK")
# How many times a client reconnects to land on the worker it is meant for (--workers).
MAX_PLACEMENT_ATTEMPTS = 100


def create_session(url: str) -> str:
    request = urllib.request.Request(
        f"{url}/api/sessions", data=b"{}", method="POST", headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["sessionId"]


def clear_code(url: str, sid: str) -> None:
    request = urllib.request.Request(
        f"{url}/api/sessions/{sid}/code",
        data=b'{"code": ""}',
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    urllib.request.urlopen(request, timeout=10).read()


class Stats:
    def __init__(self):
        self.sent: dict[str, float] = {}
        self.accepted: set[str] = set()
        self.latencies: list[float] = []
        self.received = 0
        self.errors: dict[str, int] = {}


TOKEN = re.compile(r"^<[^>]*>")
FILLER = "".join(f"def f{i}(x):\n    return x * {i}\n" for i in range(40))[:380]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and the processes below it (the workers) so far."""
    return server_cpu_ticks(pid) / CLK_TCK


async def placed_connection(url: str, worker: int | None):
    """A WebSocket on `worker` (its handshake's X-Worker), reconnecting until the kernel
    hands it to that one; any worker when None."""
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        ws = await connect(url, max_size=None, ping_interval=None)
        if worker is None or ws.response.headers.get("X-Worker") == str(worker):
            return ws
        await ws.close()
    raise RuntimeError(f"no connection landed on worker {worker} in {MAX_PLACEMENT_ATTEMPTS} attempts")


async def client(
    ws_url, sid, index, rate, duration, stats: Stats, start_at, participants, full_text=False, worker=None
):
    async with await placed_connection(f"{ws_url}/ws/sessions/{sid}", worker) as ws:
        welcome = json.loads(await ws.recv())
        version = welcome["data"]["version"]
        user = f"s{sid[:6]}u{index}"
        await ws.send(json.dumps({"type": "join", "userId": user, "data": {"name": user}}))

        async def reader():
            nonlocal version
            async for raw in ws:
                message = json.loads(raw)
                kind = message["type"]
                if kind == "code-update":
                    now = time.perf_counter()
                    version = max(version, message["data"]["version"])
                    if full_text:
                        token = TOKEN.match(message["data"]["code"])
                        if token and token.group() in stats.sent:
                            stats.latencies.append(now - stats.sent[token.group()])
                            stats.received += 1
                        continue
                    for change in message["data"]["changes"]:
                        token = change["insert"]
                        if token in stats.sent:
                            stats.latencies.append(now - stats.sent[token])
                            stats.received += 1
                elif kind == "code-ack":
                    version = max(version, message["data"]["version"])
                elif kind == "error":
                    code = message["data"]["code"]
                    stats.errors[code] = stats.errors.get(code, 0) + 1

        reading = asyncio.create_task(reader())
        await asyncio.sleep(max(0, start_at - time.perf_counter()))
        interval = 1.0 / rate
        next_send = time.perf_counter() + interval * (index / participants)
        end = time.perf_counter() + duration
        n = 0
        while next_send < end:
            await asyncio.sleep(max(0, next_send - time.perf_counter()))
            n += 1
            token = f"<{user}:{n}>"
            if full_text:
                data = {"code": token + FILLER, "changes": []}
            else:
                data = {"changes": [{"from": 0, "to": 0, "insert": token}], "version": version, "seq": n}
            stats.sent[token] = time.perf_counter()
            await ws.send(json.dumps({"type": "code-update", "data": data}))
            next_send += interval
        await stats_drained(stats)
        reading.cancel()


async def stats_drained(stats: Stats, quiet: float = 3.0, limit: float = 60.0) -> None:
    """Wait until deliveries stop arriving (late is not lost: only what never comes is)."""
    deadline = time.perf_counter() + limit
    last, last_change = stats.received, time.perf_counter()
    while time.perf_counter() < deadline:
        await asyncio.sleep(0.25)
        if stats.received != last:
            last, last_change = stats.received, time.perf_counter()
        elif time.perf_counter() - last_change >= quiet:
            return


async def run_load(
    server: RunningServer,
    sessions: int,
    participants: int,
    rate: float,
    duration: float,
    full_text: bool = False,
    workers: int = 1,
) -> dict:
    sids = [create_session(server.url) for _ in range(sessions)]
    for sid in sids:
        clear_code(server.url, sid)
    stats = Stats()
    start_at = time.perf_counter() + 2.0
    # With several workers, each session's participants are spread over all of them.
    tasks = [
        client(
            server.ws_url,
            sid,
            i,
            rate,
            duration,
            stats,
            start_at,
            participants,
            full_text,
            worker=(i % workers) + 1 if workers > 1 else None,
        )
        for sid in sids
        for i in range(participants)
    ]

    async def measure_cpu():
        await asyncio.sleep(max(0, start_at - time.perf_counter()))
        before, received_before = cpu_seconds(server.process.pid), stats.received
        await asyncio.sleep(duration)
        return cpu_seconds(server.process.pid) - before, stats.received - received_before

    cpu_task = asyncio.ensure_future(measure_cpu())
    await asyncio.gather(*tasks)
    cpu, window_deliveries = await cpu_task
    expected = len(stats.sent) * (participants - 1) - sum(stats.errors.values()) * (participants - 1)
    lat = sorted(stats.latencies)

    def pct(p):
        return 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")

    return {
        "clients": sessions * participants,
        "rate_per_client": rate,
        "sent": len(stats.sent),
        "delivered_per_s": stats.received / duration,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": 1000 * lat[-1] if lat else float("nan"),
        "mean_ms": 1000 * statistics.fmean(lat) if lat else float("nan"),
        "lost": expected - stats.received,
        "server_us_per_delivery": 1e6 * cpu / window_deliveries if window_deliveries else float("nan"),
        "errors": stats.errors,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--participants", type=int, default=5)
    parser.add_argument("--rates", default="10,20,40,60,80", help="updates/s per client, one run each")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--full-text", action="store_true", help="send the whole text, as the existing client does")
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--redis-url", default=None)
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes; each session's clients are spread over them"
    )
    parser.add_argument(
        "--server", choices=["daphne", "uvicorn"], default="daphne", help="uvicorn must be installed to compare"
    )
    args = parser.parse_args()
    env = {
        "WS_RATE_LIMIT_PER_SECOND": "100000",
        "WS_RATE_LIMIT_BURST": "100000",
        "LOG_LEVEL": "error",
        "WORKERS": str(args.workers),
    }
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    if args.redis_url:
        env["REDIS_URL"] = args.redis_url
    with tempfile.TemporaryDirectory() as workdir:
        command = None
        if args.server == "uvicorn":
            command = [sys.executable, "-m", "uvicorn", "interview.asgi:application", "--log-level", "error"]
        server = RunningServer(Path(workdir), env=env, command=command)
        if command:
            command += ["--host", "127.0.0.1", "--port", str(server.port)]
        server.start()
        try:
            print(
                f"server pid {server.process.pid}, {os.cpu_count()} CPUs; "
                f"{args.sessions} sessions x {args.participants} participants"
            )
            print("rate/client  sent   delivered/s   p50 ms   p99 ms   max ms   lost  server us/delivery  errors")
            for rate in [float(r) for r in args.rates.split(",")]:
                result = asyncio.run(
                    run_load(
                        server, args.sessions, args.participants, rate, args.duration, args.full_text, args.workers
                    )
                )
                print(
                    f"{rate:>10.0f} {result['sent']:>6} {result['delivered_per_s']:>12.0f} {result['p50_ms']:>8.1f} "
                    f"{result['p99_ms']:>8.1f} {result['max_ms']:>8.1f} {result['lost']:>6} "
                    f"{result['server_us_per_delivery']:>19.1f}  {result['errors'] or ''}",
                    flush=True,
                )
        finally:
            server.stop()
            if os.environ.get("BENCH_SHOW_LOG"):
                print(server.log_path.read_text()[-5000:])


if __name__ == "__main__":
    main()

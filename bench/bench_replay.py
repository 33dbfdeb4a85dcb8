"""Benchmark of replay reads against the real server, started as `make run` does.

    .venv/bin/python bench/bench_replay.py                    # 10,000 versions, 400 reads
    .venv/bin/python bench/bench_replay.py --versions 2000 --reads 200

Builds one session of VERSIONS changes the way an interview makes them: one WebSocket
client typing deltas (each a keystroke or two, with a line break now and then, each awaiting
its `code-ack`), so the document grows to a few kB and every checkpoint and operation is
what the server itself wrote. Then it reads READS random versions with `GET
code?version=N` and the whole timeline page by page, one request at a time, and prints
p50/p99 latency, the server's CPU per read, and the session's stored size (the
`log_bytes` the server keeps of its operations and checkpoints). Loopback only.
"""

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from websockets.asyncio.client import connect

from bench.bench_rest import CLK_TCK, Connection, percentile, server_cpu_ticks
from interview.testing import RunningServer

# One typist makes the whole session as fast as the server acknowledges: the per-connection
# message rate limit (an abuse bound, 30/s) is raised so it does not pace the set-up.
# The writer's 5 ms gathering wait is set to 0 too: one typist has nobody to share a round with.
UNLIMITED = {"WS_RATE_LIMIT_PER_SECOND": "100000", "WS_RATE_LIMIT_BURST": "100000", "WRITER_GATHER_SECONDS": "0"}


def post_json(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


async def type_versions(ws_url: str, sid: str, versions: int, seed: int, document_kb: int) -> str:
    """One client types `versions` deltas, each awaiting its ack, the first of them pasting
    `document_kb` kB of text with an emoji per line (outside the BMP: the slow path of
    UTF-16 offsets) when asked; the text it ends with."""
    rng = random.Random(seed)
    async with connect(f"{ws_url}/ws/sessions/{sid}", max_size=None) as ws:
        welcome = json.loads(await ws.recv())
        text, version = welcome["data"]["currentCode"], welcome["data"]["version"]
        await ws.send(json.dumps({"type": "join", "userId": "typist", "data": {"name": "Typist"}}))
        paste = ("x = 1  # \U0001f600 padding of a long line\n" * (document_kb * 1024 // 40 + 1))[: document_kb * 1024]
        for seq in range(1, versions + 1):
            if seq == 1 and paste:
                units = len(text.encode("utf-16-le")) // 2
                change = {"from": units, "to": units, "insert": paste}
            elif len(text) > 40 and rng.random() < 0.15:
                start = _unit_at(text, rng.randrange(len(text) - 2))
                change = {"from": start, "to": _unit_at(text, start + 1), "insert": ""}
                if change["to"] == start:
                    change["to"] = _unit_at(text, start + 2)
            else:
                at = _unit_at(text, rng.randint(0, len(text)))
                change = {"from": at, "to": at, "insert": "\n" if rng.random() < 0.05 else rng.choice("abcdefxyz ()=")}
            message = {
                "type": "code-update",
                "userId": "typist",
                "data": {"changes": [change], "version": version, "seq": seq},
            }
            await ws.send(json.dumps(message))
            while True:
                frame = json.loads(await ws.recv())
                if frame["type"] == "code-ack":
                    break
                if frame["type"] == "error":
                    raise RuntimeError(f"edit refused: {frame['data']}")
            text = _splice(text, change)
            version = frame["data"]["version"]
    return text


def _unit_at(text: str, offset: int) -> int:
    """`offset` (in UTF-16 units) moved back off the middle of a surrogate pair."""
    units = text.encode("utf-16-le")
    if 0 < offset < len(units) // 2 and 0xDC <= units[2 * offset + 1] <= 0xDF:
        return offset - 1
    return offset


def _splice(text: str, change: dict) -> str:
    """`text` with one change applied, its offsets in UTF-16 code units."""
    units = text.encode("utf-16-le")
    start, end = 2 * change["from"], 2 * change["to"]
    return (units[:start] + change["insert"].encode("utf-16-le") + units[end:]).decode("utf-16-le")


async def read_all(server: RunningServer, sid: str, versions: int, reads: int, seed: int) -> dict:
    rng = random.Random(seed)
    host, port = "127.0.0.1", server.port
    conn = Connection(host, port)
    for _ in range(20):  # warm-up
        await conn.request("GET", f"/api/sessions/{sid}/code?version={rng.randint(0, versions)}")
    latencies = []
    ticks = server_cpu_ticks(server.process.pid)
    for _ in range(reads):
        version = rng.randint(0, versions)
        started = time.perf_counter()
        status, body = await conn.request("GET", f"/api/sessions/{sid}/code?version={version}")
        latencies.append((time.perf_counter() - started) * 1000)
        if status != 200 or json.loads(body)["version"] != version:
            raise RuntimeError(f"version {version}: {status} {body[:200]!r}")
    cpu_ms = (server_cpu_ticks(server.process.pid) - ticks) * 1000 / CLK_TCK / reads
    pages, items, page_latencies, query = 0, 0, [], "limit=500"
    while True:
        started = time.perf_counter()
        status, body = await conn.request("GET", f"/api/sessions/{sid}/timeline?{query}")
        page_latencies.append((time.perf_counter() - started) * 1000)
        page = json.loads(body)
        pages, items = pages + 1, items + len(page["items"])
        if not page["hasMore"]:
            break
        query = f"limit=500&after={page['next']['after']}"
        if page["next"]["afterEvent"] is not None:
            query += f"&afterEvent={page['next']['afterEvent']}"
    await conn.close()
    return {
        "p50": percentile(sorted(latencies), 0.50),
        "p99": percentile(sorted(latencies), 0.99),
        "cpu_ms": cpu_ms,
        "pages": pages,
        "items": items,
        "page_p50": percentile(sorted(page_latencies), 0.50),
        "page_p99": percentile(sorted(page_latencies), 0.99),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--reads", type=int, default=400)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--document-kb", type=int, default=0, help="paste this much text first (default 0)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir, RunningServer(Path(workdir), env=UNLIMITED) as server:
        sid = post_json(f"{server.url}/api/sessions", {"language": "python"})["sessionId"]
        started = time.perf_counter()
        final = asyncio.run(type_versions(server.ws_url, sid, args.versions, args.seed, args.document_kb))
        built = time.perf_counter() - started
        result = asyncio.run(read_all(server, sid, args.versions, args.reads, args.seed))
        with urllib.request.urlopen(f"{server.url}/api/sessions/{sid}/code", timeout=30) as answer:
            assert json.loads(answer.read())["code"] == final
        size = server.manage(
            "shell",
            "-c",
            f"from sessions.models import InterviewSession as S; print(S.objects.get(pk='{sid}').log_bytes)",
        ).stdout.split()[-1]
    print(f"session of {args.versions} versions typed in {built:.1f} s; document {len(final)} characters;")
    print(f"  log (operations + checkpoints) {int(size) / 1024:.0f} KiB")
    print(
        f"GET code?version=N, {args.reads} random N: p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms,"
        f" server CPU {result['cpu_ms']:.2f} ms per read"
    )
    print(
        f"timeline, limit=500: {result['items']} items in {result['pages']} pages,"
        f" p50 {result['page_p50']:.1f} ms, p99 {result['page_p99']:.1f} ms per page"
    )


if __name__ == "__main__":
    main()

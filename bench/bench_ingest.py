"""CPU per change on the WebSocket ingest path, in process: frame parsing, the writer's group
commit (`sessions.services.code_changes_apply` in rounds) and its publish to the channel layer.

    .venv/bin/python bench/bench_ingest.py                     # every stage, full-text updates
    .venv/bin/python bench/bench_ingest.py --stage writer      # one stage
    .venv/bin/python bench/bench_ingest.py --profile service   # cProfile of one stage

A full-text update is what loadbench and the existing client send: the whole text (a marker
line and a 400-byte body) with `changes: []`. On a SQLite file in WAL with the server's
options (a database of its own in the temp directory, removed after). Stages:

- parse: `messages.parse` + `parse_code_update` of the frame text;
- service: `code_changes_apply` in rounds of ROUND changes over SESSIONS sessions (a
  transaction each, as the writer runs them), CPU of the calling thread;
- writer: `DocumentWriter.submit` of ROUND frames' changes at a time, then `idle()`: the
  group commit on the database thread, the acks and the broadcasts to 4 other members of
  each session's group (in-memory layer, drained): CPU of the whole process.

Numbers are CPU microseconds per change (process or thread CPU, steadier than wall time on
a shared machine); run it through `flock /tmp/bench.lock`.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DB = Path(tempfile.gettempdir()) / f"bench-ingest-{os.getpid()}.sqlite3"
os.environ["DATABASE_URL"] = f"sqlite:///{DB}"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "interview.settings")
os.environ.setdefault("LOG_LEVEL", "warning")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

SESSIONS, USERS, ROUND = 20, 5, 20
FILLER = "".join(f"line {i:03d} = compute(value_{i}, other);\n" for i in range(12))[:400]


def frame(user: int, seq: int) -> str:
    code = f"#@lb {user} {seq} {time.time():.6f}@#\n{FILLER}"
    return json.dumps({"type": "code-update", "userId": f"u{user}", "data": {"code": code, "changes": []}})


def make_sessions() -> list:
    from sessions.services import session_create

    return [session_create().id for _ in range(SESSIONS)]


def stage_parse(count: int) -> float:
    from collaboration import messages

    texts = [frame(i % 100, i) for i in range(count)]
    start = time.thread_time()
    for text in texts:
        message = messages.parse(text)
        messages.parse_code_update(message.data)
    return (time.thread_time() - start) / count * 1e6


def _changes(sids, start: int, count: int):
    from sessions.services import CodeChange

    out = []
    for n in range(start, start + count):
        sid = sids[n % len(sids)]
        user = (n // len(sids)) % USERS
        code = f"#@lb {user} {n} {n * 0.001:.6f}@#\n{FILLER}"
        out.append((sid, CodeChange(code=code, user_id=f"u{user}", connection_version=0)))
    return out


def stage_service(count: int, sids) -> float:
    from django.conf import settings

    from sessions.services import code_changes_apply, rebase_work_budget

    batches = [_changes(sids, n, ROUND) for n in range(0, count, ROUND)]
    start = time.thread_time()
    for batch in batches:
        with rebase_work_budget(settings.WRITER_ROUND_WORK):
            code_changes_apply(submissions=batch, notify=False)
    return (time.thread_time() - start) / (len(batches) * ROUND) * 1e6


async def _writer(count: int, sids) -> float:
    from channels.layers import get_channel_layer

    from collaboration.writer import Submission, get_writer
    from sessions import events

    layer = get_channel_layer()
    authors = {}
    receivers = []
    for sid in sids:
        names = [await layer.new_channel() for _ in range(USERS)]
        for name in names:
            await layer.group_add(events.group_name(sid), name)
        authors[sid] = names
        receivers.extend(names)
    writer = get_writer()

    async def drain(name):
        # As a connection's channel pump takes its messages.
        while True:
            await layer.receive(name)

    drainers = [asyncio.ensure_future(drain(name)) for name in receivers]
    batches = [_changes(sids, n, ROUND) for n in range(0, count, ROUND)]
    start = time.process_time()
    for number, batch in enumerate(batches):
        for index, (sid, change) in enumerate(batch):
            writer.submit(Submission(sid, change, authors[sid][(number + index) % USERS]))
        await writer.idle()
    spent = time.process_time() - start
    for drainer in drainers:
        drainer.cancel()
    return spent / (len(batches) * ROUND) * 1e6


def stage_writer(count: int, sids) -> float:
    return asyncio.run(_writer(count, sids))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stage", choices=["parse", "service", "writer", "all"], default="all")
    parser.add_argument("--changes", type=int, default=4000, help="changes per repetition")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--round", type=int, default=20, help="changes per round (group commit)")
    parser.add_argument("--profile", choices=["parse", "service", "writer"])
    args = parser.parse_args()
    global ROUND
    ROUND = args.round
    try:
        call_command("migrate", verbosity=0)
        sids = make_sessions()
        # Warm up past the operation cache's 256 versions a session, as a long session is.
        stage_service(SESSIONS * 300, sids)
        stages = {
            "parse": lambda: stage_parse(args.changes),
            "service": lambda: stage_service(args.changes, sids),
            "writer": lambda: stage_writer(args.changes, sids),
        }
        if args.profile:
            profiler = cProfile.Profile()
            profiler.enable()
            stages[args.profile]()
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
            return
        chosen = list(stages) if args.stage == "all" else [args.stage]
        for name in chosen:
            runs = sorted(stages[name]() for _ in range(args.repeat))
            print(f"{name:8s} CPU us per change: median {statistics.median(runs):7.1f}  min {runs[0]:7.1f}")
    finally:
        from django.db import connections

        connections.close_all()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{DB}{suffix}").unlink(missing_ok=True)


if __name__ == "__main__":
    main()

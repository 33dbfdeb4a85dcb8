"""End-to-end latency of POST /api/execute against the real server, started as `make run` does.

    .venv/bin/python bench/bench_execute_api.py [--runs 40] [--concurrency 4] [--seconds 8]
                                                [--languages python,cpp] [--skip-floors] [--skip-queueing]

Per language: p50/p99 of one client's requests (hello world, keep-alive), then executions/s
with `--concurrency` clients sending back to back and the CPU per run of the server, its
spawner and every sandbox (user + system time from /proc over the window). Then each
language's floor on this machine: the same program run by its toolchain on the host, no
sandbox (and an empty bubblewrap sandbox). Then queueing: eight 1-second runs sent at once,
and one session's single run while another session floods twelve.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interview.testing import RunningServer

HELLO = {
    "python": "print(1)",
    "javascript": "console.log(1)",
    "cpp": '#include <cstdio>\nint main() { std::puts("1"); }\n',
    "java": "public class Main { public static void main(String[] a) { System.out.println(1); } }\n",
}


class Client:
    """One keep-alive HTTP connection."""

    def __init__(self, port: int):
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def execute(self, language: str, code: str | None = None, session: str | None = None) -> tuple[float, dict]:
        body = {"code": code or HELLO[language], "language": language}
        if session:
            body["sessionId"] = session
        started = time.perf_counter()
        self.connection.request(
            "POST", "/api/execute", body=json.dumps(body), headers={"Content-Type": "application/json"}
        )
        response = self.connection.getresponse()
        result = json.loads(response.read())
        elapsed = (time.perf_counter() - started) * 1000
        if response.status == 200 and code is None and not result["success"]:
            raise RuntimeError(f"{language}: {result}")
        return elapsed, {**result, "http": response.status}


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def stat_fields(pid: int | str) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def tree_cpu_ms(pids: list[int]) -> float:
    """User + system time of these processes and their reaped children, in ms."""
    total = 0
    for pid in pids:
        total += sum(int(x) for x in stat_fields(pid)[11:15])
    return total * 1000 / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if stat_fields(entry)[1] == str(pid):
                    found.append(int(entry))
            except OSError:
                continue
    return found


def floors(runs: int) -> None:
    """Each toolchain's own cost on the host, no sandbox: what no sandbox can beat."""
    from execution.sandbox import SandboxConfig
    from execution.sandbox.host.setup import host_for

    host = host_for(SandboxConfig())
    tc = host.toolchains
    with tempfile.TemporaryDirectory() as d:
        for name, source in (
            ("main.cpp", HELLO["cpp"]),
            ("Main.java", HELLO["java"]),
            ("main.js", HELLO["javascript"]),
        ):
            Path(d, name).write_text(source)
        commands = {
            "python -I -S (no site)": [[tc["python"].binaries["python"], "-I", "-S", "-c", "print(1)"]],
            "node main.js": [[tc["javascript"].binaries["node"], "main.js"]],
            "g++ -O2 main.cpp && ./main": [
                [tc["cpp"].binaries["gxx"], "-std=gnu++17", "-O2", "-pipe", "-o", "main", "main.cpp"],
                ["./main"],
            ],
            "javac Main.java && java Main": [
                [tc["java"].binaries["javac"], "Main.java"],
                [tc["java"].binaries["java"], "Main"],
            ],
            "empty bwrap sandbox (true)": [
                [
                    host.bwrap or "bwrap",
                    "--unshare-all",
                    "--ro-bind",
                    "/usr",
                    "/usr",
                    "--symlink",
                    "usr/bin",
                    "/bin",
                    "--symlink",
                    "usr/lib",
                    "/lib",
                    "--symlink",
                    "usr/lib64",
                    "/lib64",
                    "--proc",
                    "/proc",
                    "--dev",
                    "/dev",
                    "--",
                    "/usr/bin/true",
                ]
            ],
        }
        print("floors on this machine (the toolchain on the host, no sandbox):")
        for label, steps in commands.items():
            times = []
            n = runs if "java" not in label and "g++" not in label else max(5, runs // 4)
            for _ in range(n + 1):
                started = time.perf_counter()
                for step in steps:
                    subprocess.run(step, cwd=d, check=True, capture_output=True)
                times.append((time.perf_counter() - started) * 1000)
            times = times[1:]
            print(f"  {label:<30} p50 {percentile(times, 0.5):7.1f} ms  (n={n})", flush=True)


def run_all(threads: list[threading.Thread]) -> float:
    """Start the threads, wait for them all: the seconds it took."""
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def queueing(port: int, session_ids: tuple[str, str]) -> None:
    print("queueing (EXECUTION_MAX_CONCURRENT = CPU count, the default wait and queue):")
    results: list[tuple[float, dict]] = []

    def one(code, session=None, into=results):
        into.append(Client(port).execute("python", code, session))

    wall = run_all([threading.Thread(target=one, args=("import time; time.sleep(1)",)) for _ in range(8)])
    ok = sum(1 for _, r in results if r["http"] == 200 and r.get("success"))
    print(f"  eight 1-second runs at once: {ok}/8 ran, the last answered after {wall:.1f} s")
    flood: list[tuple[float, dict]] = []
    single: list[tuple[float, dict]] = []
    threads = [
        threading.Thread(target=one, args=("import time; time.sleep(0.5)", session_ids[0], flood)) for _ in range(12)
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the flood is queued (a benchmark may sleep; a test may not)
    one("print(1)", session_ids[1], single)
    for t in threads:
        t.join()
    flood_ok = sorted(ms for ms, r in flood if r["http"] == 200)
    print(
        f"  session A floods 12 runs of 0.5 s, then session B sends one: B answered in {single[0][0]:.0f} ms;"
        f" A's last in {flood_ok[-1]:.0f} ms; A refused: {sum(1 for _, r in flood if r['http'] == 429)}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--languages", default=",".join(HELLO))
    parser.add_argument("--skip-floors", action="store_true")
    parser.add_argument("--skip-queueing", action="store_true")
    args = parser.parse_args()
    languages = args.languages.split(",")
    with tempfile.TemporaryDirectory() as workdir:
        env = {"EXECUTION_MAX_QUEUE": "64", "EXECUTION_MAX_QUEUE_PER_CLIENT": "64", "LOG_LEVEL": "error"}
        server = RunningServer(Path(workdir), env=env).start()
        try:
            print("one client, end to end over HTTP (hello world):")
            client = Client(server.port)
            for language in languages:
                for _ in range(3):
                    client.execute(language)  # warm up (the spares are built)
                runs = args.runs if language != "java" else max(10, args.runs // 4)
                times = [client.execute(language)[0] for _ in range(runs)]
                print(
                    f"  {language:<10} p50 {percentile(times, 0.5):7.1f} ms  p99 {percentile(times, 0.99):7.1f} ms"
                    f"  mean {statistics.fmean(times):7.1f} ms  (n={runs})",
                    flush=True,
                )
            print(f"{args.concurrency} concurrent clients, {args.seconds:g} s each:")
            pids = [server.process.pid, *children_of(server.process.pid)]  # the server and its spawner
            for language in languages:
                times: list[float] = []
                deadline = time.perf_counter() + args.seconds

                def loop(language=language, times=times, deadline=deadline):
                    own = Client(server.port)
                    while time.perf_counter() < deadline:
                        times.append(own.execute(language)[0])

                cpu = tree_cpu_ms(pids)
                elapsed = run_all([threading.Thread(target=loop) for _ in range(args.concurrency)])
                per_run = (tree_cpu_ms(pids) - cpu) / max(1, len(times))
                print(
                    f"  {language:<10} {len(times) / elapsed:6.1f} executions/s"
                    f"  p50 {percentile(times, 0.5):7.1f} ms  p99 {percentile(times, 0.99):7.1f} ms"
                    f"  CPU per run (server, spawner, sandboxes) {per_run:6.1f} ms",
                    flush=True,
                )
            if not args.skip_queueing:
                sessions = []
                for _ in range(2):
                    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
                    conn.request("POST", "/api/sessions", body="{}", headers={"Content-Type": "application/json"})
                    sessions.append(json.loads(conn.getresponse().read())["sessionId"])
                queueing(server.port, tuple(sessions))
        finally:
            server.stop()
    if not args.skip_floors:
        floors(args.runs)


if __name__ == "__main__":
    main()

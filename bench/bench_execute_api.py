"""End-to-end latency of POST /api/execute against the real server, started as `make run` does.

    .venv/bin/python bench/bench_execute_api.py [--runs 40] [--concurrency 4] [--seconds 8]

Per language: p50/p99 of one client's requests (hello world), then executions/s with
`--concurrency` clients sending back to back.
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from interview.testing import RunningServer

HELLO = {
    "python": "print(1)",
    "javascript": "console.log(1)",
    "cpp": '#include <cstdio>\nint main() { std::puts("1"); }\n',
    "java": "public class Main { public static void main(String[] a) { System.out.println(1); } }\n",
}


def execute(url: str, language: str) -> float:
    body = json.dumps({"code": HELLO[language], "language": language}).encode()
    request = urllib.request.Request(
        f"{url}/api/execute", data=body, method="POST", headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        result = json.loads(response.read())
    elapsed = time.perf_counter() - started
    if not result["success"]:
        raise RuntimeError(f"{language}: {result}")
    return elapsed * 1000


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        env = {"EXECUTION_MAX_QUEUE": "64", "LOG_LEVEL": "error"}
        server = RunningServer(Path(workdir), env=env).start()
        try:
            print("one client, end to end over HTTP (hello world):")
            for language in HELLO:
                execute(server.url, language)  # warm up
                runs = args.runs if language != "java" else max(10, args.runs // 4)
                times = [execute(server.url, language) for _ in range(runs)]
                print(
                    f"  {language:<10} p50 {percentile(times, 0.5):7.1f} ms  p99 {percentile(times, 0.99):7.1f} ms"
                    f"  mean {statistics.fmean(times):7.1f} ms  (n={runs})",
                    flush=True,
                )
            print(f"{args.concurrency} concurrent clients, {args.seconds:g} s each:")
            for language in HELLO:
                times: list[float] = []
                deadline = time.perf_counter() + args.seconds

                def client(language=language, times=times, deadline=deadline):
                    while time.perf_counter() < deadline:
                        times.append(execute(server.url, language))

                threads = [threading.Thread(target=client) for _ in range(args.concurrency)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                print(
                    f"  {language:<10} {len(times) / args.seconds:6.1f} executions/s"
                    f"  p50 {percentile(times, 0.5):7.1f} ms  p99 {percentile(times, 0.99):7.1f} ms",
                    flush=True,
                )
        finally:
            server.stop()


if __name__ == "__main__":
    main()

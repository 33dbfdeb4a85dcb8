"""`manage.py serve --workers N`: N server processes behind one listening socket.

The parent binds the socket once and starts N workers (`manage.py serve --fd FD`, each a
whole daphne server) that inherit it; the kernel hands each new connection to one of
them. The parent serves nothing itself: it starts a new worker when one dies (logged, and
after a growing pause when a worker keeps dying at start), and on SIGTERM or SIGINT passes
SIGTERM on, so every worker stops accepting, lets the changes in flight commit, closes its
WebSockets with 1012 (the client reconnects, to a worker that is still there) and exits;
a worker still running after STOP_GRACE_SECONDS is killed.

Workers share what every process of a deployment shares: the database (SQLite in WAL on
one machine, PostgreSQL for many) and the Redis channel layer; so N > 1 needs REDIS_URL.
"""

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

logger = logging.getLogger("interview.workers")

# How long a stopping worker may take to close its connections before it is killed.
STOP_GRACE_SECONDS = 30.0
# A worker that dies sooner than this after its start is restarted after a pause that
# doubles each time (up to MAX_RESTART_PAUSE_SECONDS): a broken start does not spin.
QUICK_DEATH_SECONDS = 5.0
MAX_RESTART_PAUSE_SECONDS = 30.0


def listening_socket(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """The server's socket, bound and listening, inheritable by the workers."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


class Supervisor:
    """Runs `workers` worker processes on one socket until told to stop."""

    def __init__(self, *, host: str, port: int, workers: int, manage_py: Path, out=None):
        self.host, self.port, self.count = host, port, workers
        self.manage_py = manage_py
        self.out = out or sys.stdout
        self.children: dict[int, int] = {}  # pid -> worker index
        self.started: dict[int, float] = {}  # worker index -> when it last started
        self.quick_deaths: dict[int, int] = {}
        self.stopping = False
        self.sock: socket.socket | None = None

    def say(self, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()

    def spawn(self, index: int) -> None:
        fd = self.sock.fileno()
        env = {**os.environ, "WORKERS": str(self.count), "WORKER_INDEX": str(index)}
        process = subprocess.Popen(
            [sys.executable, str(self.manage_py), "serve", "--fd", str(fd)],
            pass_fds=(fd,),
            env=env,
            cwd=self.manage_py.parent,
        )
        self.children[process.pid] = index
        self.started[index] = time.monotonic()
        self.say(f"Worker {index} started (pid {process.pid})")

    def stop(self, signum, _frame) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.say(f"Stopping on {signal.Signals(signum).name}: workers close their connections and exit")
        for pid in list(self.children):
            _signal(pid, signal.SIGTERM)
        signal.signal(signal.SIGALRM, self.kill_all)
        signal.alarm(int(STOP_GRACE_SECONDS))

    def kill_all(self, _signum, _frame) -> None:
        for pid, index in list(self.children.items()):
            logger.warning("Worker %d (pid %d) did not stop in %.0f s; killing it", index, pid, STOP_GRACE_SECONDS)
            _signal(pid, signal.SIGKILL)

    def run(self) -> int:
        self.sock = listening_socket(self.host, self.port)
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
        self.say(f"Serving on http://{self.host}:{self.port} with {self.count} workers (docs at /docs)")
        for index in range(1, self.count + 1):
            self.spawn(index)
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            index = self.children.pop(pid, None)
            if index is None:
                continue
            if self.stopping:
                self.say(f"Worker {index} (pid {pid}) stopped")
                continue
            logger.warning("Worker %d (pid %d) %s; starting a new one", index, pid, _describe(status))
            self.restart(index)
        signal.alarm(0)
        self.sock.close()
        return 0

    def restart(self, index: int) -> None:
        lived = time.monotonic() - self.started.get(index, 0.0)
        if lived < QUICK_DEATH_SECONDS:
            self.quick_deaths[index] = self.quick_deaths.get(index, 0) + 1
            pause = min(2.0 ** (self.quick_deaths[index] - 1), MAX_RESTART_PAUSE_SECONDS)
            logger.warning("Worker %d died %.1f s after its start; waiting %.0f s first", index, lived, pause)
            time.sleep(pause)
            if self.stopping:
                return
        else:
            self.quick_deaths[index] = 0
        self.spawn(index)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)

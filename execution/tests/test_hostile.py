"""A battery of hostile programs in a real sandbox: bombs, daemons, secrets, the network, signals,
privileges, planted links; none reaches the host (no Django)."""

import asyncio
import dataclasses
import os
import socket
import stat
import time
import uuid

import pytest

from execution.sandbox import Limits
from execution.tests.helpers import (
    CONFIG,
    IS_ROOT,
    PREEXISTING,
    SLOW,
    host_uids_of,
    needs_sandbox,
    processes_of_run_uids,
    processes_with,
    run,
    sleep_token,
)

pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]


def exists(path: str) -> bool:
    return os.path.lexists(path)


class TestHostile:
    @pytest.mark.parametrize("mode", ["bwrap", "unsafe-rlimits-only"])
    async def test_program_holds_no_descriptor_but_its_standard_streams(self, mode):
        """The spawner's request carries cgroup files, a mount namespace, bwrap's pipes: none reaches the program."""
        code = """
        import os
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        print(fds[:-1], [os.readlink(f"/proc/self/fd/{fd}").split(":")[0] for fd in fds[3:-1]])
        """
        config = CONFIG if mode == "bwrap" else dataclasses.replace(CONFIG, mode=mode)
        result = await run("python", code, config=config)
        assert result.stdout == "[0, 1, 2] []\n", result  # the last is listdir's own

    async def test_fork_bomb_stops_at_the_process_limit(self):
        """An os.fork loop never has more than max_processes alive, and none outlives the run."""
        code = """
        import os
        while True:
            try:
                os.fork()
            except OSError:
                pass
        """
        started = time.monotonic()
        task = asyncio.create_task(run("python", code, limits=Limits(timeout_s=1, max_processes=32)))
        peak = 0
        while not task.done():
            peak = max(peak, len(set(processes_of_run_uids()) - PREEXISTING))
            await asyncio.sleep(0.02)
        result = await task
        assert result.status == "timeout"
        assert time.monotonic() - started < 8
        if IS_ROOT:
            assert 10 < peak <= 32 + 2  # the program's processes plus bwrap's two

    async def test_subprocess_bomb(self):
        """Spawning sleepers without end ends at the limit, and every sleeper is gone afterwards."""
        token = sleep_token()
        code = f"""
        import subprocess, time
        refused = 0
        while True:
            try:
                subprocess.Popen(["/bin/sleep", "{token}"])
            except OSError:
                refused += 1
                if refused == 1:
                    print("refused", flush=True)
                time.sleep(0.01)
        """
        task = asyncio.create_task(run("python", code, limits=Limits(timeout_s=2, max_processes=24)))
        await asyncio.sleep(1)
        seen = await host_uids_of(token)
        result = await task
        assert result.status == "timeout", result
        assert result.stdout == "refused\n"
        assert 10 < len(seen) <= 24
        assert processes_with(token) == []

    async def test_detached_child_does_not_outlive_the_answer(self):
        """A setsid + double-fork daemon is killed with the sandbox, on exit and on timeout."""
        tokens = [sleep_token(), sleep_token()]
        code = """
        import os, sys, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                for fd in (0, 1, 2):
                    os.close(fd)
                os.execv("/bin/sleep", ["sleep", "{token}"])
            os._exit(0)
        time.sleep(0.3)
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
        alive = [p for p in pids if b"{token}" in open(f"/proc/{{p}}/cmdline", "rb").read()]
        print("daemon running", len(alive), flush=True)
        {tail}
        """
        exits, hangs = await asyncio.gather(
            run("python", code.format(token=tokens[0], tail="")),
            run("python", code.format(token=tokens[1], tail="time.sleep(60)"), limits=SLOW),
        )
        assert exits.status == "ok", exits
        assert exits.stdout == "daemon running 1\n"
        assert hangs.status == "timeout"
        assert hangs.stdout == "daemon running 1\n"
        assert processes_with(tokens[0]) == []
        assert processes_with(tokens[1]) == []

    async def test_secret_files_are_not_visible(self):
        """/etc/shadow, /root, /home, the project and its secret key cannot be read."""
        code = """
        import os
        for path in ["/etc/shadow", "/etc/passwd", "/work/main/manage.py", "/work/main/.secret_key",
                     "/work/main/db.sqlite3", "/root/.bash_history", "/home", "/work", "/var", "/sys/kernel"]:
            try:
                if os.path.isdir(path):
                    print("LISTED", path, os.listdir(path))
                else:
                    print("READ", path, len(open(path, "rb").read()))
            except OSError as e:
                print("DENIED", path, type(e).__name__)
        print("ROOT", sorted(os.listdir("/")))
        print("SLASHROOT", os.listdir("/root") if os.path.isdir("/root") else None)
        """
        result = await run("python", code)
        assert result.status == "ok", result
        assert "READ" not in result.stdout
        assert "LISTED" not in result.stdout
        assert result.stdout.count("DENIED") == 10
        root = result.stdout.split("ROOT ", 1)[1].splitlines()[0]
        for name in ("work", "home", "var", "sys", "srv", "opt", "mnt", "etc/shadow"):
            assert f"'{name}'" not in root
        slash_root = result.stdout.split("SLASHROOT ", 1)[1].strip()
        assert slash_root in ("None", "['.pyenv']")

    async def test_server_environment_is_not_visible(self, monkeypatch):
        """A secret in the server's environment is in neither os.environ nor any /proc environ."""
        secret = "s3cr3t-" + uuid.uuid4().hex
        monkeypatch.setenv("INTERVIEW_TEST_SECRET", secret)
        code = """
        import os
        print(dict(os.environ))
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    print(pid, open(f"/proc/{pid}/environ", "rb").read())
                except OSError as e:
                    print(pid, e)
        """
        result = await run("python", code)
        assert result.status == "ok", result
        assert secret not in result.stdout
        assert "INTERVIEW_TEST_SECRET" not in result.stdout
        assert "DJANGO" not in result.stdout
        assert "HOME': '/tmp'" in result.stdout

    async def test_writes_outside_the_work_dir_do_not_persist(self):
        """Writes to system dirs fail; writes to the sandbox's tmpfs vanish; nothing reaches the host."""
        name = "sandbox-marker-" + uuid.uuid4().hex
        targets = ["/tmp", "/dev/shm", "/var/tmp", "/run/lock", "/usr", "/etc", "/", "/root", "/dev"]
        code = f"""
        import os
        for d in {targets!r}:
            try:
                with open(os.path.join(d, "{name}"), "w") as f:
                    f.write("x")
                print("WROTE", d)
            except OSError as e:
                print("FAILED", d, type(e).__name__)
        """
        result = await run("python", code)
        assert result.status == "ok", result
        wrote = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("WROTE")}
        assert wrote <= {"/tmp", "/dev/shm"}
        assert [d for d in targets if exists(os.path.join(d, name))] == []

    async def test_no_network_to_a_host_listener(self):
        """A TCP connection to a listener the test opens on 127.0.0.1 fails."""
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(5)
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"""
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=2)
            print("CONNECTED")
        except OSError as e:
            print("REFUSED", type(e).__name__)
        try:
            socket.create_connection(("1.1.1.1", 53), timeout=2)
            print("INTERNET")
        except OSError as e:
            print("NO INTERNET", type(e).__name__)
        """
        try:
            result = await run("python", code)
            assert result.status == "ok", result
            assert "REFUSED" in result.stdout
            assert "NO INTERNET" in result.stdout
            with pytest.raises(BlockingIOError):
                server.accept()
        finally:
            server.close()

    async def test_signals_cannot_reach_the_server(self):
        """kill(ppid), kill(-1) and killpg only hit the sandbox."""
        codes = [
            "import os\nos.kill(os.getppid(), 9)\nprint('alive')",
            "import os\ntry:\n    os.kill(-1, 9)\nexcept ProcessLookupError:\n    pass\nprint('alive')",
            "import os\ntry:\n    os.killpg(os.getpgid(0), 9)\nexcept OSError:\n    pass\nprint('alive')",
        ]
        results = await asyncio.gather(*(run("python", c) for c in codes))
        assert results[0].stdout == "alive\n"
        assert results[1].stdout == "alive\n"
        assert results[2].stdout in ("", "alive\n")
        assert os.getpid() > 0  # still here

    async def test_runs_as_an_unprivileged_uid_outside(self):
        """Seen from the host, every process of the program runs as a non-root (per-run) uid."""
        token = sleep_token()
        code = f"import subprocess\nsubprocess.run(['/bin/sleep', '{token}'], timeout=1.5)"
        task = asyncio.create_task(run("python", code))
        uids = await host_uids_of(token)
        result = await task
        assert result.status == "runtime_error", result
        assert result.error.startswith("subprocess.TimeoutExpired")
        assert uids, "the sandboxed process was not seen from the host"
        for real, effective, saved, fs in uids:
            assert 0 not in (real, effective, saved, fs)
            if IS_ROOT:
                assert CONFIG.uid_base <= real < CONFIG.uid_base + CONFIG.uid_count

    async def test_ctypes_is_contained(self):
        """ctypes can crash only itself and cannot regain privileges or namespaces."""
        crash = "import ctypes\nctypes.string_at(0)"
        probe = """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        print("setuid", libc.setuid(0))
        print("unshare_user", libc.unshare(0x10000000))
        print("mount", libc.mount(b"none", b"/tmp", b"tmpfs", 0, None))
        print("ptrace", libc.ptrace(16, {host_pid}, 0, 0))
        print("uid", os.getuid())
        for pid in ("1", "self"):
            status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status"))
            print("caps", pid, status["CapEff"].strip(), status["CapBnd"].strip(), status["NoNewPrivs"].strip())
        """
        probe = probe.replace("{host_pid}", str(os.getpid()))
        crashed, probed = await asyncio.gather(run("python", crash), run("python", probe))
        assert crashed.status == "runtime_error"
        assert crashed.error == "Killed by signal SIGSEGV"
        assert probed.status == "ok", probed
        assert "setuid -1" in probed.stdout
        assert "unshare_user -1" in probed.stdout
        assert "mount -1" in probed.stdout
        assert "ptrace -1" in probed.stdout
        assert "caps 1 0000000000000000 0000000000000000 1" in probed.stdout  # bwrap's init: nothing to steal
        assert "caps self 0000000000000000 0000000000000000 1" in probed.stdout

    async def test_planted_symlinks_do_not_touch_host_files(self, tmp_path):
        """Links planted in the work dir never lead cleanup to delete, chown or modify host files."""
        victim_dir = tmp_path / "victim"
        victim_dir.mkdir()
        victim = victim_dir / "precious.txt"
        victim.write_text("keep me")
        before = victim.stat()
        code = f"""
        import os
        os.symlink("{victim}", "link_to_file")
        os.symlink("{victim_dir}", "link_to_dir")
        os.mkdir("sub")
        os.symlink("{victim_dir}", "sub/deeper")
        os.symlink("/etc/passwd", "main.py.orig")
        os.mkdir("locked")
        os.chmod("locked", 0)
        print("planted")
        """
        result = await run("python", code)
        assert result.stdout == "planted\n", result
        after = victim.stat()
        assert victim.read_text() == "keep me"
        assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (
            before.st_uid,
            before.st_gid,
            stat.S_IMODE(before.st_mode),
        )
        assert os.listdir(victim_dir) == ["precious.txt"]

    async def test_work_dir_is_fresh_and_private_per_run(self):
        """Each run starts with only its source; files of a previous run are gone."""
        code = "import os\nprint(sorted(os.listdir('.')), os.getcwd())\nopen('leftover', 'w').write('x')"
        first, second = await run("python", code), await run("python", code)
        assert first.stdout == second.stdout == "['main.py'] /box\n"

"""A run's own filesystem in a real sandbox: files and bytes stop at its limits while the host's disk
does not move, a compiled program's output survives into its run stage, nothing outlives the
answer; make_workdir alone; and a server that is not root (no Django)."""

import asyncio
import errno
import os
import shutil
import signal
import stat
import subprocess
import textwrap
import time

import pytest

from execution.sandbox import Limits
from execution.sandbox.host.runfs import _HelperMaker, tmpfs_maker
from execution.sandbox.types import default_python
from execution.sandbox.workdir import make_workdir, remove_workdir
from execution.tests.helpers import (
    IS_ROOT,
    STATUS,
    WORK_ROOT,
    detached_mounts_held,
    mounts_of_device,
    needs,
    needs_sandbox,
    processes_appearing,
    processes_with,
    run,
    sleep_token,
)

pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]
needs_own_fs = pytest.mark.skipif(not STATUS.disk_limited, reason=f"no run filesystem here: {STATUS.disk_reason}")

# Appended to a program: it keeps its files while the host looks, until the test kills the sleeper.
HOLD = """
import subprocess
print("holding", flush=True)
subprocess.run(["/bin/sleep", "{token}"])
print("released")
"""
HOST_INODES_TOLERANCE = 500  # other processes of this machine create files too
HOST_BYTES_TOLERANCE = 16 << 20


async def run_holding(code: str, limits: Limits):
    """Run `code` + HOLD; the host's statvfs of the work root before the run and while it holds its files."""
    token = sleep_token()
    before = os.statvfs(WORK_ROOT)
    task = asyncio.create_task(run("python", code + HOLD.format(token=token), limits=limits))
    sleepers = await processes_appearing(token)
    during = os.statvfs(WORK_ROOT)
    for pid in sleepers:
        os.kill(pid, signal.SIGKILL)
    result = await task
    assert sleepers, f"the program never got to hold its files: {result}"
    return result, before, during


def host_used(before: os.statvfs_result, during: os.statvfs_result) -> tuple[int, int]:
    """(inodes, bytes) of the host's filesystem taken between the two views."""
    return before.f_favail - during.f_favail, (before.f_bavail - during.f_bavail) * during.f_frsize


@needs_own_fs
class TestRunFilesystem:
    @pytest.mark.parametrize("where", ["/box", "/tmp", "/dev/shm"])
    async def test_many_small_files_stop_at_the_inode_limit_not_on_the_host(self, where):
        """Creating files without end gets ENOSPC at disk_inodes, the three writable places share that
        budget, the program goes on, and the host's disk gives up no inodes or blocks."""
        code = f"""
        import os
        made = 0
        try:
            while made < 20_000:
                open(os.path.join({where!r}, f"f{{made}}"), "x").close()
                made += 1
        except OSError as e:
            print("stopped", e.errno, made, flush=True)
        refused = []
        for d in ("/box", "/tmp", "/dev/shm"):
            try:
                os.mkdir(os.path.join(d, "one-more"))
            except OSError as e:
                refused.append(e.errno)
        print("then", refused, flush=True)
        """
        result, before, during = await run_holding(textwrap.dedent(code), Limits(disk_inodes=1000))
        assert result.status == "ok", result
        inodes, used = host_used(before, during)
        assert inodes < HOST_INODES_TOLERANCE
        assert used < HOST_BYTES_TOLERANCE
        first, then, *rest = result.stdout.splitlines()
        assert first.startswith(f"stopped {errno.ENOSPC} "), result.stdout
        assert 1000 - 16 <= int(first.split()[2]) <= 1000 - 5  # the root, box, tmp, shm and main.py are inodes too
        assert then == f"then {[errno.ENOSPC] * 3}"
        assert rest == ["holding", "released"]

    async def test_one_huge_file_stops_at_the_size_limit(self):
        """A file growing without end (file_size_mb above disk_mb) gets ENOSPC at disk_mb, /tmp and
        /dev/shm are full with it, and the host's disk does not fill."""
        code = """
        import os
        fd = os.open("/box/huge", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        chunk = b"x" * (1 << 20)
        try:
            while True:
                os.write(fd, chunk)
        except OSError as e:
            print("stopped", e.errno, os.fstat(fd).st_size >> 20, flush=True)
        refused = []
        for d in ("/tmp", "/dev/shm"):
            try:
                with open(d + "/more", "wb") as f:
                    f.write(b"y" * 8192)
            except OSError as e:
                refused.append(e.errno)
        print("then", refused, flush=True)
        """
        limits = Limits(disk_mb=8, file_size_mb=1024, timeout_s=10)
        result, before, during = await run_holding(textwrap.dedent(code), limits)
        assert result.status == "ok", result
        assert host_used(before, during)[1] < HOST_BYTES_TOLERANCE
        first, then, *rest = result.stdout.splitlines()
        assert first.startswith(f"stopped {errno.ENOSPC} "), result.stdout
        assert 7 <= int(first.split()[2]) <= 8
        assert then == f"then {[errno.ENOSPC] * 2}"
        assert rest == ["holding", "released"]

    @needs("cpp")
    async def test_compiled_program_runs_from_the_same_filesystem(self):
        """The compile stage's output is in the run stage's /box, which is one filesystem with /tmp
        and /dev/shm, of disk_inodes inodes."""
        code = r"""
        #include <cstdio>
        #include <sys/stat.h>
        #include <sys/statvfs.h>
        #include <unistd.h>
        int main() {
            const char* places[] = {"/box", "/tmp", "/dev/shm"};
            for (const char* p : places) {
                struct statvfs v; struct stat s;
                statvfs(p, &v); stat(p, &s);
                std::printf("%s %lu %lu\n", p, (unsigned long)v.f_files, (unsigned long)s.st_dev);
            }
            std::printf("main %d\n", access("/box/main", X_OK));
        }
        """
        result = await run("cpp", code, limits=Limits(disk_inodes=1234))
        assert result.status == "ok", result
        *places, main = result.stdout.splitlines()
        assert [line.split()[:2] for line in places] == [["/box", "1234"], ["/tmp", "1234"], ["/dev/shm", "1234"]]
        assert len({line.split()[2] for line in places}) == 1
        assert main == "main 0"

    async def test_nothing_of_a_run_reaches_the_next_or_outlives_the_answer(self):
        """Files left in /box, /tmp and /dev/shm are not seen by the next run, and once a run has
        answered no mount namespace holds its filesystem any more."""
        code = """
        import os
        print([sorted(os.listdir(d)) for d in ("/box", "/tmp", "/dev/shm")])
        st = os.stat("/box")
        print(os.major(st.st_dev), os.minor(st.st_dev))
        for d in ("/box", "/tmp", "/dev/shm"):
            open(os.path.join(d, "left-by-a-run"), "w").close()
        """
        first = await run("python", code)
        assert first.status == "ok", first
        listing, device = first.stdout.splitlines()
        major, minor = (int(n) for n in device.split())
        assert mounts_of_device(major, minor) == []
        second = await run("python", code)
        assert second.stdout.splitlines()[0] == listing == "[['main.py'], [], []]"


@needs_own_fs
class TestMakeWorkdir:
    def test_own_filesystem_holds_the_source_and_is_the_uids(self):
        """make_workdir: an empty mount point on the host, the source in box/; remove_workdir frees it all."""
        maker, _ = tmpfs_maker(default_python())
        uid = 60999 if IS_ROOT else None
        workdir = make_workdir(WORK_ROOT, "main.py", "print(1)", uid, tmpfs=maker, size_bytes=1 << 20, inodes=32)
        try:
            assert os.listdir(workdir.path) == []
            assert sorted(os.listdir(f"/proc/self/fd/{workdir.fs_fd}")) == ["box", "shm", "tmp"]
            box = workdir.open_box()
            try:
                source = os.stat("main.py", dir_fd=box, follow_symlinks=False)
                assert stat.S_IMODE(source.st_mode) == 0o644
                assert os.fstat(box).st_uid == (uid if IS_ROOT else os.getuid())
                assert os.fstatvfs(box).f_files == 32
            finally:
                os.close(box)
        finally:
            remove_workdir(workdir)
        assert not os.path.lexists(workdir.path)
        assert workdir.fs_fd is None

    def test_a_failure_half_way_leaves_nothing(self):
        """A source that cannot be written: the error is raised, the filesystem and mount point are gone."""
        maker, _ = tmpfs_maker(default_python())
        with pytest.raises(FileNotFoundError):
            make_workdir(WORK_ROOT, "no/such/dir.py", "", None, tmpfs=maker)
        assert detached_mounts_held() == []

    @pytest.mark.parametrize(("size_bytes", "inodes"), [(0, 4096), (1 << 20, 0)])
    def test_zero_is_refused_not_unlimited(self, size_bytes, inodes):
        """tmpfs reads a size or nr_inodes of 0 as unlimited: make_workdir refuses it."""
        maker, _ = tmpfs_maker(default_python())
        with pytest.raises(OSError, match="above 0"):
            make_workdir(WORK_ROOT, "main.py", "", None, tmpfs=maker, size_bytes=size_bytes, inodes=inodes)


class TestHelper:
    def test_the_helper_makes_filesystems_and_is_replaced_when_it_dies(self):
        """The helper of a server that is not root answers with a limited tmpfs; one that died is
        replaced at the next request; it exits when its server's end of the socket closes."""
        maker = _HelperMaker(default_python())
        first, userns = maker.make(1 << 20, 8, None)
        try:
            assert os.fstatvfs(first).f_files == 8
            assert os.readlink(f"/proc/self/fd/{userns}").startswith("user:[")
            helper = maker._helper
            helper.kill()
            helper.wait()
            second, _ = maker.make(2 << 20, 9, None)
            os.close(second)
            assert maker._helper is not helper
        finally:
            os.close(first)
            maker._sock.close()
            for fd in {userns, maker._userns_fd}:
                os.close(fd)
        assert maker._helper.wait(timeout=10) == 0


_UNPRIVILEGED = """
import asyncio, os, sys, tempfile
sys.path.insert(0, sys.argv[1])
from execution.sandbox import Limits, SandboxConfig, run_code, sandbox_status
work_root = tempfile.mkdtemp(prefix="runner-unprivileged-")
missing = "/nonexistent/tool"
config = SandboxConfig(work_root=work_root, node_path=missing, gxx_path=missing, javac_path=missing, java_path=missing)
status = sandbox_status(config)
print(status.isolated, status.per_run_uid, status.disk_limited, status.disk_reason)
code = '''
n = 0
try:
    while n < 20000:
        open(f"/tmp/f{n}", "x").close()
        n += 1
except OSError as e:
    print("stopped", e.errno, n)
'''
result = asyncio.run(run_code(language="python", code=code, limits=Limits(disk_inodes=300), config=config))
print(result.status, result.stdout.strip())
print(os.listdir(work_root))
os.rmdir(work_root)
"""


@needs_own_fs
@pytest.mark.skipif(not IS_ROOT or not shutil.which("setpriv"), reason="needs root and setpriv to become another uid")
class TestUnprivilegedServer:
    def test_a_server_that_is_not_root_gets_run_filesystems_through_its_helper(self):
        """As nobody, the sandbox makes each run's filesystem through the user-namespace helper, the
        inode limit holds, and the helper exits with the server."""
        python = "/usr/bin/python3"
        if not os.path.exists(python):
            pytest.skip("no system Python that nobody may run")
        version = subprocess.run([python, "-c", "import sys; print(sys.version_info >= (3, 11))"], capture_output=True)
        if version.stdout.strip() != b"True":
            pytest.skip("the system Python is older than 3.11")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        helper = os.path.join(root, "execution", "sandbox", "host", "runfs.py")
        argv = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", python, "-I", "-c", _UNPRIVILEGED, root]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd="/", env={"PATH": "/usr/bin:/bin"})
        assert out.returncode == 0, out.stderr
        assert out.stdout.splitlines() == ["True False True None", "ok stopped 28 295", "[]"]
        deadline = time.monotonic() + 5  # the helper sees our end close as the server exits
        while processes_with(helper) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert processes_with(helper) == []

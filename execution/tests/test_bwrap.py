"""The sandbox's shape as argv and rlimits, built without running anything."""

import resource

from execution.sandbox.bwrap import BOX, bwrap_argv, cgroup_limits, rlimits
from execution.sandbox.host.cgroups import CgroupHierarchy
from execution.sandbox.host.setup import Host
from execution.sandbox.host.toolchains import Toolchain
from execution.sandbox.process import Stage
from execution.sandbox.types import Limits, SandboxConfig, SandboxStatus
from execution.sandbox.workdir import Workdir

TOOLCHAIN = Toolchain("python", {"python": "/opt/py/bin/python3"}, binds=("/opt/py",), hide=("/opt/py/site",))


def host(**kwargs) -> Host:
    return Host(
        SandboxStatus(True, "bwrap", None, usable=True),
        SandboxConfig(),
        bwrap="/usr/bin/bwrap",
        bwrap_features=frozenset({"--disable-userns", "--size"}),
        root_links=(("/bin", "usr/bin"), ("/lib64", "")),
        **kwargs,
    )


def stage(**kwargs) -> Stage:
    values = {
        "cmd": ["python3", "main.py"],
        "toolchain": TOOLCHAIN,
        "timeout_s": 2.5,
        "limits": Limits(),
        "memory_kind": "native",
        "memory_mb": 256,
        "nproc": 64,
        "nofile": 64,
        "env": {},
        "stdin": b"",
        "workdir": Workdir("/tmp/exec-x"),
        **kwargs,
    }
    return Stage(**values)


def pairs(argv: list[str], flag: str) -> list[tuple[str, str]]:
    return [(argv[i + 1], argv[i + 2]) for i, a in enumerate(argv) if a == flag]


class TestArgv:
    def test_every_namespace_and_no_further_user_namespaces(self):
        """All namespaces are new, the sandbox cannot create user namespaces, and dies with us."""
        argv = bwrap_argv(host(), stage(), info_fd=7)
        assert argv[:3] == ["/usr/bin/bwrap", "--info-fd", "7"]
        for flag in ("--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session"):
            assert flag in argv

    def test_mounts_usr_toolchain_and_the_run_directory(self):
        """/usr and the toolchain are read-only, site-packages hidden, the run directory is /box."""
        argv = bwrap_argv(host(), stage(), info_fd=7)
        assert ("/usr", "/usr") in pairs(argv, "--ro-bind")
        assert ("/opt/py", "/opt/py") in pairs(argv, "--ro-bind")
        assert ("/lib64", "/lib64") in pairs(argv, "--ro-bind")
        assert ("usr/bin", "/bin") in pairs(argv, "--symlink")
        assert ("/tmp/exec-x", BOX) in pairs(argv, "--bind")
        assert ("/opt/py/site", "--remount-ro") in pairs(argv, "--tmpfs")  # an empty read-only tmpfs
        assert argv[argv.index("--") :] == ["--", "python3", "main.py"]

    def test_the_system_call_filter_is_handed_over_by_descriptor(self):
        """With a filter, bwrap reads it from the descriptor it is given; without one, there is no --seccomp."""
        argv = bwrap_argv(host(), stage(), info_fd=7, seccomp_fd=9)
        assert argv[:5] == ["/usr/bin/bwrap", "--info-fd", "7", "--seccomp", "9"]
        assert "--seccomp" not in bwrap_argv(host(), stage(), info_fd=7)

    def test_an_own_filesystem_holds_box_tmp_and_shm(self):
        """With a run's own filesystem, /box, /tmp and /dev/shm are its directories, not bwrap's tmpfs."""
        argv = bwrap_argv(host(), stage(workdir=Workdir("/tmp/exec-x", fs_fd=9)), info_fd=7)
        binds = pairs(argv, "--bind")
        assert binds == [("/tmp/exec-x/box", BOX), ("/tmp/exec-x/tmp", "/tmp"), ("/tmp/exec-x/shm", "/dev/shm")]
        assert [d for d, _ in pairs(argv, "--tmpfs")] == ["/opt/py/site"]
        assert argv[argv.index("--chdir") + 1] == BOX

    def test_without_one_tmp_and_shm_are_tmpfs_of_disk_mb(self):
        """On the host's disk, /box is the run directory and /tmp, /dev/shm are bwrap tmpfs of disk_mb each."""
        argv = bwrap_argv(host(), stage(limits=Limits(disk_mb=8)), info_fd=7)
        assert pairs(argv, "--bind") == [("/tmp/exec-x", BOX)]
        sized = [(argv[i + 3], argv[i + 1]) for i, a in enumerate(argv) if a == "--size" and argv[i + 2] == "--tmpfs"]
        assert sized == [("/opt/py/site", "4096"), ("/tmp", str(8 << 20)), ("/dev/shm", str(8 << 20))]

    def test_environment_is_cleared_to_a_fixed_set(self):
        """Only PATH, HOME, LANG, TMPDIR and the language's own variables reach the program."""
        argv = bwrap_argv(host(), stage(env={"MALLOC_ARENA_MAX": "2"}), info_fd=7)
        assert "--clearenv" in argv
        assert {k for k, _ in pairs(argv, "--setenv")} == {"PATH", "HOME", "LANG", "TMPDIR", "MALLOC_ARENA_MAX"}


class TestLimits:
    def test_cpu_and_address_space(self):
        """CPU is the timeout rounded up plus one second; native programs get AS = memory."""
        found = {res: (soft, hard) for res, soft, hard in rlimits(stage(), host(uids=object()))}
        if resource.getrlimit(resource.RLIMIT_CPU)[1] == resource.RLIM_INFINITY:
            assert found[resource.RLIMIT_CPU] == (4, 5)
        assert found[resource.RLIMIT_CORE] == (0, 0)
        if resource.getrlimit(resource.RLIMIT_AS)[1] == resource.RLIM_INFINITY:
            assert found[resource.RLIMIT_AS] == (256 << 20, 256 << 20)

    def test_managed_runtimes_get_address_space_slack(self):
        """The JVM and V8 reserve more than they use: more slack where a memory cgroup bounds them."""
        memcg = (CgroupHierarchy("/sys/fs/cgroup/x", ("memory",), True),)
        managed = stage(memory_kind="managed")
        with_cgroup = {r: soft for r, soft, _ in rlimits(managed, host(uids=object(), cgroups=memcg))}
        without = {r: soft for r, soft, _ in rlimits(managed, host(uids=object()))}
        if resource.getrlimit(resource.RLIMIT_AS)[1] == resource.RLIM_INFINITY:
            assert with_cgroup[resource.RLIMIT_AS] == (256 + 4096) << 20
            assert without[resource.RLIMIT_AS] == (256 + 1536) << 20

    def test_cgroup_backstop(self):
        """The cgroup holds memory plus a backstop, and the program's processes plus bwrap's two."""
        assert cgroup_limits(stage()) == {"memory_bytes": (256 + 64) << 20, "pids": 66}
        assert cgroup_limits(stage(memory_kind="managed"))["memory_bytes"] == (256 + 256) << 20

"""Per-stage cgroups on fake trees in a temporary directory: v2, v1, hybrid, containers (no real hierarchy)."""

import errno
import fcntl
import os

import pytest

from execution.sandbox.host.cgroups import SERVER_LEAF, CgroupFS, CgroupHierarchy, StageCgroup, writable_hierarchies

ME = str(os.getpid())
PROBE = f"interview-exec-probe-{ME}"
V2_ORDER = ("cpuset", "cpu", "io", "memory", "hugetlb", "pids", "rdma", "misc")
MB = 1 << 20


class FakeKernel(CgroupFS):
    """A cgroup tree in a temporary directory that acts as the kernel does where this code relies on it.

    mkdir makes a cgroup's control files (on v2 those of the controllers its parent enables),
    rmdir removes them and refuses (EBUSY) while the cgroup holds a process or a child, a write
    to a file the kernel did not make is refused, a pid written into cgroup.procs ("0": the
    writer) moves that process, and on v2 a cgroup other than the root cannot both hold
    processes and enable controllers for its children. Every write is recorded, in order.
    """

    def __init__(self, top: str, *, swap: bool = True) -> None:
        super().__init__(os.path.join(top, "proc", "self"))
        self.top, self.swap = top, swap
        self.writes: list[tuple[str, str]] = []  # (path under top, value)
        self.mounts: dict[str, tuple[str, ...] | None] = {}  # mount directory: v1 controllers, None for v2
        self.mountinfo: list[str] = []
        os.makedirs(self.proc_self)

    # The host as a test describes it.

    def at(self, path: str) -> str:
        return os.path.join(self.top, path.lstrip("/"))

    def mount_v2(self, point: str, *, root: str = "/", true_root: bool | None = None, **cgroup) -> str:
        """A cgroup2 mount showing cgroup `root`; its top is the hierarchy's root cgroup unless told."""
        where = self.at(point)
        self.mounts[where] = None
        self.mountinfo.append(f"{len(self.mountinfo) + 30} 20 0:26 {root} {_escape(where)} rw - cgroup2 cgroup2 rw")
        return self.cgroup(where, true_root=root == "/" if true_root is None else true_root, **cgroup)

    def mount_v1(self, point: str, controllers: tuple[str, ...]) -> str:
        where = self.at(point)
        self.mounts[where] = controllers
        options = ",".join(("rw", *controllers))
        self.mountinfo.append(f"{len(self.mountinfo) + 30} 20 0:27 / {_escape(where)} rw - cgroup cgroup {options}")
        os.makedirs(where)
        _put(where, {"cgroup.procs": "", "tasks": ""})
        return where

    def cgroup(self, where, *, controllers=(), enabled=(), procs=(), true_root=False) -> str:
        """A v2 cgroup as systemd or a container runtime left it."""
        os.makedirs(where, exist_ok=True)
        files = {"cgroup.controllers": " ".join(controllers), "cgroup.subtree_control": " ".join(enabled)}
        files["cgroup.procs"] = "".join(f"{pid}\n" for pid in procs)
        if not true_root:
            files["cgroup.type"] = "domain"
            files.update(self._knobs(controllers, v2=True))
        _put(where, files)
        return where

    def place(self, *lines: str) -> None:
        """Write /proc/self/cgroup and /proc/self/mountinfo."""
        _put(self.proc_self, {"cgroup": "".join(f"{line}\n" for line in lines)})
        _put(self.proc_self, {"mountinfo": "".join(f"{line}\n" for line in self.mountinfo)})

    # What the kernel does.

    def mkdir(self, path: str) -> None:
        os.mkdir(path)
        v1 = self.mounts[self._mount_of(path)]
        if v1 is None:
            enabled = _words(os.path.join(os.path.dirname(path), "cgroup.subtree_control"))
            files = {"cgroup.type": "domain", "cgroup.controllers": " ".join(enabled), "cgroup.subtree_control": ""}
            files |= {"cgroup.procs": "", "cgroup.events": "populated 0\nfrozen 0\n", **self._knobs(enabled, v2=True)}
        else:
            files = {"cgroup.procs": "", "tasks": "", **self._knobs(v1, v2=False)}
        _put(path, files)

    def rmdir(self, path: str) -> None:
        if _words(os.path.join(path, "cgroup.procs")) or any(e.is_dir() for e in os.scandir(path)):
            raise OSError(errno.EBUSY, "cgroup in use", path)
        for entry in os.scandir(path):
            os.unlink(entry.path)  # the control files vanish with the cgroup
        os.rmdir(path)

    def write(self, path: str, value: str) -> None:
        self.writes.append((os.path.relpath(path, self.top), value))
        if not os.path.isfile(path):
            raise PermissionError(errno.EACCES, "a cgroup file system makes no new files", path)
        cgroup, name = os.path.split(path)
        if name == "cgroup.procs":
            self._move(ME if value.strip() == "0" else value.strip(), cgroup)
        elif name == "cgroup.subtree_control" and self.mounts[self._mount_of(cgroup)] is None:
            self._enable(value.split(), cgroup)
        else:
            _put(cgroup, {name: value})

    def _mount_of(self, path: str) -> str:
        return max((m for m in self.mounts if path == m or path.startswith(m + "/")), key=len)

    def _knobs(self, controllers, *, v2: bool) -> dict[str, str]:
        files = {}
        if "memory" in controllers and v2:
            files |= {
                "memory.max": "max",
                "memory.events": "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
            }
            files |= {"memory.swap.max": "max"} if self.swap else {}
        elif "memory" in controllers:
            files |= {"memory.limit_in_bytes": "9223372036854771712"}
            files |= {"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n"}
            files |= {"memory.memsw.limit_in_bytes": "9223372036854771712"} if self.swap else {}
        if "pids" in controllers:
            files |= {"pids.max": "max", "pids.current": "0"}
        return files

    def _move(self, pid: str, cgroup: str) -> None:
        if self._is_inner(cgroup):
            raise OSError(errno.EBUSY, "no internal processes: this cgroup enables controllers", cgroup)
        for dirpath, _dirs, files in os.walk(self._mount_of(cgroup)):
            if "cgroup.procs" in files:
                procs = os.path.join(dirpath, "cgroup.procs")
                _put(dirpath, {"cgroup.procs": "".join(f"{p}\n" for p in _words(procs) if p != pid)})
        _put(cgroup, {"cgroup.procs": "".join(f"{p}\n" for p in [*_words(os.path.join(cgroup, "cgroup.procs")), pid])})

    def _enable(self, tokens: list[str], cgroup: str) -> None:
        available = _words(os.path.join(cgroup, "cgroup.controllers"))
        enabled = set(_words(os.path.join(cgroup, "cgroup.subtree_control")))
        for token in tokens:
            if token[:1] not in ("+", "-") or token[1:] not in available:
                raise OSError(errno.ENOENT, f"controller {token[1:]} not available", cgroup)
            (enabled.add if token[0] == "+" else enabled.discard)(token[1:])
        non_root = os.path.exists(os.path.join(cgroup, "cgroup.type"))
        if enabled and non_root and _words(os.path.join(cgroup, "cgroup.procs")):
            raise OSError(errno.EBUSY, "no internal processes: this cgroup holds processes", cgroup)
        _put(cgroup, {"cgroup.subtree_control": " ".join(c for c in V2_ORDER if c in enabled)})

    def _is_inner(self, cgroup: str) -> bool:
        """On v2, a cgroup other than the root that enables controllers for its children: none may join it."""
        if self.mounts[self._mount_of(cgroup)] is not None or not os.path.exists(os.path.join(cgroup, "cgroup.type")):
            return False
        return bool(_words(os.path.join(cgroup, "cgroup.subtree_control")))

    # What a test reads back.

    def procs(self, cgroup: str) -> list[str]:
        return _words(os.path.join(cgroup, "cgroup.procs"))

    def writes_under(self, cgroup: str) -> list[tuple[str, str]]:
        rel = os.path.relpath(cgroup, self.top)
        return [(os.path.relpath(p, rel), v) for p, v in self.writes if os.path.dirname(p) == rel]


def _put(directory: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        with open(os.path.join(directory, name), "w") as f:
            f.write(text)


def _words(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def _escape(path: str) -> str:
    return path.replace("\\", "\\134").replace(" ", "\\040")


@pytest.fixture
def kernel(tmp_path):
    return FakeKernel(str(tmp_path))


def probe_writes(v2: bool = True) -> list[tuple[str, str]]:
    """What the trial cgroup gets: 64 MB, swap off, 8 processes."""
    if v2:
        return [("memory.max", str(64 * MB)), ("memory.swap.max", "0"), ("pids.max", "8")]
    return [("memory.limit_in_bytes", str(64 * MB)), ("memory.memsw.limit_in_bytes", str(64 * MB)), ("pids.max", "8")]


def systemd_v2(kernel: FakeKernel, *, controllers=("cpu", "io", "memory", "pids"), procs=(ME,)) -> str:
    """A pure v2 host: the server alone in its service's delegated cgroup, nothing enabled below it."""
    top = kernel.mount_v2("/sys/fs/cgroup", controllers=("cpu", "io", "memory", "pids"), enabled=controllers)
    kernel.cgroup(f"{top}/system.slice", controllers=controllers, enabled=controllers)
    service = kernel.cgroup(f"{top}/system.slice/interview.service", controllers=controllers, procs=procs)
    kernel.place("0::/system.slice/interview.service")
    return service


class TestPureV2:
    def test_server_moves_into_a_leaf_and_enables_memory_and_pids_for_the_runs(self, kernel):
        """Alone in its delegated cgroup, the server moves into its leaf, then enables +memory +pids there."""
        service = systemd_v2(kernel)
        assert writable_hierarchies(kernel) == [CgroupHierarchy(service, ("memory", "pids"), True)]
        leaf = f"{service}/{SERVER_LEAF}"
        assert kernel.procs(leaf) == [ME]
        assert kernel.procs(service) == []
        assert _words(f"{service}/cgroup.subtree_control") == ["memory", "pids"]
        rel = os.path.relpath(service, kernel.top)
        assert kernel.writes[:2] == [
            (f"{rel}/{SERVER_LEAF}/cgroup.procs", "0"),
            (f"{rel}/cgroup.subtree_control", "+memory +pids"),
        ]

    def test_trial_cgroup_is_made_with_limits_and_removed(self, kernel):
        """The trial cgroup beside the leaf gets 64 MB, swap 0 and 8 processes, and is gone afterwards."""
        service = systemd_v2(kernel)
        writable_hierarchies(kernel)
        assert kernel.writes_under(f"{service}/{PROBE}") == probe_writes()
        assert _child_cgroups(service) == [SERVER_LEAF]

    def test_a_process_started_in_the_leaf_uses_the_same_cgroup_and_moves_nothing(self, kernel):
        """A worker forked after the move (its cgroup is the leaf) makes runs beside the leaf, as before."""
        service = systemd_v2(kernel)
        writable_hierarchies(kernel)
        kernel.writes.clear()
        kernel.place(f"0::/system.slice/interview.service/{SERVER_LEAF}")
        assert writable_hierarchies(kernel) == [CgroupHierarchy(service, ("memory", "pids"), True)]
        assert [p for p, _ in kernel.writes] == [
            os.path.relpath(f"{service}/{PROBE}/{f}", kernel.top) for f, _ in probe_writes()
        ]

    def test_other_processes_in_the_cgroup_are_not_moved_and_v2_is_not_used(self, kernel):
        """A cgroup shared with processes that are not the server (a login session) is left as it is."""
        service = systemd_v2(kernel, procs=(ME, "4242"))
        assert writable_hierarchies(kernel) == []
        assert kernel.writes == []
        assert kernel.procs(service) == [ME, "4242"]
        assert not os.path.exists(f"{service}/{SERVER_LEAF}")

    def test_without_memory_delegated_only_pids_is_used(self, kernel):
        """v2 without the memory controller delegated: pids alone, and no memory file is written."""
        service = systemd_v2(kernel, controllers=("cpu", "pids"))
        assert writable_hierarchies(kernel) == [CgroupHierarchy(service, ("pids",), True)]
        assert _words(f"{service}/cgroup.subtree_control") == ["pids"]
        assert kernel.writes_under(f"{service}/{PROBE}") == [("pids.max", "8")]

    def test_without_memory_or_pids_nothing_is_touched(self, kernel):
        """A delegated cgroup without memory and pids: no hierarchy, the server stays where it is."""
        service = systemd_v2(kernel, controllers=("cpu", "io"))
        assert writable_hierarchies(kernel) == []
        assert kernel.writes == []
        assert kernel.procs(service) == [ME]

    def test_without_swap_accounting_swap_max_is_not_written(self, tmp_path):
        """No memory.swap.max (swap accounting off): the trial writes memory.max and pids.max only."""
        kernel = FakeKernel(str(tmp_path), swap=False)
        service = systemd_v2(kernel)
        assert writable_hierarchies(kernel) == [CgroupHierarchy(service, ("memory", "pids"), True)]
        assert kernel.writes_under(f"{service}/{PROBE}") == [("memory.max", str(64 * MB)), ("pids.max", "8")]


class TestRootAndContainers:
    def test_true_root_cgroup_uses_what_the_system_enabled_and_moves_nothing(self, kernel):
        """In the hierarchy's root (processes and children may coexist) the server is not moved."""
        top = kernel.mount_v2(
            "/sys/fs/cgroup", controllers=("cpu", "memory", "pids"), enabled=("memory", "pids"), procs=("1", ME)
        )
        kernel.place("0::/")
        assert writable_hierarchies(kernel) == [CgroupHierarchy(top, ("memory", "pids"), True)]
        assert kernel.procs(top) == ["1", ME]
        assert [os.path.dirname(p) for p, _ in kernel.writes] == [os.path.relpath(f"{top}/{PROBE}", kernel.top)] * 3

    def test_true_root_cgroup_with_nothing_enabled_is_left_alone(self, kernel):
        """The root's subtree_control is the system's choice: never written."""
        kernel.mount_v2("/sys/fs/cgroup", controllers=("cpu", "memory", "pids"), procs=(ME,))
        kernel.place("0::/")
        assert writable_hierarchies(kernel) == []
        assert kernel.writes == []

    def test_container_with_its_own_cgroup_namespace(self, kernel):
        """A cgroup namespace's root looks like "/" but is not the root: the server moves into a leaf."""
        top = kernel.mount_v2("/sys/fs/cgroup", true_root=False, controllers=("cpu", "memory", "pids"), procs=(ME,))
        kernel.place("0::/")
        assert writable_hierarchies(kernel) == [CgroupHierarchy(top, ("memory", "pids"), True)]
        assert kernel.procs(f"{top}/{SERVER_LEAF}") == [ME]
        assert _words(f"{top}/cgroup.subtree_control") == ["memory", "pids"]

    def test_container_whose_mount_shows_its_own_cgroup_not_the_root(self, kernel):
        """mountinfo's root field is the container's cgroup: the mount point is the server's cgroup."""
        scope = "/system.slice/docker-abc.scope"
        top = kernel.mount_v2("/sys/fs/cgroup", root=scope, controllers=("memory", "pids"), procs=(ME,))
        kernel.place(f"0::{scope}")
        assert writable_hierarchies(kernel) == [CgroupHierarchy(top, ("memory", "pids"), True)]
        kernel.place(f"0::{scope}/{SERVER_LEAF}")  # a worker started after the move
        assert writable_hierarchies(kernel) == [CgroupHierarchy(top, ("memory", "pids"), True)]

    def test_the_mount_that_shows_the_servers_cgroup_is_the_one_used(self, kernel):
        """Of two cgroup2 mounts, one showing another container's cgroup, the one holding ours is used."""
        kernel.mount_v2("/other", root="/system.slice/other.scope", controllers=("memory", "pids"))
        ours = kernel.mount_v2("/sys/fs/with space", root="/system.slice", controllers=("memory", "pids"))
        service = kernel.cgroup(f"{ours}/interview.service", controllers=("memory", "pids"), procs=(ME,))
        kernel.place("0::/system.slice/interview.service")
        assert writable_hierarchies(kernel) == [CgroupHierarchy(service, ("memory", "pids"), True)]

    def test_a_cgroup_the_mount_does_not_show_is_not_used(self, kernel):
        """A process outside the mount's root (moved out of the container's cgroup) finds nothing."""
        kernel.mount_v2("/sys/fs/cgroup", root="/system.slice/docker-abc.scope", controllers=("memory", "pids"))
        kernel.place("0::/system.slice/elsewhere.service")
        assert writable_hierarchies(kernel) == []
        assert kernel.writes == []


class TestV1AndHybrid:
    def v1_host(self, kernel: FakeKernel, *, unified: bool = False) -> tuple[str, str]:
        kernel.mount_v1("/sys/fs/cgroup/cpu", ("cpu",))
        memory = kernel.mount_v1("/sys/fs/cgroup/memory", ("memory",))
        pids = kernel.mount_v1("/sys/fs/cgroup/pids", ("pids",))
        kernel.mount_v1("/sys/fs/cgroup/systemd", ("name=systemd",))
        os.makedirs(f"{memory}/process_api/abc")
        _put(f"{memory}/process_api/abc", {"cgroup.procs": f"{ME}\n", "tasks": f"{ME}\n"})
        lines = ["9:name=systemd:/", "8:pids:/", "4:memory:/process_api/abc", "1:cpu:/"]
        if unified:
            kernel.mount_v2("/sys/fs/cgroup/unified", controllers=("hugetlb",), procs=(ME,))
            lines.append("0::/")
        kernel.place(*lines)
        return f"{memory}/process_api/abc", pids

    def test_v1_memory_and_pids_hierarchies_under_the_servers_cgroups(self, kernel):
        """A v1 host: memory and pids each in their own hierarchy, at the server's cgroup there."""
        memory, pids = self.v1_host(kernel)
        assert writable_hierarchies(kernel) == [
            CgroupHierarchy(pids, ("pids",), False),
            CgroupHierarchy(memory, ("memory",), False),
        ]
        assert kernel.writes_under(f"{memory}/{PROBE}") == probe_writes(v2=False)[:2]
        assert kernel.writes_under(f"{pids}/{PROBE}") == [("pids.max", "8")]
        assert not os.path.exists(f"{memory}/{PROBE}")
        assert not os.path.exists(f"{pids}/{PROBE}")

    def test_hybrid_host_uses_v1_and_leaves_the_unified_mount_alone(self, kernel):
        """Hybrid: v1 controllers plus a unified mount without memory or pids, which is never touched."""
        memory, pids = self.v1_host(kernel, unified=True)
        assert [h.base for h in writable_hierarchies(kernel)] == [pids, memory]
        unified = kernel.at("/sys/fs/cgroup/unified")
        assert not any(p.startswith(os.path.relpath(unified, kernel.top)) for p, _ in kernel.writes)
        assert sorted(os.listdir(unified)) == ["cgroup.controllers", "cgroup.procs", "cgroup.subtree_control"]


@pytest.fixture
def v2_runs(kernel):
    """The v2 hierarchy as a server finds it after moving into its leaf."""
    service = systemd_v2(kernel)
    (h,) = writable_hierarchies(kernel)
    kernel.writes.clear()
    return kernel, h, service


class TestStageCgroup:
    def test_v2_stage_gets_exactly_its_limits(self, v2_runs):
        """memory.max, memory.swap.max = 0 and pids.max, in the run's own cgroup beside the server's leaf."""
        kernel, h, service = v2_runs
        cg = StageCgroup([h], memory_bytes=320 * MB, pids=66)
        try:
            (path,) = cg.paths
            assert os.path.dirname(path) == service
            assert kernel.writes_under(path) == [
                ("memory.max", str(320 * MB)),
                ("memory.swap.max", "0"),
                ("pids.max", "66"),
            ]
            assert [p for p, _ in kernel.writes] == [
                os.path.relpath(f"{path}/{f}", kernel.top) for f in ("memory.max", "memory.swap.max", "pids.max")
            ]
        finally:
            cg.close()

    def test_cgroup_procs_is_opened_for_the_child_to_join(self, v2_runs):
        """One write-only, close-on-exec descriptor on the run cgroup's cgroup.procs."""
        _kernel, h, _service = v2_runs
        cg = StageCgroup([h], memory_bytes=320 * MB, pids=66)
        try:
            (fd,) = cg.procs_fds
            assert os.readlink(f"/proc/self/fd/{fd}") == f"{cg.paths[0]}/cgroup.procs"
            assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_WRONLY
            assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        finally:
            cg.close()

    @pytest.mark.parametrize(
        ("events", "killed"),
        [
            ("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n", False),
            ("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\noom_group_kill 0\n", True),
            ("low 0\nhigh 0\nmax 40\noom 3\noom_kill 3\n", True),
            ("low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 2\n", False),
        ],
    )
    def test_v2_oom_kill_is_read_from_memory_events(self, v2_runs, events, killed):
        """oom_kill N in memory.events: an OOM kill when N > 0 (oom_group_kill is another line)."""
        _kernel, h, _service = v2_runs
        cg = StageCgroup([h], memory_bytes=320 * MB, pids=66)
        try:
            assert not cg.oom_killed()
            _put(cg.paths[0], {"memory.events": events})  # the kernel's counters after the run
            assert cg.oom_killed() is killed
        finally:
            cg.close()

    def test_pids_only_stage_never_reports_an_oom_kill(self, kernel):
        """Without a memory hierarchy there is no OOM counter to read: never an OOM kill."""
        systemd_v2(kernel, controllers=("pids",))
        (h,) = writable_hierarchies(kernel)
        cg = StageCgroup([h], memory_bytes=320 * MB, pids=66)
        try:
            assert kernel.writes_under(cg.paths[0]) == [("pids.max", "66")]
            assert not cg.oom_killed()
        finally:
            cg.close()

    def test_close_removes_the_cgroup_and_closes_the_descriptor(self, v2_runs):
        """After close the run's cgroup directory is gone and cgroup.procs is no longer open."""
        _kernel, h, service = v2_runs
        cg = StageCgroup([h], memory_bytes=320 * MB, pids=66)
        (path,), (fd,) = cg.paths, cg.procs_fds
        cg.close()
        assert not os.path.exists(path)
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
        assert _child_cgroups(service) == [SERVER_LEAF]
        cg.close()  # idempotent

    def test_v1_stage_in_two_hierarchies(self, kernel):
        """v1: limit_in_bytes and memsw in the memory hierarchy, pids.max in the pids one; oom from oom_control."""
        memory, pids = TestV1AndHybrid().v1_host(kernel)
        hierarchies = writable_hierarchies(kernel)
        kernel.writes.clear()
        cg = StageCgroup(hierarchies, memory_bytes=320 * MB, pids=66)
        try:
            in_pids, in_memory = cg.paths
            assert (os.path.dirname(in_pids), os.path.dirname(in_memory)) == (pids, memory)
            assert kernel.writes_under(in_memory) == [
                ("memory.limit_in_bytes", str(320 * MB)),
                ("memory.memsw.limit_in_bytes", str(320 * MB)),
            ]
            assert kernel.writes_under(in_pids) == [("pids.max", "66")]
            assert len(cg.procs_fds) == 2
            assert not cg.oom_killed()
            _put(in_memory, {"memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n"})
            assert cg.oom_killed()
        finally:
            cg.close()
        assert not os.path.exists(in_pids)
        assert not os.path.exists(in_memory)

    def test_a_failure_midway_removes_what_was_made(self, v2_runs):
        """If the second hierarchy refuses, the first one's cgroup is removed and the error raised."""
        kernel, h, service = v2_runs
        gone = CgroupHierarchy(f"{service}/vanished", ("pids",), True, kernel)
        with pytest.raises(FileNotFoundError):
            StageCgroup([h, gone], memory_bytes=320 * MB, pids=66)
        assert _child_cgroups(service) == [SERVER_LEAF]

    def test_close_does_not_raise_while_the_kernel_still_refuses(self, v2_runs):
        """A cgroup that still holds a process is left in place, without an exception."""
        kernel, h, _service = v2_runs
        cg = StageCgroup([h], memory_bytes=320 * MB, pids=66)
        (path,) = cg.paths
        _put(path, {"cgroup.procs": "4242\n"})
        cg.close()
        assert os.path.isdir(path)
        _put(path, {"cgroup.procs": ""})
        kernel.rmdir(path)


def _child_cgroups(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir())

"""Runs untrusted candidate code in a sandbox: a pure package (standard library and pyseccomp, asyncio).

How a run is contained
======================

Every run gets a filesystem of its own (a tmpfs limited in size and inodes), an
unprivileged uid of its own, and one or two sandboxed processes (compile, then run).
These are built before the program is known (a *box*, ``spares.py``: a shell waits in each
sandbox for its command), usually ahead of the request (the server's loop keeps
``EXECUTION_SPARES`` per language), and each box serves one run and is destroyed after it.
Every stage's outer process is started by the *spawner* (``host/spawner.py``), a small
helper process of the server: its child does the set-up between fork and exec described
below (join the cgroups, enter the toolchain mount namespace, attach the run's filesystem,
drop to the run's uid, set the rlimits), which the server would otherwise do in a
``preexec_fn`` fork of itself (7-15 ms holding the GIL per stage in a 100 MB server).

* **Namespaces (bubblewrap).** ``bwrap --unshare-all --unshare-user --disable-userns``
  gives each stage new user, mount, pid, network, ipc, uts and cgroup namespaces.
  The root is an empty tmpfs made read-only after setup; it holds a read-only ``/usr``
  (plus the ``/bin``, ``/lib*`` links of a merged-usr system), ``/etc/ld.so.cache``,
  the toolchain's own directories (the Python prefix, the JDK and its ``/etc/java-*``
  files) and nothing else: no ``/root``, ``/home``, ``/work``, ``/var``, no project
  files, no database. ``/proc`` is a new procfs of the sandbox's pid namespace, ``/dev``
  a minimal devtmpfs copy (read-only), and the only writable places, ``/box`` (the
  working directory), ``/tmp`` and ``/dev/shm``, are the run's own filesystem (below).
  The Python prefix's ``site-packages`` is covered
  by an empty read-only tmpfs. The environment is cleared to a fixed ``PATH``,
  ``HOME=/tmp``, ``LANG=C.UTF-8`` (plus ``MALLOC_ARENA_MAX`` for the JVM and V8); bwrap
  itself is started with just ``PATH``, so even ``/proc/1/environ`` (bwrap's init)
  holds no server secret. ``--die-with-parent`` and ``--new-session`` are always on.
  There is no network interface but a private loopback. Neither bwrap's init nor the
  program has any capability (``CapBnd`` 0, ``NoNewPrivs``), and the sandbox cannot
  create further user namespaces.

* **A system-call filter (seccomp).** ``host/seccomp.py`` lists, as data with a reason per
  family, the calls no interview program needs: tracing (``ptrace``, ``process_vm_*``,
  ``kcmp``, ``pidfd_getfd``), mounts (``mount``, ``umount2``, ``pivot_root``, ``chroot``,
  the ``fs*``/``open_tree``/``move_mount``/``mount_setattr`` API), namespaces
  (``unshare``, ``setns``, ``clone`` with a ``CLONE_NEW*`` flag), keyrings, ``bpf``,
  ``perf_event_open``, ``userfaultfd``, ``io_uring_*``, kernel code (modules, ``kexec``),
  setting the clocks, file handles (``open_by_handle_at``), host administration (reboot,
  swap, accounting, quotas, ``syslog``, ``vhangup``, ``iopl``/``ioperm``) and any
  ``personality`` but the query. Each fails with ``EPERM`` and the program goes on.
  ``clone3``, whose flags sit behind a pointer a filter cannot read, answers ``ENOSYS``:
  glibc then falls back to ``clone`` (threads, ``fork`` and ``posix_spawn`` keep working,
  as under Docker's profile). Calls of another ABI (i386 ``int 0x80``, x32) fail with
  ``EPERM`` before any rule. Everything else is allowed: the filter is a deny list, so
  the compilers, the JVM and Node.js run unchanged. libseccomp (through the ``pyseccomp``
  ctypes binding) compiles it once per host to classic BPF, kept in a sealed memfd; each
  stage reopens it through ``/proc/self/fd`` (a descriptor of its own, at offset 0: bwrap
  reads to the end and closes it) and passes it with ``--seccomp``; bwrap applies it
  right before it execs the program, so its own set-up is not filtered. Without the
  binding or libseccomp, or where bwrap cannot apply the filter (a kernel without
  seccomp), runs go on under the other layers and ``SandboxStatus.seccomp`` is false with
  ``seccomp_note`` saying why (``/health`` shows both, ``check_sandbox`` fails its filter
  probe): namespaces, no capabilities and the per-run uid still hold, and a server
  that stopped running code over a missing library would be the worse surprise.

* **An unprivileged uid per run.** When the server runs as root, each run takes a
  dedicated uid/gid from ``uid_base .. uid_base+uid_count-1`` (default 60000..60255,
  checked to be unused by real accounts). A slot is held by binding the abstract unix
  socket ``@interview-exec-uid-<uid>``: that works across several server processes,
  is released by the kernel if a process dies, and the sandboxes (own network
  namespace) cannot touch it. The child process drops to that uid *before* it execs
  bwrap (``setgroups([])``, ``setresgid``, ``setresuid`` in the spawner's child), so
  bwrap runs unprivileged and builds an unprivileged user namespace in which the
  program's uid maps to the per-run uid outside, never to 0. Because root is exempt from
  ``RLIMIT_NPROC`` and an unprivileged uid is not, and because no one else uses that uid,
  the process limit counts exactly this run's processes and threads. When the server
  is not root, runs keep the server's uid and ``RLIMIT_NPROC`` is set to the uid's
  current task count plus the limit: the server's own threads and every concurrent run
  draw on that one count, and only a pids cgroup bounds a run by itself (weaker; the
  README's "Running unprivileged" and ``check_sandbox`` say so).

* **Toolchains under a root-only directory.** The server's Python lives under
  ``/root`` (mode 0700), which the per-run uid cannot traverse, and bwrap 0.8 calls
  ``realpath`` on every bind source, even for ``--ro-bind-fd`` (it resolves
  ``/proc/self/fd/N`` back to ``/root/...`` and fails with EACCES). So, once at start-up,
  a short-lived root helper creates a *private mount namespace* (a slave of the host's,
  so later host mounts still propagate in) in which ``/root`` is a small tmpfs holding
  only read-only bind mounts of the toolchain directories that need it. The server
  keeps a file descriptor to that namespace; each sandbox child calls ``setns`` into it
  (still root, in the spawner's child) just before dropping to its uid and exec'ing bwrap,
  which can then bind those paths by name. The server's own view is never changed,
  nothing is mounted on the host, and the namespace disappears with the server process.

* **A filesystem of its own per run.** The server makes a tmpfs of ``disk_mb`` and
  ``disk_inodes`` (``nr_inodes``: files, directories, links; tmpfs counts hard links too)
  with the new mount API (``fsopen``/``fsconfig``/``fsmount``), owned by the run's uid,
  mode 0700, nosuid, nodev, and *detached*: it is never mounted in the server's namespace
  nor on the host. The server writes the source into its ``box/`` through the descriptor
  and creates ``tmp/`` and ``shm/`` beside it, so ``/box``, ``/tmp`` and ``/dev/shm`` share
  one budget: a program filling it gets ``ENOSPC`` and the host's disk does not change
  (the tmpfs is memory, charged to the stage's memory cgroup). Each stage's child, still
  privileged, unshares a mount namespace of its own, makes it private (nothing
  propagates back), attaches a clone of the tmpfs (``open_tree(OPEN_TREE_CLONE)``,
  ``move_mount``) on the run's mount point (an empty ``mkdtemp`` directory under
  ``work_root``) and execs bwrap, which binds its three directories; so the compile
  stage's output is in the run stage's ``/box``, and the namespace vanishes with the
  stage. Closing the descriptor after the run frees the tmpfs and everything in it: no
  mount is ever left behind, whatever happened. (bwrap 0.8's ``--bind-fd`` cannot take a
  detached mount: it resolves ``/proc/self/fd/N`` to a path, "/", and refuses.) A server
  that is not root has no ``CAP_SYS_ADMIN`` for ``fsopen``: a helper process
  (``host/runfs.py``) keeps a user and mount namespace of its own in which the server's
  uid maps to itself, makes each tmpfs there and passes its descriptor back over a unix
  socket; each stage's child joins that user namespace (``setns``) before attaching it.
  Where neither works (a kernel or a seccomp policy refusing the new mount API, a
  kernel that cannot clone a detached mount), ``SandboxStatus.disk_limited`` is false
  with the reason, and runs fall back to a 0700 directory on the host's disk for
  ``/box`` (each file capped by ``file_size_mb``, but not their number) and bwrap tmpfs
  of ``disk_mb`` each for ``/tmp`` and ``/dev/shm`` (no inode limit).

* **Resource limits** (``setrlimit`` in the child before exec; inherited by bwrap and
  the program): ``RLIMIT_CPU`` = ceil(timeout)+1 s (SIGXCPU, SIGKILL one second later),
  ``RLIMIT_AS`` (memory, per language, see below), ``RLIMIT_NPROC`` = max_processes
  + 2 (bwrap's two processes), ``RLIMIT_FSIZE`` = file_size_mb, ``RLIMIT_NOFILE`` =
  open_files, ``RLIMIT_CORE`` = 0. Where cgroups are writable (v1 ``memory`` / ``pids``
  or a delegated v2 subtree), each stage also gets its own cgroup with a memory limit
  (``memory.limit_in_bytes``/``memory.max``, swap off) and ``pids.max``; the child joins
  it before exec, and its ``oom_kill`` counter tells an OOM kill apart from other kills.
  On v2 a controller works in a cgroup only if its parent enables it, and a cgroup other
  than the root cannot both hold processes and enable controllers: so a server alone in
  its (delegated) cgroup moves itself into the leaf ``<cgroup>/interview-exec-server``,
  enables ``+memory +pids`` in its cgroup and makes the stages' cgroups beside the leaf;
  a process started later in the leaf uses the same parent. Processes that are not the
  server's are never moved (then v2 cgroups are not used). Without cgroups everything
  still works on rlimits alone.

* **Memory per language.** ``memory_mb`` bounds what the program itself can use:
  Python and C++ get ``RLIMIT_AS = memory_mb`` (an allocation past it fails:
  ``MemoryError``, ``std::bad_alloc``) and a cgroup backstop of ``memory_mb + 64``. The
  JVM gets ``-Xmx<memory_mb>m`` and V8 ``--max-old-space-size=<memory_mb>``; both reserve
  large virtual ranges (thread stacks, code cache, class space) that are not memory, so
  with a memory cgroup their resident total is capped at ``memory_mb + 256`` and their
  ``RLIMIT_AS`` is a loose ``memory_mb + 4096``; without one, ``RLIMIT_AS`` is
  ``memory_mb + 1536`` (and Java threads get 16 MB stacks instead of 32 MB) with
  ``MALLOC_ARENA_MAX=2`` and small code-cache/class-space reservations. A memory limit is
  reported from the cgroup's ``oom_kill`` counter or the runtime's own message
  (``MemoryError``, ``std::bad_alloc``, ``OutOfMemoryError``, V8's heap-limit report).
  What a stage writes to its filesystem is memory too, counted by the stage's cgroup.
  Compile stages use ``compile_memory_mb`` the same way.

* **Wall time, output, and "everything is gone".** A stage is killed when its wall time
  passes (``Time limit exceeded (5 s)``) or when stdout+stderr together pass
  ``output_bytes`` (the output is read incrementally from the pipes and cut at the cap;
  ``truncated`` is true). bwrap's ``--info-fd`` reports the host pid of the sandbox's
  pid 1 (bwrap's init) and the server holds a pidfd on it. To kill, it sends SIGKILL to
  that pidfd: the kernel then kills every process in the pid namespace, however
  detached (``setsid``, double fork). A pid namespace's init only becomes a zombie once
  every other process of the namespace is gone, so the server answers only after that
  pidfd reports the exit (for a normal exit too: bwrap's init exits when the program
  does, taking the namespace down). bwrap's outer process exits *without reaping* its
  init, so the spawner is a child subreaper (``PR_SET_CHILD_SUBREAPER``) and reaps the
  orphaned init and everything else that comes to it (otherwise, under an init that never
  reaps, zombies would pile up and keep counting against the uid's ``RLIMIT_NPROC``); it
  reports each outer process's exit code through a pipe the server handed over with the
  request. The server watches the init with a pidfd (no parenthood needed) and kills it
  with ``pidfd_send_signal``. If pid 1 cannot be found, the server kills the outer bwrap's process
  group and, as root, runs ``kill -9 -1`` as the run's uid. A uid that still owns a live
  process (a crashed server's leftover) is never handed out. The run's filesystem is then
  destroyed by closing its descriptor, and its empty mount point removed (without one,
  the run directory is removed with ``shutil.rmtree``: fd-based, never follows a symlink).

* **Files without following links.** The source is written with
  ``os.open(name, O_CREAT|O_EXCL|O_NOFOLLOW, dir_fd=...)`` into the fresh filesystem's
  ``box/`` (or into the ``mkdtemp`` directory, mode 0700, opened ``O_DIRECTORY|O_NOFOLLOW``
  and handed to the run's uid with ``fchown`` on the descriptor). Nothing on the host
  ever opens a path inside it afterwards (the javac archive is read back through a
  descriptor), except the fallback's fd-based ``rmtree``, and by then every process of
  the run is dead.

``mode="unsafe-rlimits-only"`` is an operator's explicit weaker choice: no namespaces
(the program sees the host's files and network) and no system-call filter, but the same per-run uid, rlimits,
cgroups, wall time, output cap, a minimal environment, and after every run a kill of the
process group plus (root only) a ``kill -9 -1`` sweep as the run's uid and the reaping of
its orphans.

Side effects on the server process: it keeps one mount-namespace file descriptor when a
toolchain lives under a root-only directory, one memfd holding the system-call filter, one
descriptor per run in progress (its filesystem), the spawner child (``host/spawner.py``,
exits when the server does) and, when not root, the run filesystems' helper child
(``host/runfs.py``) with a descriptor of its user namespace; on cgroup v2 it may move
itself into the leaf ``interview-exec-server`` of its own cgroup (see above). Nothing else
about the server changes.

Result conventions
==================

``exit_code`` is the program's exit status, ``128 + N`` when signal ``N`` killed it (as a
shell reports it: bwrap flattens the wait status that way, so ``exit(139)`` and SIGSEGV
look alike), and ``None`` when the program did not end on its own (time or output limit,
compile error, unavailable). ``execution_time_ms`` is the wall time of the whole call, end
to end: directory set-up, compile stage if any, run stage (not the final clean-up).
(A run in a box built ahead of time does not count the building.) ``output_bytes`` caps
stdout and stderr *together*, per stage. A compile stage's failure
(errors, its own time or memory limit) is ``compile_error``; its output on success is not
shown.

Per language: Python runs as ``python -I -B -u main.py`` on the server's own base
interpreter (isolated mode, no bytecode writes, unbuffered so that output printed before a
crash or a timeout is kept; not ``-S``, which would drop ``exit()`` for ~1 ms). JavaScript
runs as ``node --max-old-space-size=<memory_mb> main.js``. C++ is compiled with
``g++ -std=gnu++17 -O2 -pipe`` and run as ``./main``. Java: the file is named after the
public top-level class (``Main`` if none), compiled with ``javac`` and run with
``java -Xshare:auto -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -XX:-UsePerfData -Xmx...
-Xss32m`` (the class declaring ``main``, package-qualified). javac starts from a dynamic
AppCDS archive dumped once inside the sandbox and then copied into a root-owned read-only
file in ``<work_root>/exec-cache-<JDK key>/`` (kept and reused by later server processes;
bwrap mode only): about 0.2 s saved per Java run.
"""

from execution.sandbox.host.setup import sandbox_status, toolchains
from execution.sandbox.languages import LANGUAGES, java_main_class
from execution.sandbox.pool import ExecutionPool, QueueFull
from execution.sandbox.run import run_code
from execution.sandbox.spares import Spares
from execution.sandbox.types import (
    ExecutionResult,
    Limits,
    SandboxConfig,
    SandboxStatus,
    Status,
    ToolchainStatus,
)

__all__ = [
    "LANGUAGES",
    "ExecutionPool",
    "ExecutionResult",
    "Limits",
    "QueueFull",
    "SandboxConfig",
    "SandboxStatus",
    "Spares",
    "Status",
    "ToolchainStatus",
    "java_main_class",
    "run_code",
    "sandbox_status",
    "toolchains",
]

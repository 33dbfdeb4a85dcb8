"""The system-call filter in a real sandbox: each refused call fails with EPERM and the program goes on,
while threads, processes and every language still work (no Django)."""

import os
import shutil
import sys
import tempfile

import pytest

from execution.sandbox import SandboxConfig, sandbox_status
from execution.sandbox.host import seccomp, setup
from execution.tests.helpers import STATUS, needs, needs_sandbox, run

pytestmark = [needs_sandbox, pytest.mark.usefixtures("nothing_left_behind")]

needs_filter = pytest.mark.skipif(not STATUS.seccomp, reason=f"no system-call filter here: {STATUS.seccomp_note}")

# x86_64 numbers, written out rather than asked of libseccomp, so that a wrong name there shows here.
NUMBERS = {
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "kcmp": 312,
    "pidfd_getfd": 438,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "move_mount": 429,
    "open_tree": 428,
    "mount_setattr": 442,
    "unshare": 272,
    "setns": 308,
    "clone": 56,
    "clone3": 435,
    "add_key": 248,
    "request_key": 249,
    "keyctl": 250,
    "bpf": 321,
    "perf_event_open": 298,
    "userfaultfd": 323,
    "io_uring_setup": 425,
    "io_uring_enter": 426,
    "io_uring_register": 427,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "clock_settime": 227,
    "clock_adjtime": 305,
    "settimeofday": 164,
    "adjtimex": 159,
    "open_by_handle_at": 304,
    "name_to_handle_at": 303,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "acct": 163,
    "quotactl": 179,
    "quotactl_fd": 443,
    "syslog": 103,
    "vhangup": 153,
    "iopl": 172,
    "ioperm": 173,
    "lookup_dcookie": 212,
    "personality": 135,
}

# Most of these calls would fail without the filter too (the sandbox has no capability), with EPERM as
# well. So each program first adds a filter of its own that hands every probed call to a tracer: there
# is none, so a call the sandbox's filter lets through fails with ENOSYS instead, and never runs. Only
# the sandbox's filter can make these calls answer EPERM.
PRELUDE = """\
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)

def trace_only(*numbers):
    lib = ctypes.CDLL("libseccomp.so.2")
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = (ctypes.c_uint32,)
    lib.seccomp_rule_add.argtypes = (ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint)
    lib.seccomp_load.argtypes = (ctypes.c_void_p,)
    ctx = lib.seccomp_init(0x7FFF0000)  # SCMP_ACT_ALLOW
    for number in numbers:
        assert lib.seccomp_rule_add(ctx, 0x7FF00000, number, 0) == 0  # SCMP_ACT_TRACE(0)
    assert lib.seccomp_load(ctx) == 0

def call(name, number, *args):
    result = libc.syscall(number, *(ctypes.c_ulong(a) for a in args))
    print(name, errno.errorcode[ctypes.get_errno()] if result == -1 else f"returned {result}")
"""

SIGCHLD = 17
CLONE_FLAGS = seccomp.CLONE_NAMESPACE_FLAGS
# (label, call, arguments, answer): what each family's program calls and what it must print.
PROBES = {
    "tracing": [
        ("ptrace", "ptrace", (16, 1, 0, 0), "EPERM"),  # PTRACE_ATTACH to pid 1
        ("process_vm_readv", "process_vm_readv", (1, 0, 0, 0, 0, 0), "EPERM"),
        ("process_vm_writev", "process_vm_writev", (1, 0, 0, 0, 0, 0), "EPERM"),
        ("kcmp", "kcmp", (1, 1, 0, 0, 0), "EPERM"),
        ("pidfd_getfd", "pidfd_getfd", (0, 0, 0), "EPERM"),
    ],
    "mounts": [
        ("mount", "mount", (0, 0, 0, 0, 0), "EPERM"),
        ("umount2", "umount2", (0, 0), "EPERM"),
        ("pivot_root", "pivot_root", (0, 0), "EPERM"),
        ("chroot", "chroot", (0,), "EPERM"),
        ("fsopen", "fsopen", (0, 0), "EPERM"),
        ("fsconfig", "fsconfig", (0, 0, 0, 0, 0), "EPERM"),
        ("fsmount", "fsmount", (0, 0, 0), "EPERM"),
        ("fspick", "fspick", (0, 0, 0), "EPERM"),
        ("move_mount", "move_mount", (0, 0, 0, 0, 0), "EPERM"),
        ("open_tree", "open_tree", (0, 0, 0), "EPERM"),
        ("mount_setattr", "mount_setattr", (0, 0, 0, 0, 0), "EPERM"),
    ],
    "namespaces": [
        ("unshare", "unshare", (0,), "EPERM"),
        ("setns", "setns", (0, 0), "EPERM"),
        *((f"clone {flag}", "clone", (bit | SIGCHLD, 0, 0, 0, 0), "EPERM") for flag, bit in CLONE_FLAGS.items()),
        ("clone of a plain child, let through", "clone", (SIGCHLD, 0, 0, 0, 0), "ENOSYS"),
    ],
    "keys": [
        ("add_key", "add_key", (0, 0, 0, 0, 0), "EPERM"),
        ("request_key", "request_key", (0, 0, 0, 0), "EPERM"),
        ("keyctl", "keyctl", (0, 0, 0, 0, 0), "EPERM"),
    ],
    "bpf": [("bpf", "bpf", (0, 0, 0), "EPERM")],
    "perf": [("perf_event_open", "perf_event_open", (0, 0, 0, 0, 0), "EPERM")],
    "userfaultfd": [("userfaultfd", "userfaultfd", (1,), "EPERM")],  # UFFD_USER_MODE_ONLY: allowed unprivileged
    "io_uring": [
        ("io_uring_setup", "io_uring_setup", (1, 0), "EPERM"),
        ("io_uring_enter", "io_uring_enter", (0, 0, 0, 0, 0, 0), "EPERM"),
        ("io_uring_register", "io_uring_register", (0, 0, 0, 0), "EPERM"),
    ],
    "kernel code": [
        ("init_module", "init_module", (0, 0, 0), "EPERM"),
        ("finit_module", "finit_module", (0, 0, 0), "EPERM"),
        ("delete_module", "delete_module", (0, 0), "EPERM"),
        ("kexec_load", "kexec_load", (0, 0, 0, 0), "EPERM"),
        ("kexec_file_load", "kexec_file_load", (0, 0, 0, 0, 0), "EPERM"),
    ],
    "clocks": [
        ("clock_settime", "clock_settime", (0, 0), "EPERM"),
        ("clock_adjtime", "clock_adjtime", (0, 0), "EPERM"),
        ("settimeofday", "settimeofday", (0, 0), "EPERM"),
        ("adjtimex", "adjtimex", (0,), "EPERM"),
    ],
    "file handles": [
        ("open_by_handle_at", "open_by_handle_at", (0, 0, 0), "EPERM"),
        ("name_to_handle_at", "name_to_handle_at", (0, 0, 0, 0, 0), "EPERM"),
    ],
    "host administration": [
        ("reboot", "reboot", (0, 0, 0, 0), "EPERM"),
        ("swapon", "swapon", (0, 0), "EPERM"),
        ("swapoff", "swapoff", (0,), "EPERM"),
        ("acct", "acct", (0,), "EPERM"),
        ("quotactl", "quotactl", (0, 0, 0, 0), "EPERM"),
        ("quotactl_fd", "quotactl_fd", (0, 0, 0, 0), "EPERM"),
        ("syslog", "syslog", (10, 0, 0), "EPERM"),  # SYSLOG_ACTION_SIZE_BUFFER
        ("vhangup", "vhangup", (), "EPERM"),
        ("iopl", "iopl", (3,), "EPERM"),
        ("ioperm", "ioperm", (0x80, 1, 1), "EPERM"),
        ("lookup_dcookie", "lookup_dcookie", (0, 0, 0), "EPERM"),
    ],
    "personality": [
        ("personality ADDR_NO_RANDOMIZE", "personality", (0x0040000,), "EPERM"),
        ("personality READ_IMPLIES_EXEC", "personality", (0x0400000,), "EPERM"),
        ("personality query, let through", "personality", (0xFFFFFFFF,), "ENOSYS"),
    ],
}


def probe_program(probes) -> str:
    numbers = sorted({NUMBERS[call] for _, call, _, _ in probes})
    lines = [f"trace_only(*{numbers!r})", 'print("traced", flush=True)']
    lines += [f"call({label!r}, {NUMBERS[call]}, *{args!r})" for label, call, args, _ in probes]
    return PRELUDE + "\n".join([*lines, 'print("went on")']) + "\n"


@needs_filter
class TestTheFilter:
    def test_it_is_built_here_from_the_whole_list(self):
        """libseccomp names every refused call, and the program is whole BPF instructions."""
        compiled = seccomp.compile_filter()
        assert compiled.note is None
        assert compiled.bpf and len(compiled.bpf) % 8 == 0

    def test_every_refused_call_has_a_probe(self):
        """Each family of the list is probed here, call by call."""
        assert set(PROBES) == {family.name for family in seccomp.DENIED}
        for family in seccomp.DENIED:
            listed = {*family.calls, *(c for c, _ in family.with_flags), *(c for c, _ in family.unless_first)}
            assert listed <= {call for _, call, _, _ in PROBES[family.name]}, family.name
            assert set(family.enosys) <= {"clone3"}  # probed alone: see test_clone3_answers_enosys

    def test_a_call_libseccomp_does_not_know_is_named_and_left_out(self, monkeypatch):
        """An older libseccomp without some name still builds the rest, and says which."""
        extra = seccomp.Family("test", "a call that does not exist", calls=("no_such_call_at_all",))
        monkeypatch.setattr(seccomp, "DENIED", (*seccomp.DENIED, extra))
        compiled = seccomp.compile_filter()
        assert compiled.bpf
        assert compiled.note == "this libseccomp does not know no_such_call_at_all"

    def test_the_status_says_the_filter_is_on(self):
        """The sandbox status, as /health shows it, reports the filter on and nothing missing."""
        assert STATUS.as_dict()["seccomp"] is True
        assert STATUS.as_dict()["seccompNote"] is None


@needs_filter
class TestRefusedCalls:
    @pytest.mark.parametrize("family", list(PROBES))
    async def test_each_call_of_the_family_fails_and_the_program_goes_on(self, family):
        """Every call of the family fails with EPERM (the sandbox's filter), then the program prints on."""
        result = await run("python", probe_program(PROBES[family]))
        assert result.status == "ok", result
        expected = ["traced", *(f"{label} {answer}" for label, _, _, answer in PROBES[family]), "went on"]
        assert result.stdout.splitlines() == expected

    async def test_an_allowed_call_reaches_the_tracer(self):
        """The probes' own filter works: a call the sandbox allows answers ENOSYS under it."""
        code = PRELUDE + 'trace_only(110)\ncall("getppid", 110)\nprint("went on")\n'
        result = await run("python", code)
        assert result.stdout == "getppid ENOSYS\nwent on\n", result

    async def test_clone3_answers_enosys(self):
        """clone3's flags cannot be inspected: it answers "not implemented" and glibc falls back to clone."""
        code = PRELUDE + 'call("clone3", 435, 0, 0)\nprint("went on")\n'  # without the filter: EINVAL
        result = await run("python", code)
        assert result.stdout == "clone3 ENOSYS\nwent on\n", result

    async def test_an_x32_call_is_refused(self):
        """A call of the x32 ABI (the 0x40000000 bit) fails with EPERM: the filter checks the ABI first."""
        code = PRELUDE + 'call("x32 getpid", 0x40000000 | 39)\nprint("went on")\n'  # else ENOSYS or the pid
        result = await run("python", code)
        assert result.stdout == "x32 getpid EPERM\nwent on\n", result

    @needs("cpp")
    async def test_an_i386_call_is_refused(self):
        """`int 0x80` (the 32-bit ABI) returns -EPERM instead of the pid, and the program goes on."""
        code = r"""
        #include <cstdio>
        int main() {
            long result;
            asm volatile("int $0x80" : "=a"(result) : "a"(20L) : "memory");  // i386 getpid
            std::printf("i386 getpid %ld\n", result);
            std::puts("went on");
        }
        """
        result = await run("cpp", code)
        assert result.stdout == "i386 getpid -1\nwent on\n", result


@needs_filter
class TestProgramsStillWork:
    async def test_python_threads_fork_and_subprocess(self):
        """Threads (clone3 then clone), fork and a subprocess run under the filter."""
        code = """
        import os, subprocess, threading
        print(open("/proc/self/status").read().split("Seccomp:")[1].split()[0])
        results = []
        threads = [threading.Thread(target=results.append, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(sorted(results))
        pid = os.fork()
        if pid == 0:
            os._exit(7)
        print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))
        print(subprocess.run(["/bin/echo", "child"], capture_output=True, text=True).stdout.strip())
        """
        result = await run("python", code)
        assert result.status == "ok", result
        assert result.stdout == "2\n[0, 1, 2, 3, 4, 5, 6, 7]\n7\nchild\n"  # 2: SECCOMP_MODE_FILTER

    @needs("javascript")
    async def test_javascript_worker_threads(self):
        """A worker thread of Node answers its parent."""
        code = """
        const { Worker } = require("worker_threads");
        const worker = new Worker("require('worker_threads').parentPort.postMessage(6 * 7)", { eval: true });
        worker.on("message", (m) => console.log("worker", m));
        """
        result = await run("javascript", code)
        assert result.status == "ok", result
        assert result.stdout == "worker 42\n"

    @needs("java")
    async def test_java_threads_and_a_process(self):
        """javac compiles, and the JVM starts threads, a parallel stream and a child process."""
        code = """
        public class Main {
            public static void main(String[] args) throws Exception {
                Thread t = new Thread(() -> System.out.println("thread"));
                t.start();
                t.join();
                System.out.println(java.util.stream.IntStream.range(0, 1000).parallel().sum());
                Process p = new ProcessBuilder("/bin/echo", "child").redirectErrorStream(true).start();
                System.out.println(new String(p.getInputStream().readAllBytes()).trim() + " " + p.waitFor());
            }
        }
        """
        result = await run("java", code)
        assert result.status == "ok", result
        assert result.stdout == "thread\n499500\nchild 0\n"

    @needs("cpp")
    async def test_cpp_threads(self):
        """g++ compiles and std::thread runs."""
        code = """
        #include <cstdio>
        #include <thread>
        int main() {
            int value = 0;
            std::thread t([&] { value = 42; });
            t.join();
            std::printf("%d\\n", value);
        }
        """
        result = await run("cpp", code)
        assert result.status == "ok", result
        assert result.stdout == "42\n"


@needs_filter
class TestWithoutLibseccomp:
    async def test_programs_still_run_and_the_status_says_why(self, monkeypatch):
        """Without the binding (or libseccomp) runs go on, isolated but unfiltered, and the status says why."""
        monkeypatch.setitem(sys.modules, "pyseccomp", None)  # `import pyseccomp` now fails
        work_root = tempfile.mkdtemp(prefix="no-seccomp-")
        os.chmod(work_root, 0o711)
        try:
            config = SandboxConfig(work_root=work_root)
            status = sandbox_status(config)
            assert (status.usable, status.isolated, status.seccomp) == (True, True, False)
            assert status.seccomp_note == "the pyseccomp package is not installed"
            code = PRELUDE + 'call("unshare", 272, 0)\nprint("went on")\n'
            result = await run("python", code, config=config)
            assert result.stdout == "unshare returned 0\nwent on\n", result
        finally:
            shutil.rmtree(work_root, ignore_errors=True)

    async def test_a_filter_bwrap_cannot_apply_is_dropped_and_said(self, monkeypatch):
        """Where bwrap refuses the filter (here 7 bytes, not whole instructions), runs go on without it."""
        monkeypatch.setattr(setup, "compile_filter", lambda: seccomp.Compiled(b"\0" * 7, None))
        work_root = tempfile.mkdtemp(prefix="bad-seccomp-")
        os.chmod(work_root, 0o711)
        try:
            config = SandboxConfig(work_root=work_root)
            status = sandbox_status(config)
            assert (status.usable, status.isolated, status.seccomp) == (True, True, False)
            assert status.seccomp_note == (
                "bwrap could not apply the filter: bwrap: Invalid seccomp data, must be multiple of 8"
            )
            result = await run("python", "print('ran')", config=config)
            assert result.stdout == "ran\n", result
        finally:
            shutil.rmtree(work_root, ignore_errors=True)

"""The system-call filter every bwrap stage runs under: what it refuses, as data, compiled once with libseccomp."""

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass

# clone(2)'s flags that make a new namespace. CLONE_NEWTIME is left out: in clone(2) its bit is
# part of the exit signal (it only means a time namespace to unshare and clone3, both refused).
CLONE_NAMESPACE_FLAGS = {
    "CLONE_NEWNS": 0x00020000,
    "CLONE_NEWCGROUP": 0x02000000,
    "CLONE_NEWUTS": 0x04000000,
    "CLONE_NEWIPC": 0x08000000,
    "CLONE_NEWUSER": 0x10000000,
    "CLONE_NEWPID": 0x20000000,
    "CLONE_NEWNET": 0x40000000,
}
PERSONALITY_QUERY = 0xFFFFFFFF  # personality(0xffffffff) reads the personality without changing it


@dataclass(frozen=True)
class Family:
    """Calls refused for one reason. Each fails with EPERM (ENOSYS for `enosys`), and the program goes on."""

    name: str
    reason: str
    calls: tuple[str, ...] = ()  # refused whatever their arguments
    with_flags: tuple[tuple[str, int], ...] = ()  # (call, bit): refused when the first argument has the bit
    unless_first: tuple[tuple[str, int], ...] = ()  # (call, value): refused unless the first argument is value
    enosys: tuple[str, ...] = ()  # answered "not implemented", so that the C library falls back to another call


DENIED = (
    Family(
        "tracing",
        "reads or changes another process's memory, registers or descriptors",
        calls=("ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd"),
    ),
    Family(
        "mounts",
        "changes the file tree the sandbox was built from",
        calls=(
            *("mount", "umount2", "pivot_root", "chroot"),
            *("fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr"),
        ),
    ),
    Family(
        "namespaces",
        "a new namespace reopens kernel code that the sandbox's own namespaces keep out of reach",
        calls=("unshare", "setns"),
        with_flags=tuple(("clone", bit) for bit in CLONE_NAMESPACE_FLAGS.values()),
        # clone3's flags are behind a pointer no filter can read; glibc then uses clone (as under Docker).
        enosys=("clone3",),
    ),
    Family(
        "keys",
        "the kernel's keyrings are per uid, not per sandbox",
        calls=("add_key", "request_key", "keyctl"),
    ),
    Family("bpf", "loads programs into the kernel", calls=("bpf",)),
    Family("perf", "performance counters expose kernel addresses and others' timing", calls=("perf_event_open",)),
    Family("userfaultfd", "holds the kernel still in mid-copy: a lever of kernel exploits", calls=("userfaultfd",)),
    Family(
        "io_uring",
        "a second way into the kernel whose operations no system-call filter sees",
        calls=("io_uring_setup", "io_uring_enter", "io_uring_register"),
    ),
    Family(
        "kernel code",
        "loads, removes or replaces kernel code",
        calls=("init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load"),
    ),
    Family(
        "clocks",
        "the clocks are the host's, shared by every process on it",
        calls=("clock_settime", "clock_adjtime", "settimeofday", "adjtimex"),
    ),
    Family(
        "file handles",
        "opens files by handle, past the path checks (the classic container escape)",
        calls=("open_by_handle_at", "name_to_handle_at"),
    ),
    Family(
        "host administration",
        "acts on the whole machine: swap, reboot, accounting, quotas, the kernel log, I/O ports",
        calls=(
            *("reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd", "syslog"),
            *("vhangup", "iopl", "ioperm", "lookup_dcookie"),
        ),
    ),
    Family(
        "personality",
        "a new personality turns off address randomisation or makes data executable after the next exec",
        unless_first=(("personality", PERSONALITY_QUERY),),
    ),
)


@dataclass(frozen=True)
class Compiled:
    bpf: bytes | None  # the classic BPF program bwrap's --seccomp reads; None when it could not be built
    note: str | None  # why not built, or which calls this libseccomp could not name; None when all is well


def compile_filter() -> Compiled:
    """The filter for the native architecture: DENIED refused, the rest allowed, other ABIs refused.

    A call of another ABI (i386 through ``int 0x80``, x32) fails with EPERM: libseccomp checks the
    architecture (and the x32 bit) before anything else.
    """
    try:
        import pyseccomp as seccomp  # a ctypes binding: it loads libseccomp.so.2 on import
    except ImportError:
        return Compiled(None, "the pyseccomp package is not installed")
    except (OSError, RuntimeError) as exc:
        return Compiled(None, f"libseccomp cannot be loaded ({exc})")
    try:
        flt = seccomp.SyscallFilter(seccomp.ALLOW)
        eperm = seccomp.ERRNO(errno.EPERM)
        flt.set_attr(seccomp.Attr.ACT_BADARCH, eperm)
        unknown = []
        for family in DENIED:
            rules = [(eperm, call, None) for call in family.calls]
            rules += [(eperm, call, seccomp.Arg(0, seccomp.MASKED_EQ, bit, bit)) for call, bit in family.with_flags]
            rules += [(eperm, call, seccomp.Arg(0, seccomp.NE, value)) for call, value in family.unless_first]
            rules += [(seccomp.ERRNO(errno.ENOSYS), call, None) for call in family.enosys]
            for action, call, arg in rules:
                number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, call)
                if number < 0:  # a call newer than this libseccomp (or not of this architecture)
                    unknown.append(call)
                    continue
                flt.add_rule(action, number, *([arg] if arg else []))
        fd = os.memfd_create("seccomp-export", os.MFD_CLOEXEC)
        with os.fdopen(fd, "w+b") as f:
            flt.export_bpf(f)
            f.seek(0)
            bpf = f.read()
    except OSError as exc:
        return Compiled(None, f"libseccomp could not build the filter ({exc})")
    note = f"this libseccomp does not know {', '.join(sorted(set(unknown)))}" if unknown else None
    return Compiled(bpf, note)


def sealed_memfd(data: bytes) -> int:
    """A read-only, sealed in-memory file holding `data`: each stage reopens it at offset 0."""
    fd = os.memfd_create("interview-seccomp", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, data)
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except OSError:
        os.close(fd)
        raise
    return fd


def open_for_stage(memfd: int) -> int:
    """A new descriptor of the filter for one bwrap, which reads it from its offset to the end and closes it.

    A dup would share the offset with every other stage; reopening gives a file position of its own.
    """
    return os.open(f"/proc/self/fd/{memfd}", os.O_RDONLY | os.O_CLOEXEC)

"""`manage.py check_sandbox`: the execution sandbox's state, proved by programs that try to escape."""

import asyncio
import os
import secrets
import socket
import textwrap
from dataclasses import dataclass

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from execution import sandbox
from execution.services import limits, sandbox_config, sandbox_report

# Each probe prints this when the sandbox stopped it, anything else when it got through.
CONTAINED = "contained"

HELLO = {
    "python": "print(1)\n",
    "javascript": "console.log(1);\n",
    "java": (
        "public class Main {\n    public static void main(String[] args) {\n        System.out.println(1);\n    }\n}\n"
    ),
    "cpp": "#include <iostream>\nint main() {\n    std::cout << 1 << std::endl;\n    return 0;\n}\n",
}


@dataclass(frozen=True)
class Probe:
    description: str
    code: str


def _write_targets() -> list[str]:
    """Directories of the server a program must not write to."""
    targets = [str(settings.BASE_DIR)]
    if os.path.isdir("/work"):
        targets.append("/work")
    return targets


def _probes(*, port: int, env_name: str, env_value: str, write_name: str) -> list[Probe]:
    return [
        Probe(
            "reading /etc/shadow fails",
            f"""
            try:
                with open("/etc/shadow", "rb") as f:
                    f.read(1)
            except OSError:
                print({CONTAINED!r})
            else:
                print("read /etc/shadow")
            """,
        ),
        Probe(
            f"connecting to 127.0.0.1:{port} (listened on by this command) fails",
            f"""
            import socket
            try:
                socket.create_connection(("127.0.0.1", {port}), timeout=2).close()
            except OSError:
                print({CONTAINED!r})
            else:
                print("connected to 127.0.0.1:{port}")
            """,
        ),
        Probe(
            "the server's environment is not visible",
            f"""
            import os
            seen = [k for k, v in os.environ.items() if k == {env_name!r} or {env_value!r} in v]
            for path in ("/proc/self/environ", "/proc/1/environ"):
                try:
                    with open(path, "rb") as f:
                        if {env_value!r}.encode() in f.read():
                            seen.append(path)
                except OSError:
                    pass
            print({CONTAINED!r} if not seen else "saw the secret in " + ", ".join(seen))
            """,
        ),
        Probe(
            f"writing to {' and '.join(_write_targets())} fails",
            f"""
            import os
            written = []
            for directory in {_write_targets()!r}:
                try:
                    with open(os.path.join(directory, {write_name!r}), "x") as f:
                        f.write("escaped")
                    written.append(directory)
                except OSError:
                    pass
            print({CONTAINED!r} if not written else "wrote to " + ", ".join(written))
            """,
        ),
        Probe(
            # unshare(0) changes nothing and succeeds anywhere else: only the filter makes it fail.
            "the system-call filter refuses unshare",
            f"""
            import ctypes
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.unshare(0) == -1 and ctypes.get_errno() == 1:
                print({CONTAINED!r})
            else:
                print("unshare(0) was not refused with EPERM")
            """,
        ),
    ]


def shared_uid_notes(report: dict, *, max_processes: int) -> list[str]:
    """What runs get and lose when the server is not root and they share its uid (none otherwise)."""
    if report["perRunUid"] or not report["usable"]:
        return []
    notes = [
        f"RLIMIT_NPROC counts every process and thread of the server's uid: a run may start {max_processes} "
        "more than the uid ran when it began, so the server's own threads and every run beside it draw "
        "on the same count (one run's fork bomb leaves the runs beside it fewer).",
    ]
    if "pids" in report["cgroups"]:
        notes.append("Each run's own pids cgroup still bounds its processes by itself.")
    else:
        notes.append(
            "No pids cgroup is writable here, so nothing bounds one run's processes apart from that shared "
            "count (a delegated cgroup v2 subtree would: see the README, Running unprivileged)."
        )
    if report["isolated"]:
        notes.append(
            "Runs still cannot see or signal each other or the server (a pid namespace each) and see no "
            "files but their own directory (a mount namespace each)."
        )
    else:
        notes.append(
            "Without namespaces a run is the server as far as the kernel can tell: it can read the server's "
            "files and environment, signal it, and leave detached processes running after its answer."
        )
    return notes


def _detail(result: sandbox.ExecutionResult) -> str:
    """Why a check failed, in a few words."""
    if result.success:
        printed = result.stdout.strip().splitlines()
        return f"it printed {printed[0][:200]!r}" if printed else "it printed nothing"
    said = (result.error or result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[0]
    return f"{result.status}: {said[:200]}"


class Command(BaseCommand):
    help = (
        "Show the code execution sandbox's state and run containment probes in it; "
        "exits non-zero when it is not isolated or a probe fails."
    )

    def handle(self, *args, **options):
        report = sandbox_report()
        self._show_state(report)
        if not report["usable"]:
            raise CommandError(f"Code execution is unavailable: {report['reason']}")
        failures = self._run_checks(report)
        failed = f"{failures} check{'s' if failures != 1 else ''} failed"
        if not report["isolated"]:
            raise CommandError(
                f"The sandbox is not isolated: {report['reason']}" + (f" ({failed})." if failures else ".")
            )
        if failures:
            raise CommandError(f"{failed}: the sandbox does not contain programs as it should.")
        self.stdout.write(self.style.SUCCESS("All checks passed: the sandbox is isolated."))

    def _show_state(self, report: dict) -> None:
        write = self.stdout.write
        write(f"Sandbox mode:    {report['mode']}")
        write(f"Usable:          {'yes' if report['usable'] else 'no'}")
        write(f"Isolated:        {'yes' if report['isolated'] else 'no'}")
        if report["reason"]:
            write(f"Reason:          {report['reason']}")
        write(f"bwrap:           {report['bwrapVersion'] or '-'}")
        notes = shared_uid_notes(report, max_processes=settings.EXECUTION_MAX_PROCESSES)
        if notes:
            write("Per-run uid:     no: the server is not root, so every run uses the server's own uid")
            for note in notes:
                write(f"  - {note}")
        else:
            write(f"Per-run uid:     {'yes' if report['perRunUid'] else 'no'}")
        write(f"cgroups:         {', '.join(report['cgroups']) or 'none (rlimits only)'}")
        seccomp = "on" if report["seccomp"] else "off"
        if report["seccompNote"]:
            seccomp += f": {report['seccompNote']}"
        write(f"Seccomp:         {seccomp}")
        if report["diskLimited"]:
            disk = f"its own tmpfs per run ({settings.EXECUTION_DISK_MB} MB, {settings.EXECUTION_DISK_INODES} inodes)"
        else:
            disk = f"not limited in files: {report['diskReason']}"
        write(f"Run filesystem:  {disk}")
        write("Languages:")
        for name, toolchain in report["languages"].items():
            state = toolchain["version"] if toolchain["available"] else f"unavailable: {toolchain['reason']}"
            write(f"  {name:<11} {state}")

    def _line(self, ok: bool, text: str) -> None:
        mark = self.style.SUCCESS("ok    ") if ok else self.style.ERROR("FAILED")
        self.stdout.write(f"  {mark} {text}")
        self.stdout.flush()

    def _run(self, language: str, code: str) -> sandbox.ExecutionResult:
        run_limits = limits(float(settings.EXECUTION_DEFAULT_TIMEOUT))
        return asyncio.run(sandbox.run_code(language=language, code=code, limits=run_limits, config=sandbox_config()))

    def _run_checks(self, report: dict) -> int:
        failures = 0
        self.stdout.write("Probes:")
        if report["languages"]["python"]["available"]:
            failures += self._run_probes()
        else:
            self._line(False, "containment probes need Python, which is unavailable")
            failures += 1
        self.stdout.write("Programs:")
        for language, toolchain in report["languages"].items():
            if not toolchain["available"]:
                self.stdout.write(f"  skipped {language}: unavailable")
                continue
            result = self._run(language, HELLO[language])
            ok = result.success and result.stdout.strip() == "1"
            failures += not ok
            self._line(ok, f"{language}: printing 1" + ("" if ok else f" ({_detail(result)})"))
        return failures

    def _run_probes(self) -> int:
        env_name = "CHECK_SANDBOX_SECRET"
        env_value = secrets.token_hex(16)
        write_name = f"check-sandbox-{secrets.token_hex(8)}"
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        previous = os.environ.get(env_name)
        failures = 0
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(8)
            listener.setblocking(False)
            port = listener.getsockname()[1]
            # A secret in this process's own environment, as the server's SECRET_KEY would be.
            os.environ[env_name] = env_value
            for probe in _probes(port=port, env_name=env_name, env_value=env_value, write_name=write_name):
                result = self._run("python", textwrap.dedent(probe.code))
                ok = result.success and result.stdout.strip() == CONTAINED
                failures += not ok
                self._line(ok, probe.description + ("" if ok else f" ({_detail(result)})"))
            # What the programs said is checked against what this side saw.
            try:
                listener.accept()[0].close()
            except BlockingIOError:
                pass
            else:
                self._line(False, "a program connected to this command's port")
                failures += 1
            for directory in _write_targets():
                leaked = os.path.join(directory, write_name)
                if os.path.lexists(leaked):
                    os.unlink(leaked)
                    self._line(False, f"a program created {leaked} (removed)")
                    failures += 1
        finally:
            listener.close()
            if previous is None:
                os.environ.pop(env_name, None)
            else:
                os.environ[env_name] = previous
        return failures

"""`manage.py check_sandbox`: the sandbox's state and containment probes, run for real; what it
says of a server that is not root, from a report and from a real unprivileged server."""

import json
import os
import shutil
import subprocess
import tempfile
from io import StringIO

import pytest
from django.conf import settings as django_settings
from django.core.management import CommandError, call_command

from execution.management.commands import check_sandbox as command
from execution.sandbox import LANGUAGES, SandboxStatus, sandbox_status
from execution.sandbox.host.uids import free_uid_range, uid_has_processes
from execution.services import sandbox_config, sandbox_report

STATUS = sandbox_status(sandbox_config())

needs_sandbox = pytest.mark.skipif(not STATUS.usable, reason=f"no usable sandbox here: {STATUS.reason}")


def check_sandbox() -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("check_sandbox", stdout=out, no_color=True)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


@needs_sandbox
class TestCheckSandbox:
    @pytest.mark.skipif(not STATUS.isolated, reason=f"the sandbox is not isolated here: {STATUS.reason}")
    def test_isolated_sandbox_passes_every_probe_and_language(self):
        """With bwrap isolation every probe and every available language prints ok and the command succeeds."""
        out, error = check_sandbox()
        assert error is None, out
        assert "FAILED" not in out
        assert "Isolated:        yes" in out
        assert "Seccomp:         on\n" in out
        if STATUS.disk_limited:
            assert "Run filesystem:  its own tmpfs per run (" in out
        lines = out.splitlines()
        probes = lines[lines.index("Probes:") + 1 : lines.index("Programs:")]
        assert len(probes) == 5
        assert all(line.startswith("  ok ") for line in probes)
        assert any("/etc/shadow" in line for line in probes)
        assert any("127.0.0.1:" in line for line in probes)
        assert any("environment" in line for line in probes)
        assert any("writing to" in line for line in probes)
        assert any("system-call filter" in line for line in probes)
        for language, toolchain in sandbox_report()["languages"].items():
            expected = f"  ok     {language}: printing 1" if toolchain["available"] else f"  skipped {language}"
            assert any(line.startswith(expected) for line in lines), language
        assert lines[-1] == "All checks passed: the sandbox is isolated."

    def test_probe_secret_does_not_stay_in_the_environment(self):
        """The secret the command sets for its environment probe is gone afterwards."""
        check_sandbox()
        assert "CHECK_SANDBOX_SECRET" not in os.environ

    def test_unisolated_sandbox_fails_and_the_network_probe_catches_it(self, settings):
        """Without namespaces the command exits non-zero and the loopback probe reports FAILED."""
        settings.EXECUTION_SANDBOX = "unsafe-rlimits-only"
        out, error = check_sandbox()
        assert error is not None
        assert "not isolated" in str(error)
        assert "Isolated:        no" in out
        assert "Run filesystem:  not limited in files: no mount namespace" in out
        assert any(line.startswith("  FAILED connecting to 127.0.0.1:") for line in out.splitlines())
        assert "Seccomp:         off: no system-call filter without bwrap (unsafe-rlimits-only)" in out
        assert "  FAILED the system-call filter refuses unshare (it printed 'unshare(0) was not" in out

    def test_unusable_sandbox_is_an_error(self, settings):
        """An unusable sandbox (here an unknown mode) prints why and exits non-zero."""
        settings.EXECUTION_SANDBOX = "no-such-mode"
        out, error = check_sandbox()
        assert error is not None
        assert "unavailable" in str(error)
        assert "unknown sandbox mode" in out


def unprivileged_report(**status) -> dict:
    """sandbox_report's shape for a server that is not root (no per-run uid), no language installed."""
    values = {"isolated": True, "mode": "bwrap", "reason": None, "usable": True, "per_run_uid": False, **status}
    missing = {"available": False, "version": None, "reason": "not installed"}
    languages = {name: {"language": name, **missing} for name in LANGUAGES}
    return {"ok": values["usable"], "required": False, **SandboxStatus(**values).as_dict(), "languages": languages}


def notes(**status) -> str:
    return " ".join(command.shared_uid_notes(unprivileged_report(**status), max_processes=64))


class TestSharedUidNotes:
    def test_a_root_server_has_nothing_to_add(self):
        """With a per-run uid (root) or no usable sandbox there is nothing to say about a shared uid."""
        assert notes(per_run_uid=True) == ""
        assert notes(usable=False, isolated=False, reason="bwrap not found") == ""

    def test_not_root_isolated_without_cgroups(self):
        """Shared uid: RLIMIT_NPROC counts the server and every run, nothing else bounds a run, namespaces hold."""
        said = notes()
        assert "RLIMIT_NPROC counts every process and thread of the server's uid" in said
        assert "a run may start 64 more than the uid ran when it began" in said
        assert "the server's own threads and every run beside it draw on the same count" in said
        assert "No pids cgroup is writable here" in said
        assert "cannot see or signal each other or the server" in said

    def test_not_root_with_a_pids_cgroup(self):
        """A writable pids cgroup still bounds each run by itself."""
        said = notes(cgroups=("memory", "pids"))
        assert "Each run's own pids cgroup still bounds its processes by itself." in said
        assert "No pids cgroup" not in said

    def test_not_root_without_namespaces(self):
        """unsafe-rlimits-only as the server's uid: the run can read and signal the server."""
        said = notes(isolated=False, mode="unsafe-rlimits-only", reason="namespaces disabled by configuration")
        assert "read the server's files and environment, signal it" in said
        assert "cannot see" not in said

    def test_the_command_prints_them_under_per_run_uid(self, monkeypatch, settings):
        """check_sandbox prints the notes, with the configured process limit, below the per-run uid line."""
        settings.EXECUTION_MAX_PROCESSES = 10
        monkeypatch.setattr(command, "sandbox_report", lambda: unprivileged_report(cgroups=("memory",)))
        out, error = check_sandbox()
        assert error is not None  # no language here: the probes cannot run
        lines = out.splitlines()
        at = lines.index("Per-run uid:     no: the server is not root, so every run uses the server's own uid")
        assert lines[at + 1].startswith("  - RLIMIT_NPROC counts every process and thread of the server's uid")
        assert "a run may start 10 more" in lines[at + 1]
        assert lines[at + 2].startswith("  - No pids cgroup is writable here")
        assert lines[at + 3].startswith("  - Runs still cannot see or signal each other or the server")
        assert lines[at + 4] == "cgroups:         memory"


# The sandbox package is the standard library only: a system Python runs it as another uid,
# where the project's venv (under /root here) could not be reached.
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.isfile(p) and not p.startswith("/root")), None
)
SERVER = r"""
import asyncio, json, os, resource, sys, time
from execution.sandbox import SandboxConfig, run_code, sandbox_status
from execution.sandbox.bwrap import rlimits
from execution.sandbox.host.setup import host_for, trial_stage
from execution.sandbox.host.uids import uid_task_count

none = "/nonexistent"
config = SandboxConfig(work_root=sys.argv[1], node_path=none, gxx_path=none, javac_path=none, java_path=none)
status = sandbox_status(config)
stage = trial_stage(["true"])


def zombies():  # the trial's processes, until the spawner has reaped them (they count as tasks)
    found = 0
    for p in os.listdir("/proc"):
        try:
            with open(f"/proc/{p}/status") as f:
                text = f.read()
        except OSError:
            continue
        found += "State:\tZ" in text and f"Uid:\t{os.getuid()}\t" in text
    return found


for _ in range(500):
    if not zombies():
        break
    time.sleep(0.01)
nproc = {res: soft for res, soft, _ in rlimits(stage, host_for(config))}[resource.RLIMIT_NPROC]
tasks = uid_task_count(os.getuid())
code = f'''
import os
print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
try:
    os.kill({os.getpid()}, 0)
except ProcessLookupError:
    print("no server")
'''
result = asyncio.run(run_code(language="python", code=code, config=config))
print(json.dumps({
    "status": status.as_dict(), "nproc": nproc, "stage_nproc": stage.nproc, "tasks": tasks,
    "run": result.status, "stdout": result.stdout,
}))
"""


def unused_uid() -> int | None:
    """A uid outside the per-run range with no account and no process: this test's server alone uses it."""
    base = django_settings.EXECUTION_UID_BASE - 1000
    return next((uid for uid in free_uid_range(base, 100) if not uid_has_processes(uid)), None)


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a server as another uid needs root")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="setpriv (util-linux) is missing")
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system Python outside /root to run the sandbox as another uid")
@needs_sandbox
class TestUnprivilegedServer:
    def as_uid(self, uid: int, code: str, *args: str) -> subprocess.CompletedProcess:
        """The system Python as `uid` (no groups), with the project importable."""
        drop = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups"]
        prelude = f"import sys; sys.path.insert(0, {str(django_settings.BASE_DIR)!r})\n"
        argv = [*drop, SYSTEM_PYTHON, "-I", "-c", prelude + code, *args]
        return subprocess.run(argv, capture_output=True, text=True, env={"PATH": "/usr/bin:/bin"}, cwd="/", timeout=120)

    def test_what_a_server_that_is_not_root_gets(self):
        """Really unprivileged: no per-run uid, RLIMIT_NPROC = its own tasks + the limit, runs cannot see it."""
        uid = unused_uid()
        if uid is None:
            pytest.skip("no unused uid below the per-run range")
        can_import = self.as_uid(uid, "import execution.sandbox")
        if can_import.returncode != 0:
            pytest.skip(f"{SYSTEM_PYTHON} cannot import the sandbox as uid {uid}: {can_import.stderr.strip()[-200:]}")
        work_root = tempfile.mkdtemp(prefix="unprivileged-server-")
        try:
            os.chown(work_root, uid, uid)
            done = self.as_uid(uid, SERVER, work_root)
        finally:
            shutil.rmtree(work_root, ignore_errors=True)
        assert done.returncode == 0, done.stderr
        found = json.loads(done.stdout.splitlines()[-1])
        assert found["status"]["usable"] and found["status"]["isolated"], found["status"]
        assert found["status"]["perRunUid"] is False
        # The server's own tasks count: a run may start its limit plus bwrap's two on top of them.
        assert found["tasks"] >= 1
        assert found["nproc"] == found["tasks"] + found["stage_nproc"] + 2
        # Its own pid namespace: the run sees bwrap's init and itself, never the server.
        assert found["run"] == "ok"
        assert found["stdout"].splitlines() == ["[1, 2]", "no server"]
        said = " ".join(command.shared_uid_notes({**found["status"], "languages": {}}, max_processes=64))
        assert "RLIMIT_NPROC counts every process and thread of the server's uid" in said
        assert ("own pids cgroup" in said) == ("pids" in found["status"]["cgroups"])

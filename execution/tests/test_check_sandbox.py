"""`manage.py check_sandbox`: the sandbox's state and containment probes, run for real."""

import os
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from execution.sandbox import sandbox_status
from execution.services import sandbox_config, sandbox_report

STATUS = sandbox_status(sandbox_config())

pytestmark = pytest.mark.skipif(not STATUS.usable, reason=f"no usable sandbox here: {STATUS.reason}")


def check_sandbox() -> tuple[str, CommandError | None]:
    out = StringIO()
    try:
        call_command("check_sandbox", stdout=out, no_color=True)
    except CommandError as exc:
        return out.getvalue(), exc
    return out.getvalue(), None


class TestCheckSandbox:
    @pytest.mark.skipif(not STATUS.isolated, reason=f"the sandbox is not isolated here: {STATUS.reason}")
    def test_isolated_sandbox_passes_every_probe_and_language(self):
        """With bwrap isolation every probe and every available language prints ok and the command succeeds."""
        out, error = check_sandbox()
        assert error is None, out
        assert "FAILED" not in out
        assert "Isolated:        yes" in out
        if STATUS.disk_limited:
            assert "Run filesystem:  its own tmpfs per run (" in out
        lines = out.splitlines()
        probes = lines[lines.index("Probes:") + 1 : lines.index("Programs:")]
        assert len(probes) == 4
        assert all(line.startswith("  ok ") for line in probes)
        assert any("/etc/shadow" in line for line in probes)
        assert any("127.0.0.1:" in line for line in probes)
        assert any("environment" in line for line in probes)
        assert any("writing to" in line for line in probes)
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

    def test_unusable_sandbox_is_an_error(self, settings):
        """An unusable sandbox (here an unknown mode) prints why and exits non-zero."""
        settings.EXECUTION_SANDBOX = "no-such-mode"
        out, error = check_sandbox()
        assert error is not None
        assert "unavailable" in str(error)
        assert "unknown sandbox mode" in out

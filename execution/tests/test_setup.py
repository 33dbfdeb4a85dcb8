"""What the sandbox answers where it cannot run: no bwrap, an unknown mode or language (no sandbox needed)."""

import os
import shutil
import tempfile

import pytest

from execution.sandbox import SandboxConfig, run_code, sandbox_status


@pytest.fixture(scope="module")
def work_root():
    path = tempfile.mkdtemp(prefix="setup-tests-")
    os.chmod(path, 0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_missing_bwrap_answers_unavailable(work_root):
    """No bwrap: status says so and nothing runs (never unsandboxed)."""
    config = SandboxConfig(bwrap_path="/nonexistent/bwrap", work_root=work_root)
    status = sandbox_status(config)
    assert not status.isolated
    assert not status.usable
    assert status.reason == "bwrap not found"
    result = await run_code(language="python", code="print('ran')", config=config)
    assert result.status == "unavailable"
    assert not result.success
    assert result.stdout == ""
    assert "bwrap not found" in result.error


async def test_unknown_language_is_unavailable(work_root):
    """An unsupported language never reaches a sandbox."""
    result = await run_code(language="cobol", code="DISPLAY 'HI'.", config=SandboxConfig(work_root=work_root))
    assert result.status == "unavailable"
    assert result.error == "Unsupported language: cobol"


def test_unknown_mode_is_not_usable(work_root):
    """A typo in the mode is refused rather than guessed."""
    status = sandbox_status(SandboxConfig(mode="none", work_root=work_root))
    assert not status.usable
    assert "unknown sandbox mode" in status.reason

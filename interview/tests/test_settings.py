"""Production is the default posture: deploy checks, the secret key, security headers."""

import os
import subprocess
import sys

import pytest

from interview.testing import BASE_DIR

STRONG_KEY = "k" * 10 + "Zq9-Lm2_Xp7Vt4Rb8Ns1Wc6Yd3Hf5Jg0Ke" * 2


def manage(*args, **env):
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


class TestDeploySettings:
    def test_check_deploy_is_clean_when_secret_key_and_hosts_are_set(self):
        """`manage.py check --deploy` reports no issue for a configured production deployment."""
        result = manage(
            "check", "--deploy", "--fail-level", "WARNING", SECRET_KEY=STRONG_KEY, ALLOWED_HOSTS="interview.example.com"
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "no issues" in result.stdout

    def test_production_without_secret_key_refuses_to_start(self):
        """Production hosts with the generated development key stop at start-up with a clear message."""
        result = manage("check", ALLOWED_HOSTS="interview.example.com")
        assert result.returncode != 0
        assert "SECRET_KEY is not set" in result.stderr

    def test_debug_is_off_by_default(self):
        """With no configuration, DEBUG is off."""
        result = manage("shell", "-c", "from django.conf import settings; print(settings.DEBUG)")
        assert result.stdout.strip().splitlines()[-1] == "False"


@pytest.mark.django_db
def test_security_headers_are_sent(client):
    """Responses carry nosniff, frame denial and a referrer policy."""
    response = client.get("/health")
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"

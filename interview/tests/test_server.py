"""The real server: daphne started as `make run` does, driven over HTTP."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from interview.testing import http_request


class TestRealServer:
    def test_session_round_trip_over_http(self, live_server_process):
        """Create, save code and read it back through daphne."""
        url = live_server_process.url
        status, _, body = http_request(f"{url}/api/sessions", "POST", {"language": "python"})
        assert status == 201
        sid = json.loads(body)["sessionId"]
        status, _, _ = http_request(f"{url}/api/sessions/{sid}/code", "POST", {"code": "print(2)\n"})
        assert status == 200
        status, _, body = http_request(f"{url}/api/sessions/{sid}/code")
        assert json.loads(body)["code"] == "print(2)\n"

    def test_docs_and_assets_load_without_internet(self, live_server_process):
        """/docs and /redoc reference only assets this server serves, and those load."""
        url = live_server_process.url
        for page in ["/docs", "/redoc"]:
            status, _, body = http_request(f"{url}{page}")
            assert status == 200
            html = body.decode()
            assert "/static/drf_spectacular_sidecar/" in html
            assert "cdn.jsdelivr" not in html and "unpkg" not in html
        status, _, body = http_request(f"{url}/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
        assert status == 200 and len(body) > 100_000

    def test_openapi_document_is_served(self, live_server_process):
        """/openapi.json is an OpenAPI 3 document with the contract's paths."""
        status, _, body = http_request(f"{live_server_process.url}/openapi.json")
        assert status == 200
        schema = json.loads(body)
        assert schema["openapi"].startswith("3.")
        assert "/api/sessions/{id}/code" in schema["paths"]

    def test_admin_login_is_styled(self, live_server_process):
        """The admin login page loads its CSS under daphne."""
        status, _, body = http_request(f"{live_server_process.url}/admin/login/")
        assert status == 200
        assert b"/static/admin/css/" in body
        status, headers, _ = http_request(f"{live_server_process.url}/static/admin/css/base.css")
        assert status == 200
        assert headers["Content-Type"].startswith("text/css")

    def test_unknown_host_is_400_json(self, live_server_process):
        """A Host header outside ALLOWED_HOSTS answers 400 in the error shape, not a 500."""
        status, _, body = http_request(f"{live_server_process.url}/health", headers={"Host": "evil.example"})
        assert status == 400
        assert json.loads(body)["error"] == "BAD_REQUEST"

    def test_cors_preflight_over_http(self, live_server_process):
        """Preflight from the SPA origin through daphne allows credentials for that exact origin."""
        status, headers, _ = http_request(
            f"{live_server_process.url}/api/sessions",
            "OPTIONS",
            headers={"Origin": "http://localhost:3001", "Access-Control-Request-Method": "POST"},
        )
        assert status == 200
        assert headers["access-control-allow-origin"] == "http://localhost:3001"
        assert headers["access-control-allow-credentials"] == "true"


@pytest.mark.skipif(
    not shutil.which("schemathesis", path=str(Path(sys.executable).parent)), reason="schemathesis missing"
)
def test_schemathesis_finds_no_server_error_or_schema_violation(live_server_process, tmp_path):
    """schemathesis over the server's own /openapi.json: no 500s, every response matches the schema."""
    st = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{live_server_process.url}/openapi.json",
            "--checks",
            "all",
            "--exclude-checks",
            "ignored_auth,positive_data_acceptance",
            "--max-examples",
            "40",
            "--workers",
            "2",
            "--request-timeout",
            "20",
            "--suppress-health-check",
            "all",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

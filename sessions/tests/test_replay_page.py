"""The replay page's view: HTML for a live session, the API's 404 otherwise, its files served."""

import re
import shutil
import subprocess
import uuid
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest

from interview.testing import assert_error, http_json, http_request
from sessions.tests.factories import session_expire

JS_TESTS = Path(__file__).parent / "js"


class _Assets(HTMLParser):
    """The scripts (with whether they are inline) and the stylesheets and icons a page loads."""

    def __init__(self):
        super().__init__()
        self.scripts: list[dict] = []
        self.links: list[str] = []
        self.styled: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            self.scripts.append(attrs)
        if tag == "link" and attrs.get("rel") in ("stylesheet", "icon"):
            self.links.append(attrs["href"])
        if "style" in attrs or any(name.startswith("on") for name in attrs):
            self.styled.append(tag)


def _assets(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


@pytest.mark.django_db
class TestReplayPage:
    def test_live_session_gets_the_page(self, client, make_session):
        """A live session's replay is an HTML page naming the session, its script and style from 'self'."""
        session = make_session(language="python", title="Two <sum>")
        response = client.get(f"/sessions/{session['sessionId']}/replay")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/html")
        html = response.content.decode()
        assert f'data-session-id="{session["sessionId"]}"' in html
        assert "Two &lt;sum&gt;" in html
        assets = _assets(html)
        assert [script.get("src") for script in assets.scripts] == ["/static/replay/replay.mjs"]
        assert "/static/replay/replay.css" in assets.links

    def test_page_allows_scripts_from_self_only(self, client, make_session):
        """The page's CSP allows scripts and connections to this server only, and no inline code."""
        sid = make_session()["sessionId"]
        response = client.get(f"/sessions/{sid}/replay")
        policy = dict(part.strip().split(" ", 1) for part in response["Content-Security-Policy"].split(";"))
        assert policy["script-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["default-src"] == "'none'"
        assets = _assets(response.content.decode())
        assert all(script.get("src") for script in assets.scripts)
        assert assets.styled == []

    def test_trailing_slash_is_the_same_page(self, client, make_session):
        """`/replay/` answers as `/replay` does, like the API's optional slash."""
        sid = make_session()["sessionId"]
        assert client.get(f"/sessions/{sid}/replay/").status_code == 200

    @pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid"])
    def test_unknown_session_is_404_in_the_error_shape(self, client, session_id):
        """An unknown id answers the API's SESSION_NOT_FOUND, as JSON."""
        response = client.get(f"/sessions/{session_id}/replay")
        assert_error(response, 404, "SESSION_NOT_FOUND")

    def test_expired_session_is_404(self, client, make_session):
        """An expired session has no replay page."""
        sid = make_session()["sessionId"]
        session_expire(sid, ago=timedelta(seconds=1))
        assert_error(client.get(f"/sessions/{sid}/replay"), 404, "SESSION_NOT_FOUND")

    def test_deleted_session_is_404(self, client, api, make_session):
        """A deleted session has no replay page."""
        session = make_session()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {session['ownerToken']}")
        assert api.delete(f"/api/sessions/{session['sessionId']}").status_code == 204
        assert_error(client.get(f"/sessions/{session['sessionId']}/replay"), 404, "SESSION_NOT_FOUND")

    def test_other_methods_are_405_in_the_error_shape(self, client, make_session):
        """The page is read-only: POST answers 405 METHOD_NOT_ALLOWED."""
        sid = make_session()["sessionId"]
        response = client.post(f"/sessions/{sid}/replay", {"token": "x"})
        assert_error(response, 405, "METHOD_NOT_ALLOWED")
        assert response["Allow"] == "GET, HEAD"


@pytest.mark.django_db
class TestReplayAdminLink:
    def test_live_session_page_links_to_its_replay(self, staff_client, make_session):
        """A live session's admin page has a Replay link to its replay page."""
        sid = make_session()["sessionId"]
        page = staff_client.get(f"/admin/interview_sessions/interviewsession/{sid}/change/").content.decode()
        assert re.search(rf'<a href="/sessions/{sid}/replay"[^>]*>Replay</a>', page)

    def test_expired_session_page_has_no_replay_link(self, staff_client, make_session):
        """An expired session (whose replay answers 404) gets no link."""
        sid = make_session()["sessionId"]
        session_expire(sid, ago=timedelta(minutes=1))
        page = staff_client.get(f"/admin/interview_sessions/interviewsession/{sid}/change/").content.decode()
        assert "History" in page
        assert f"/sessions/{sid}/replay" not in page


def test_page_and_its_files_load_from_the_real_server(live_server_process):
    """Under daphne (after collectstatic, as `make run`) the page's script, module and style load."""
    url = live_server_process.url
    sid = http_json(f"{url}/api/sessions", "POST", {})["sessionId"]
    status, headers, body = http_request(f"{url}/sessions/{sid}/replay")
    assert status == 200
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assets = _assets(body.decode())
    files = [script["src"] for script in assets.scripts] + assets.links + ["/static/replay/timeline.mjs"]
    types = {".mjs": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
    for path in files:
        status, headers, body = http_request(f"{url}{path}")
        assert status == 200, path
        assert headers["Content-Type"].startswith(types[Path(path).suffix]), (path, headers["Content-Type"])
        assert body


@pytest.mark.skipif(not shutil.which("node"), reason="node is missing (the replay model's tests run under node)")
def test_replay_model_passes_its_node_tests():
    """The page's model (timeline.mjs: changes, checkpoints, playback times) passes `node --test`."""
    result = subprocess.run(
        ["node", "--test", *sorted(str(path) for path in JS_TESTS.glob("*.test.mjs"))],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^# pass [1-9]", result.stdout, re.MULTILINE), result.stdout

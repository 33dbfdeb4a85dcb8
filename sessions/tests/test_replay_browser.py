"""The replay page in a real browser: Debian's Chromium driven by Playwright against the real
server (`manage.py serve`, as `make run` starts it), on a session made through the public APIs.

Playwright's sync API runs in plain (non-async) tests: it cannot run inside an event loop, and
the session is made with blocking clients (urllib, websockets' sync client) as well."""

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass, field

import pytest
from websockets.sync.client import connect

from interview.testing import SERVER_PATIENCE_SECONDS, http_call, http_json
from sessions.document import apply, utf16_len

sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is missing: pip install -r requirements-dev.txt"
)

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM, reason="Chromium is missing: `make browser` installs it (Debian: apt-get install chromium)"
)

# Playwright counts milliseconds; a wait is only a bound for a hung test.
WAIT_MS = SERVER_PATIENCE_SECONDS * 1000
NOTES = "Strong on recursion.\nAsk about edge cases: empty name, ünïcode 😀."
OUTPUT = "hi replay\n"


@dataclass
class Interview:
    """A session made through the APIs, and what the replay should show of it."""

    session_id: str
    token: str
    api: str
    # The text each edit inserted, by the version it made (what that version highlights).
    inserted: dict[int, list[str]] = field(default_factory=dict)
    deletion_version: int = 0
    run: dict = field(default_factory=dict)


def _receive(ws, kind: str) -> dict:
    while True:
        message = json.loads(ws.recv(timeout=SERVER_PATIENCE_SECONDS))
        if message["type"] == kind:
            return message


def interview(server) -> Interview:
    """A candidate's session: deltas over a WebSocket (one with two changes, one an emoji, one a
    pure deletion), a REST save, a run, a language change, one more edit, and the notes."""
    created = http_json(f"{server.url}/api/sessions", "POST", {"language": "python", "title": "Replay in a browser"})
    sid = created["sessionId"]
    made = Interview(session_id=sid, token=created["ownerToken"], api=f"{server.url}/api/sessions/{sid}")
    with connect(f"{server.ws_url}/ws/sessions/{sid}", open_timeout=SERVER_PATIENCE_SECONDS) as ws:
        welcome = _receive(ws, "welcome")["data"]
        text, version = welcome["currentCode"], welcome["version"]
        ws.send(json.dumps({"type": "join", "userId": "candidate", "data": {"name": "Candidate"}}))

        def edit(changes):
            nonlocal text, version
            ws.send(json.dumps({"type": "code-update", "data": {"changes": changes, "version": version}}))
            version = _receive(ws, "code-ack")["data"]["version"]
            text = apply(text, changes)
            made.inserted[version] = [change["insert"] for change in changes if change["insert"]]

        end = utf16_len(text)
        edit([{"from": end, "to": end, "insert": "def greet(name):\n    return 'hi ' + name\n"}])
        edit([{"from": 0, "to": utf16_len(text.split("\n")[0]), "insert": "# Greeting 😀"}])
        shebang = "#!/usr/bin/env python3\n"
        end = utf16_len(text)
        edit([{"from": 0, "to": 0, "insert": shebang}, {"from": end, "to": end, "insert": "print(greet('replay'))\n"}])
        edit([{"from": 0, "to": utf16_len(shebang), "insert": ""}])
        made.deletion_version = version

        saved = text + "# saved\n"
        http_json(f"{made.api}/code", "POST", {"code": saved})
        version, text = _receive(ws, "code-update")["data"]["version"], saved
        body = {"code": text, "language": "python", "sessionId": sid}
        made.run = http_json(f"{server.url}/api/execute", "POST", body)
        http_json(made.api, "PATCH", {"language": "javascript"})
        _receive(ws, "language-changed")
        end = utf16_len(text)
        edit([{"from": end, "to": end, "insert": "// in JavaScript from here on\n"}])

    status, answer = http_call(
        f"{made.api}/notes", "PUT", {"notes": NOTES}, headers={"Authorization": f"Bearer {made.token}"}
    )
    assert status == 200, answer
    assert http_json(f"{made.api}/code")["code"] == text
    return made


def replay_url(server, session: Interview, fragment: str = "") -> str:
    return f"{server.url}/sessions/{session.session_id}/replay{fragment}"


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium from the system (never a browser Playwright would download)."""
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield browser
        browser.close()


def _console_problem(message) -> str:
    return f"console: {message.text} ({message.location.get('url')})"


@pytest.fixture
def problems():
    """The console errors and uncaught page errors of the test's page."""
    return []


@pytest.fixture
def page(browser, problems):
    """A page in a fresh browser context (no cookies) that records its console and page errors."""
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.on("console", lambda message: message.type == "error" and problems.append(_console_problem(message)))
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    yield page
    context.close()


def loaded(page):
    """Wait until the page has loaded the timeline and the notes."""
    sync_api.expect(page.locator("#replay")).to_have_attribute("data-state", re.compile("ready|error"), timeout=WAIT_MS)
    assert page.locator("#replay").get_attribute("data-state") == "ready", page.locator("#error").text_content()


def shown(page) -> str:
    return page.locator("#document").text_content()


def positions_of_versions(session: Interview) -> dict[int, int]:
    """The slider position of each version: just after the timeline item of its change."""
    timeline = http_json(f"{session.api}/timeline?limit=500")
    assert not timeline["hasMore"]
    found = {timeline["firstVersion"]: 0}
    for index, item in enumerate(timeline["items"]):
        if item["type"] == "change":
            found[item["version"]] = index + 1
    return found


class TestReplayInBrowser:
    def test_slider_play_runs_and_notes(self, live_server_process, page, problems):
        """Every version the slider reaches is the API's text of it, the latest change highlighted;
        16x plays to the current code; the run's output, the events and the notes are shown."""
        server = live_server_process
        session = interview(server)
        page.goto(replay_url(server, session, f"#token={session.token}"))
        loaded(page)
        current = http_json(f"{session.api}/code")

        # Step through the whole timeline with the keyboard: each version is the API's.
        slider = page.locator("#position")
        slider.focus()
        slider.press("Home")
        document = page.locator("#document")
        sync_api.expect(document).to_have_attribute("data-version", "0")
        seen = []
        for step in range(int(slider.get_attribute("max")) + 1):
            sync_api.expect(slider).to_have_value(str(step))
            version = int(document.get_attribute("data-version"))
            if not seen or seen[-1] != version:
                seen.append(version)
                assert shown(page) == http_json(f"{session.api}/code?version={version}")["code"], version
            slider.press("ArrowRight")
        assert seen == list(range(current["version"] + 1))

        # Move the slider to the version with two changes: both inserts are highlighted.
        two_changes = next(v for v, inserts in session.inserted.items() if len(inserts) == 2)
        slider.fill(str(positions_of_versions(session)[two_changes]))
        sync_api.expect(document).to_have_attribute("data-version", str(two_changes))
        assert shown(page) == http_json(f"{session.api}/code?version={two_changes}")["code"]
        assert page.locator("#document mark.changed").all_text_contents() == session.inserted[two_changes]
        sync_api.expect(page.locator("#language")).to_have_text("python")
        sync_api.expect(page.locator("#run")).to_contain_text("No run yet")

        # A deletion inserts nothing: its place is marked, nothing highlighted.
        slider.fill(str(positions_of_versions(session)[session.deletion_version]))
        sync_api.expect(document).to_have_attribute("data-version", str(session.deletion_version))
        sync_api.expect(page.locator("#document span.deleted")).to_have_count(1)
        sync_api.expect(page.locator("#document mark")).to_have_count(0)

        # Play from the start at 16x to the end.
        slider.fill("0")
        page.locator('input[name="speed"][value="16"]').check()
        page.locator("#play").click()
        sync_api.expect(page.locator("#replay")).to_have_attribute("data-state", "ended", timeout=WAIT_MS)
        sync_api.expect(slider).to_have_value(slider.get_attribute("max"))
        assert shown(page) == current["code"]
        sync_api.expect(page.locator("#play")).to_have_text("Play")
        sync_api.expect(page.locator("#language")).to_have_text("javascript")

        # The run and what it printed, the events marked on the slider, the notes.
        run = session.run
        if run["stdout"]:
            assert run["stdout"] == OUTPUT, run
            assert page.locator("#run-stdout").text_content() == OUTPUT
        else:  # the sandbox is unusable here: the run is still shown, with its error
            sync_api.expect(page.locator("#run-error")).to_have_text(run["error"])
        sync_api.expect(page.locator("#run-summary")).to_contain_text(run["status"])
        for kind in ["save", "run", "language-change"]:
            sync_api.expect(page.locator(f"#markers .marker.{kind}")).to_have_count(1)
        sync_api.expect(page.locator("#notes-text")).to_have_value(NOTES)
        assert problems == []

    def test_token_from_the_form_never_leaves_the_fragment(self, live_server_process, page, problems):
        """Without a token the page asks for one; a wrong one is refused with a clear message, the
        right one shows the notes, and no request ever carries the token in its URL."""
        server = live_server_process
        session = interview(server)
        requests = []
        page.on("request", lambda request: requests.append((request.url, request.headers.get("authorization"))))
        page.goto(replay_url(server, session))
        loaded(page)
        sync_api.expect(page.locator("#token-form")).to_be_visible()
        sync_api.expect(page.locator("#notes-status")).to_contain_text("owner token")

        page.locator("#token-input").fill("not-the-token")
        page.locator("#token-form button").click()
        sync_api.expect(page.locator("#notes-status")).to_contain_text("does not match")

        page.locator("#token-input").fill(session.token)
        page.locator("#token-form button").click()
        sync_api.expect(page.locator("#notes-text")).to_have_value(NOTES)
        assert page.url == replay_url(server, session, f"#token={session.token}")

        # Edit and save the notes; the API has them.
        page.locator("#notes-text").fill("Hire.")
        page.locator("#notes-save").click()
        sync_api.expect(page.locator("#notes-status")).to_contain_text("Saved")
        status, notes = http_call(f"{session.api}/notes", headers={"Authorization": f"Bearer {session.token}"})
        assert (status, notes["notes"]) == (200, "Hire.")

        assert not [url for url, _ in requests if session.token in url]
        assert f"Bearer {session.token}" in [auth for url, auth in requests if url.endswith("/notes")]
        # The browser logs the two refused notes requests (401, then 403); nothing else.
        assert [p for p in problems if not re.search(r"status of 40[13]", p)] == []
        assert len(problems) == 2

    def test_staff_user_opens_the_replay_from_the_admin(self, live_server_process, page, problems):
        """A staff user logged in to the admin follows the session's Replay link and reads and
        saves the notes without a token (the cookie login, CSRF-checked)."""
        server = live_server_process
        session = interview(server)
        username = f"staff-{uuid.uuid4().hex[:8]}"
        server.manage(
            "shell",
            "-c",
            "from django.contrib.auth import get_user_model; "
            f"get_user_model().objects.create_superuser({username!r}, 'staff@example.com', 'replay-pw-1')",
        )
        change_page = f"/admin/interview_sessions/interviewsession/{session.session_id}/change/"
        page.goto(f"{server.url}/admin/login/?next={change_page}")
        page.locator("#id_username").fill(username)
        page.locator("#id_password").fill("replay-pw-1")
        page.locator("input[type=submit]").click()
        page.wait_for_url(f"{server.url}{change_page}")
        page.get_by_role("link", name="Replay", exact=True).click()
        page.wait_for_url(replay_url(server, session))
        loaded(page)
        sync_api.expect(page.locator("#notes-text")).to_have_value(NOTES)
        page.locator("#notes-text").fill(NOTES + "\nSeen by staff.")
        page.locator("#notes-save").click()
        sync_api.expect(page.locator("#notes-status")).to_contain_text("Saved")
        status, notes = http_call(f"{session.api}/notes", headers={"Authorization": f"Bearer {session.token}"})
        assert (status, notes["notes"]) == (200, NOTES + "\nSeen by staff.")
        # The admin's pages have no icon (the browser's /favicon.ico is a 404); the replay's has.
        assert [p for p in problems if not p.endswith("/favicon.ico)")] == []

    def test_failed_api_call_is_shown(self, live_server_process, page, problems):
        """A session deleted while the page loads: the timeline's 404 is shown as a clear message."""
        server = live_server_process
        session = interview(server)
        auth = {"Authorization": f"Bearer {session.token}"}

        def delete_first(route):
            assert http_call(session.api, "DELETE", headers=auth)[0] == 204
            route.continue_()

        page.route("**/timeline?*", delete_first)
        page.goto(replay_url(server, session, f"#token={session.token}"))
        sync_api.expect(page.locator("#replay")).to_have_attribute("data-state", "error")
        error = page.locator("#error")
        sync_api.expect(error).to_be_visible()
        sync_api.expect(error).to_contain_text("Could not load the session's timeline")
        sync_api.expect(error).to_contain_text("SESSION_NOT_FOUND")
        # The refused timeline (and notes, if they came after the delete) are logged as 404s.
        assert [p for p in problems if "status of 404" not in p] == []

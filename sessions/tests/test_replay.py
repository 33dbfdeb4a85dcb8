"""Replay: any past version of the code, the timeline, and the interviewer's private notes."""

import json
import os
import random

import pytest

from interview.testing import assert_error
from sessions import document
from sessions.models import DocumentCheckpoint, DocumentOperation, InterviewSession, SessionNotes
from sessions.selectors import session_export
from sessions.services import CodeChange, code_change_apply, run_record, session_update
from sessions.tests.factories import snapshot_make
from sessions.tests.helpers import run

pytestmark = pytest.mark.django_db

ALPHABET = "ab \n😀é{}"


def random_edits(sid, count: int, seed: int = 7) -> list[str]:
    """`count` random deltas (with characters outside the BMP) by two users; the text after each,
    index 0 being the text before the first."""
    rng = random.Random(seed)
    text = InterviewSession.objects.get(pk=sid).code
    texts = [text]
    version = InterviewSession.objects.get(pk=sid).version
    for _ in range(count):
        units = text.encode("utf-16-le")
        length = len(units) // 2
        start = rng.randint(0, length)
        end = min(length, start + rng.choice([0, 0, 1, 2]))
        while not _boundary(units, start) or not _boundary(units, end):
            start, end = max(0, start - 1), max(0, end - 1)
            end = max(start, end)
        change = {"from": start, "to": end, "insert": "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 3)))}
        if change["from"] == change["to"] and not change["insert"]:
            change["insert"] = "z"
        result = code_change_apply(
            session_id=sid,
            change=CodeChange(changes=[change], base_version=version, user_id=rng.choice(["ann", "bob"])),
            notify=False,
        )
        version = result.version
        text = result.code
        texts.append(text)
    return texts


def assert_invalid(response, field: str) -> None:
    """A 400 validation error naming `field`."""
    body = assert_error(response, 400, "VALIDATION_ERROR")
    assert field in body["fields"], body


def _boundary(units: bytes, offset: int) -> bool:
    return not document._splits_pair(units, offset)


class TestPastVersions:
    def test_every_version_is_rebuilt_exactly(self, api, make_session, settings):
        """Each version's text equals the document right after that change, checkpoint or not."""
        settings.DOCUMENT_CHECKPOINT_INTERVAL = 10
        sid = make_session(language="python")["sessionId"]
        texts = random_edits(sid, 65)
        for version, expected in enumerate(texts):
            body = api.get(f"/api/sessions/{sid}/code?version={version}").json()
            assert (body["version"], body["code"]) == (version, expected), version
        checkpoints = set(DocumentCheckpoint.objects.filter(session_id=sid).values_list("version", flat=True))
        assert checkpoints == {0, 10, 20, 30, 40, 50, 60}

    def test_without_version_the_current_code(self, api, make_session):
        """No `version`: the current code, as before."""
        sid = make_session()["sessionId"]
        texts = random_edits(sid, 3)
        body = api.get(f"/api/sessions/{sid}/code").json()
        assert (body["code"], body["version"]) == (texts[-1], 3)

    def test_last_modified_and_language_are_those_of_the_version(self, api, make_session):
        """A past version answers when its text was made and the language then."""
        sid = make_session(language="python")["sessionId"]
        random_edits(sid, 2)
        session_update(session_id=sid, language="cpp")
        random_edits(sid, 2, seed=3)
        made = DocumentOperation.objects.get(session_id=sid, version=1).created_at
        body = api.get(f"/api/sessions/{sid}/code?version=1").json()
        assert body["language"] == "python"
        assert body["lastModified"] == made.isoformat().replace("+00:00", "Z")
        assert api.get(f"/api/sessions/{sid}/code?version=3").json()["language"] == "cpp"
        assert api.get(f"/api/sessions/{sid}/code?version=0").json()["language"] == "python"

    @pytest.mark.parametrize("value", ["-1", "abc", "1.5", ""])
    def test_a_malformed_version_is_400(self, api, make_session, value):
        """A version that is not an integer of 0 or more is a validation error."""
        sid = make_session()["sessionId"]
        assert_invalid(api.get(f"/api/sessions/{sid}/code?version={value}"), "version")

    def test_a_version_not_reached_yet_is_404(self, api, make_session):
        """Above the current version: 404 VERSION_NOT_FOUND, saying where the document is."""
        sid = make_session()["sessionId"]
        random_edits(sid, 2)
        response = api.get(f"/api/sessions/{sid}/code?version=3")
        assert_error(response, 404, "VERSION_NOT_FOUND")
        assert "version 2" in response.json()["message"]

    def test_an_unknown_session_is_404(self, api):
        """A past version of an unknown session is SESSION_NOT_FOUND."""
        response = api.get("/api/sessions/6f1c1b1e-8a51-4f0e-9f58-0f6a2b2f0d11/code?version=0")
        assert_error(response, 404, "SESSION_NOT_FOUND")

    def test_a_trimmed_log_keeps_every_version_from_its_cut(self, api, make_session, settings):
        """Past the log's bound, the oldest versions go (410 VERSION_NOT_KEPT); every version
        from the first one kept is still rebuilt exactly, and the log stays within its bound."""
        settings.SESSION_MAX_LOG_BYTES = 6_000
        settings.DOCUMENT_CHECKPOINT_INTERVAL = 25
        sid = make_session()["sessionId"]
        texts = random_edits(sid, 150)
        session = InterviewSession.objects.get(pk=sid)
        first = api.get(f"/api/sessions/{sid}/timeline").json()["firstVersion"]
        assert 0 < first < 150
        assert session.log_bytes <= 6_000
        assert DocumentCheckpoint.objects.filter(session_id=sid).order_by("version").first().version == first
        response = api.get(f"/api/sessions/{sid}/code?version={first - 1}")
        assert_error(response, 410, "VERSION_NOT_KEPT")
        assert f"is {first}" in response.json()["message"]
        for version in range(first, 151):
            assert api.get(f"/api/sessions/{sid}/code?version={version}").json()["code"] == texts[version]


class TestTimeline:
    def make_story(self, sid) -> None:
        """Two changes, a language change, a save, a run and a title change, in that order."""
        random_edits(sid, 2)
        session_update(session_id=sid, language="python", user_id="ann")
        snapshot_make(sid, "print(1)\n")
        run_record(
            session_id=sid,
            code="print(1)\n",
            description="Ran python: succeeded (30 ms)",
            details={"language": "python", "status": "ok", "success": True, "exitCode": 0, "executionTime": 30},
            stdout="1\n",
            stderr="",
        )
        session_update(session_id=sid, title="Two sum", set_title=True)
        random_edits(sid, 1, seed=9)

    def test_changes_and_events_in_order(self, api, make_session):
        """Every change and event, oldest first, each event after the change of its version."""
        sid = make_session()["sessionId"]
        self.make_story(sid)
        body = api.get(f"/api/sessions/{sid}/timeline").json()
        assert (body["currentVersion"], body["firstVersion"], body["hasMore"]) == (4, 0, False)
        kinds = [(item["type"], item["version"]) for item in body["items"]]
        assert kinds == [
            ("change", 1),
            ("change", 2),
            ("language-change", 2),
            ("change", 3),
            ("save", 3),
            ("run", 3),
            ("title-change", 3),
            ("change", 4),
        ]
        language, save, ran, title = body["items"][2], body["items"][4], body["items"][5], body["items"][6]
        assert (language["from"], language["to"], language["userId"]) == ("javascript", "python", "ann")
        assert save["snapshotId"] and save["language"] == "python"
        assert (ran["status"], ran["stdout"], ran["exitCode"], ran["truncated"]) == ("ok", "1\n", 0, False)
        assert (title["from"], title["to"]) == (None, "Two sum")
        assert body["next"] == {"after": 4, "afterEvent": None}

    def test_replaying_the_changes_gives_each_version(self, api, make_session):
        """Applying each change item to the text of the version before gives that version."""
        sid = make_session()["sessionId"]
        texts = random_edits(sid, 30)
        body = api.get(f"/api/sessions/{sid}/timeline").json()
        text = api.get(f"/api/sessions/{sid}/code?version=0").json()["code"]
        for item in body["items"]:
            text = document.apply(text, item["changes"])
            assert text == texts[item["version"]]
        assert all(item["timestamp"].endswith("Z") for item in body["items"])

    @pytest.mark.parametrize("limit", [1, 2, 3, 5])
    def test_pages_hold_every_item_once(self, api, make_session, limit):
        """Following `next` with any page size gives the same items as one page, none twice."""
        sid = make_session()["sessionId"]
        self.make_story(sid)
        whole = api.get(f"/api/sessions/{sid}/timeline?limit=500").json()["items"]
        seen, query = [], f"limit={limit}"
        while True:
            page = api.get(f"/api/sessions/{sid}/timeline?{query}").json()
            assert len(page["items"]) <= limit
            seen += page["items"]
            if not page["hasMore"]:
                break
            query = f"limit={limit}&after={page['next']['after']}"
            if page["next"]["afterEvent"] is not None:
                query += f"&afterEvent={page['next']['afterEvent']}"
        assert seen == whole

    def test_events_before_the_first_change_come_first(self, api, make_session):
        """A run at version 0 is on the first page, before any change."""
        sid = make_session()["sessionId"]
        run_record(session_id=sid, code="x", description="Ran", details={"status": "ok"}, stdout="", stderr="")
        random_edits(sid, 1)
        items = api.get(f"/api/sessions/{sid}/timeline").json()["items"]
        assert [(i["type"], i["version"]) for i in items] == [("run", 0), ("change", 1)]

    def test_a_page_stops_at_its_byte_bound(self, api, make_session, settings):
        """Large runs end a page early, at least one item each; `next` continues after it."""
        settings.TIMELINE_MAX_RESPONSE_BYTES = 30_000
        sid = make_session()["sessionId"]
        for _ in range(4):
            run_record(session_id=sid, code="x", description="Ran", details={}, stdout="o" * 20_000, stderr="")
        page = api.get(f"/api/sessions/{sid}/timeline").json()
        assert len(page["items"]) == 1 and page["hasMore"]
        assert len(json.dumps(page)) < 30_000 + 1_000
        rest = api.get(f"/api/sessions/{sid}/timeline?after=0&afterEvent={page['next']['afterEvent']}").json()
        assert rest["items"][0]["id"] > page["items"][0]["id"]

    def test_a_run_keeps_its_output_capped(self, make_session, api, settings):
        """A run's stdout is kept up to HISTORY_OUTPUT_BYTES (cut at a character), marked truncated."""
        settings.HISTORY_OUTPUT_BYTES = 10
        sid = make_session()["sessionId"]
        run_record(session_id=sid, code="x", description="Ran", details={}, stdout="ééééééé", stderr="short")
        (item,) = api.get(f"/api/sessions/{sid}/timeline").json()["items"]
        assert (item["stdout"], item["stderr"], item["truncated"]) == ("ééééé", "short", True)

    def test_older_runs_lose_their_output_with_their_code(self, make_session, api, settings):
        """Past SESSION_MAX_HISTORY_CODES, an older run keeps its place but not its output."""
        settings.SESSION_MAX_HISTORY_CODES = 1
        sid = make_session()["sessionId"]
        for index in range(2):
            run_record(session_id=sid, code="x", description="Ran", details={}, stdout=f"out{index}", stderr="e")
        items = api.get(f"/api/sessions/{sid}/timeline").json()["items"]
        assert [(i["stdout"], i["stderr"]) for i in items] == [(None, None), ("out1", "e")]

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ("after=-1", "after"),
            ("after=x", "after"),
            ("limit=0", "limit"),
            ("limit=501", "limit"),
            ("afterEvent=no", "afterEvent"),
        ],
    )
    def test_bad_parameters_are_400(self, api, make_session, query, field):
        """Malformed or out-of-range parameters are validation errors naming the field."""
        sid = make_session()["sessionId"]
        assert_invalid(api.get(f"/api/sessions/{sid}/timeline?{query}"), field)

    def test_after_past_the_end_is_400(self, api, make_session):
        """An `after` beyond the current version is refused, saying where the document is."""
        sid = make_session()["sessionId"]
        random_edits(sid, 2)
        response = api.get(f"/api/sessions/{sid}/timeline?after=3")
        assert_invalid(response, "after")
        assert "version 2" in response.json()["fields"]["after"][0]
        assert api.get(f"/api/sessions/{sid}/timeline?after=2").json()["items"] == []

    def test_an_unknown_session_is_404(self, api):
        """The timeline of an unknown session is SESSION_NOT_FOUND."""
        response = api.get("/api/sessions/6f1c1b1e-8a51-4f0e-9f58-0f6a2b2f0d11/timeline")
        assert_error(response, 404, "SESSION_NOT_FOUND")


class TestNotes:
    def test_the_owner_writes_and_reads_notes(self, api, make_session):
        """PUT with the owner token replaces the notes; GET returns them with their time."""
        created = make_session()
        sid, auth = created["sessionId"], {"HTTP_AUTHORIZATION": f"Bearer {created['ownerToken']}"}
        empty = api.get(f"/api/sessions/{sid}/notes", **auth).json()
        assert empty == {"sessionId": sid, "notes": "", "updatedAt": None}
        saved = api.put(f"/api/sessions/{sid}/notes", {"notes": "  Strong on tests.\n"}, **auth).json()
        assert saved["notes"] == "  Strong on tests.\n" and saved["updatedAt"].endswith("Z")
        assert api.get(f"/api/sessions/{sid}/notes", **auth).json() == saved

    @pytest.mark.parametrize("method", ["get", "put"])
    def test_no_token_is_401_and_a_wrong_one_403(self, api, make_session, method):
        """Without the owner token notes are neither shown nor changed."""
        created = make_session()
        sid = created["sessionId"]
        SessionNotes.objects.create(session_id=sid, text="secret")
        call = getattr(api, method)
        assert_error(call(f"/api/sessions/{sid}/notes", {"notes": "x"}), 401, "UNAUTHORIZED")
        wrong = {"HTTP_AUTHORIZATION": "Bearer not-the-token"}
        assert_error(call(f"/api/sessions/{sid}/notes", {"notes": "x"}, **wrong), 403, "FORBIDDEN")
        assert SessionNotes.objects.get(session_id=sid).text == "secret"

    def test_notes_over_the_limit_are_400_and_change_nothing(self, api, make_session, settings):
        """Notes larger than SESSION_NOTES_MAX_BYTES (in UTF-8) are refused; the old ones stay."""
        settings.SESSION_NOTES_MAX_BYTES = 10
        created = make_session()
        sid, auth = created["sessionId"], {"HTTP_AUTHORIZATION": f"Bearer {created['ownerToken']}"}
        api.put(f"/api/sessions/{sid}/notes", {"notes": "ok"}, **auth)
        response = api.put(f"/api/sessions/{sid}/notes", {"notes": "é" * 6}, **auth)
        assert_invalid(response, "notes")
        assert_invalid(api.put(f"/api/sessions/{sid}/notes", {"notes": 5}, **auth), "notes")
        assert api.get(f"/api/sessions/{sid}/notes", **auth).json()["notes"] == "ok"

    def test_staff_may_read_notes(self, staff_client, make_session):
        """A staff user logged in to the admin reads notes without the token."""
        sid = make_session()["sessionId"]
        SessionNotes.objects.create(session_id=sid, text="from the admin")
        assert staff_client.get(f"/api/sessions/{sid}/notes").json()["notes"] == "from the admin"

    def test_notes_stay_out_of_every_other_answer(self, api, make_session):
        """The session, code, history, timeline and a default export never carry the notes."""
        created = make_session()
        sid = created["sessionId"]
        api.put(
            f"/api/sessions/{sid}/notes", {"notes": "NOTE-MARK"}, HTTP_AUTHORIZATION=f"Bearer {created['ownerToken']}"
        )
        random_edits(sid, 1)
        for path in ("", "/code", "/history", "/timeline", "/participants"):
            assert "NOTE-MARK" not in api.get(f"/api/sessions/{sid}{path}").content.decode()
        assert "NOTE-MARK" not in json.dumps(session_export(session_id=sid))

    def test_export_with_notes_round_trips(self, make_session, api, tmp_path):
        """`export_session --with-notes` includes them, and an import restores them."""
        created = make_session()
        sid = created["sessionId"]
        api.put(
            f"/api/sessions/{sid}/notes", {"notes": "keep me"}, HTTP_AUTHORIZATION=f"Bearer {created['ownerToken']}"
        )
        out = tmp_path / "export.json"
        run("export_session", sid, "--with-notes", "-o", str(out))
        data = json.loads(out.read_text())
        assert data["notes"]["text"] == "keep me"
        InterviewSession.objects.filter(pk=sid).delete()
        run("import_session", str(out))
        assert SessionNotes.objects.get(session_id=sid).text == "keep me"
        assert "notes" not in json.loads(run("export_session", sid))


class TestOlderData:
    def test_an_export_without_checkpoints_replays_from_its_version(self, api):
        """An export made before checkpoints imports with its current text as its first version."""
        from sessions.lifecycle import session_import
        from sessions.tests.factories import session_make

        session = session_make()
        random_edits(session.id, 3)
        data = session_export(session_id=session.id)
        del data["checkpoints"]
        InterviewSession.objects.filter(pk=session.id).delete()
        session_import(data=data)
        assert api.get(f"/api/sessions/{session.id}/timeline").json()["firstVersion"] == 3
        assert_error(api.get(f"/api/sessions/{session.id}/code?version=2"), 410, "VERSION_NOT_KEPT")

    def test_the_migration_checkpoints_existing_sessions(self, tmp_path):
        """Migration 0007 gives a session made before it a checkpoint of its current text."""
        import sqlite3
        import subprocess
        import sys
        import uuid

        from django.conf import settings

        database = tmp_path / "old.sqlite3"
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{database}", "SECRET_KEY_FILE": str(tmp_path / "key")}
        env.pop("DJANGO_SETTINGS_MODULE", None)

        def manage(*args):
            subprocess.run(
                [sys.executable, "manage.py", *args], cwd=settings.BASE_DIR, env=env, check=True, capture_output=True
            )

        manage("migrate", "interview_sessions", "0006", "--noinput")
        sid = uuid.uuid4().hex
        with sqlite3.connect(database) as db:
            db.execute(
                "INSERT INTO interview_sessions_interviewsession (id, title, language, code, version, created_at,"
                " code_modified_at, expires_at, owner_token_hash, log_bytes) VALUES"
                " (?, NULL, 'python', 'print(7)', 41, '2026-12-01 10:00:00', '2026-12-01 11:00:00',"
                " '2099-01-01 00:00:00', '', 0)",
                [sid],
            )
        manage("migrate", "--noinput")
        with sqlite3.connect(database) as db:
            rows = db.execute(
                "SELECT version, code, created_at FROM interview_sessions_documentcheckpoint WHERE session_id = ?",
                [sid],
            ).fetchall()
        assert rows == [(41, "print(7)", "2026-12-01 11:00:00")]

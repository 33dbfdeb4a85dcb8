"""Session lifecycle: purging expired sessions, ending, export and import, their commands and admin actions."""

import copy
import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.core.management import CommandError, call_command

from sessions.exceptions import SessionNotFound
from sessions.export_format import EXPORT_FORMAT
from sessions.lifecycle import (
    PurgeReport,
    SessionImportError,
    session_end,
    session_import,
    sessions_purge_expired,
)
from sessions.models import (
    CodeSnapshot,
    DocumentOperation,
    HistoryEntry,
    InterviewSession,
    Participant,
    ParticipantConnection,
)
from sessions.selectors import session_export
from sessions.services import CodeChange, code_change_apply, session_update
from sessions.tests.factories import participant_make, session_expire, session_make, snapshot_make

CHANGELIST = "/admin/interview_sessions/interviewsession/"


def populate(*, title: str = "Two sum", expired_hours_ago: float | None = None) -> InterviewSession:
    """A session that went through everything: edits by two users, a snapshot, a language
    change, participants with connections and a cursor; optionally expired."""
    session = session_make(language="python", title=title)
    code_change_apply(session_id=session.id, change=CodeChange(code="print('héllo')\n", user_id="alice"))
    code_change_apply(
        session_id=session.id,
        change=CodeChange(changes=[{"from": 0, "to": 0, "insert": "# 🎉\n"}], base_version=1, user_id="bob", seq=1),
    )
    snapshot_make(session.id, "# 🎉\nprint(2)\n", user_id="alice")
    session_update(session_id=session.id, language="javascript", user_id="bob")
    participant_make(session, "alice", "Alice", live=1, cursor={"line": 2, "column": 3})
    participant_make(session, "bob", "Bob", live=1)
    if expired_hours_ago is not None:
        session_expire(session.id, ago=timedelta(hours=expired_hours_ago))
    session.refresh_from_db()
    return session


def rows(session_id) -> dict:
    """How many rows of each kind a session holds."""
    return {
        "sessions": InterviewSession.objects.filter(pk=session_id).count(),
        "snapshots": CodeSnapshot.objects.filter(session_id=session_id).count(),
        "history_entries": HistoryEntry.objects.filter(session_id=session_id).count(),
        "operations": DocumentOperation.objects.filter(session_id=session_id).count(),
        "participants": Participant.objects.filter(session_id=session_id).count(),
        "connections": ParticipantConnection.objects.filter(participant__session_id=session_id).count(),
    }


def all_rows() -> dict:
    return {
        model.__name__: model.objects.count()
        for model in (
            InterviewSession,
            CodeSnapshot,
            HistoryEntry,
            DocumentOperation,
            Participant,
            ParticipantConnection,
        )
    }


def total(*sessions) -> dict:
    """The summed row counts of several sessions, as a PurgeReport counts them."""
    counts = [rows(s.id) for s in sessions]
    return {key: sum(c[key] for c in counts) for key in counts[0]}


def run(command: str, *args) -> str:
    out = StringIO()
    call_command(command, *args, stdout=out, no_color=True)
    return out.getvalue()


@pytest.mark.django_db
class TestPurgeExpired:
    def test_deletes_expired_sessions_with_everything_they_hold(self):
        """Expired sessions go with their snapshots, history, operations, participants and connections."""
        old = [populate(expired_hours_ago=1), populate(expired_hours_ago=30)]
        live = populate()
        expected = total(*old)
        live_rows = rows(live.id)
        assert all(expected[key] > 0 for key in expected)

        report = sessions_purge_expired()

        assert report == PurgeReport(**expected)
        for session in old:
            assert set(rows(session.id).values()) == {0}
        assert rows(live.id) == live_rows

    def test_dry_run_deletes_nothing(self):
        """A dry run counts what it would delete and deletes nothing."""
        old = [populate(expired_hours_ago=2), populate(expired_hours_ago=3)]
        populate()
        before = all_rows()

        report = sessions_purge_expired(dry_run=True)

        assert report == PurgeReport(**total(*old), dry_run=True)
        assert all_rows() == before

    def test_older_than_is_respected(self):
        """Only sessions expired at least `older_than_hours` ago are deleted."""
        recent = populate(expired_hours_ago=1)
        old = populate(expired_hours_ago=48)
        recent_rows = rows(recent.id)

        report = sessions_purge_expired(older_than_hours=24)

        assert report.sessions == 1
        assert rows(old.id)["sessions"] == 0
        assert rows(recent.id) == recent_rows

    def test_small_batches_still_delete_everything(self):
        """With a batch of one session per transaction, every expired session is still deleted."""
        old = [populate(expired_hours_ago=h) for h in (1, 2, 3)]
        expected = total(*old)

        report = sessions_purge_expired(batch_size=1)

        assert report == PurgeReport(**expected)
        assert not InterviewSession.objects.exists()

    def test_nothing_expired_deletes_nothing(self):
        """With only live sessions, a purge reports nothing and leaves them alone."""
        populate()
        before = all_rows()
        report = sessions_purge_expired()
        assert report == PurgeReport()
        assert report.describe() == "No expired sessions to delete."
        assert all_rows() == before

    @pytest.mark.parametrize("kwargs", [{"older_than_hours": -1}, {"batch_size": 0}])
    def test_bad_arguments_are_refused(self, kwargs):
        """A negative age or an empty batch is a ValueError."""
        with pytest.raises(ValueError, match="must"):
            sessions_purge_expired(**kwargs)


@pytest.mark.django_db
class TestPurgeCommand:
    def test_prints_what_it_deleted(self):
        """The command deletes the expired sessions and says how much of each kind went."""
        old = [populate(expired_hours_ago=1), populate(expired_hours_ago=5)]
        live = populate()
        c = total(*old)

        out = run("purge_expired_sessions")

        assert out.strip() == (
            f"Deleted 2 expired sessions ({c['snapshots']} snapshots, {c['history_entries']} history entries, "
            f"{c['operations']} operations, {c['participants']} participants, {c['connections']} connections)."
        )
        assert InterviewSession.objects.get() == live

    def test_dry_run_says_what_it_would_delete(self):
        """--dry-run prints "Would delete ..." and deletes nothing."""
        populate(expired_hours_ago=1)
        before = all_rows()
        out = run("purge_expired_sessions", "--dry-run")
        assert out.startswith("Would delete 1 expired session (1 snapshot, ")
        assert all_rows() == before

    def test_older_than_option(self):
        """--older-than HOURS keeps sessions that expired more recently."""
        recent = populate(expired_hours_ago=1)
        populate(expired_hours_ago=10)
        out = run("purge_expired_sessions", "--older-than", "2.5")
        assert out.startswith("Deleted 1 expired session ")
        assert list(InterviewSession.objects.all()) == [recent]

    def test_nothing_to_do(self):
        """With nothing expired it says so."""
        populate()
        assert run("purge_expired_sessions").strip() == "No expired sessions to delete."

    @pytest.mark.parametrize("value", ["-1", "soon", "nan"])
    def test_bad_older_than_is_a_command_error(self, value):
        """A negative or non-numeric --older-than is refused before anything is deleted."""
        populate(expired_hours_ago=1)
        with pytest.raises(CommandError, match="older-than"):
            run("purge_expired_sessions", "--older-than", value)
        assert InterviewSession.objects.count() == 1


@pytest.mark.django_db
class TestSessionEnd:
    def test_ended_session_answers_404(self, api):
        """After session_end the session's endpoints answer 404 SESSION_NOT_FOUND."""
        session = populate()
        assert api.get(f"/api/sessions/{session.id}").status_code == 200
        session_end(session_id=session.id)
        for path in ("", "/code", "/history"):
            response = api.get(f"/api/sessions/{session.id}{path}")
            assert response.status_code == 404
            assert response.json()["error"] == "SESSION_NOT_FOUND"
        assert rows(session.id)["snapshots"] == 1  # ended, not deleted

    @pytest.mark.parametrize("which", ["expired", "unknown", "malformed"])
    def test_ending_a_session_that_is_not_live_raises(self, which):
        """Ending an expired, unknown or malformed id raises SessionNotFound."""
        session_id = {
            "expired": lambda: populate(expired_hours_ago=1).id,
            "unknown": uuid.uuid4,
            "malformed": lambda: "not-a-uuid",
        }[which]()
        with pytest.raises(SessionNotFound):
            session_end(session_id=session_id)


@pytest.mark.django_db(transaction=True)
class TestSessionEndOverWebSocket:
    async def test_connected_client_gets_session_not_found_and_4404(self, new_session, open_socket, client):
        """A client connected when its session is ended gets SESSION_NOT_FOUND, then close code 4404."""
        session = await new_session()
        ws = await open_socket(session.id)
        await ws.send_json_to({"type": "join", "userId": "u1", "data": {"name": "U1"}})

        await database_sync_to_async(session_end)(session_id=session.id)

        while True:
            message = await ws.receive_json_from(timeout=2)
            if message["type"] == "error":
                break
        assert message["data"]["code"] == "SESSION_NOT_FOUND"
        assert (await ws.receive_output(timeout=2))["code"] == 4404
        response = await database_sync_to_async(client.get)(f"/api/sessions/{session.id}")
        assert response.status_code == 404


@pytest.mark.django_db
class TestExport:
    def test_export_holds_everything_in_json_ready_form(self):
        """The export has the format marker, metadata, code, snapshots, history, operations and participants."""
        session = populate()
        data = session_export(session_id=session.id)

        assert json.loads(json.dumps(data)) == data
        assert data["format"] == EXPORT_FORMAT
        assert data["formatVersion"] == 1
        meta = data["session"]
        assert meta["id"] == str(session.id)
        assert meta["title"] == "Two sum"
        assert meta["language"] == "javascript"
        assert meta["version"] == session.version == 3
        assert meta["code"] == session.code == "# 🎉\nprint(2)\n"
        for key in ("createdAt", "codeModifiedAt", "expiresAt"):
            assert meta[key].endswith("Z")
        assert meta["expiresAt"] == session.expires_at.isoformat().replace("+00:00", "Z")

        snapshot = CodeSnapshot.objects.get(session=session)
        assert data["snapshots"] == [
            {
                "id": str(snapshot.id),
                "code": "# 🎉\nprint(2)\n",
                "language": "python",
                "version": 3,
                "createdAt": snapshot.created_at.isoformat().replace("+00:00", "Z"),
            }
        ]
        assert [h["changeType"] for h in data["history"]] == ["edit", "edit", "snapshot", "language-change"]
        assert set(data["history"][0]) == {"timestamp", "userId", "changeType", "description", "codeSnapshot", "count"}
        assert data["history"][2]["codeSnapshot"] == "# 🎉\nprint(2)\n"
        assert all(h["count"] == 1 for h in data["history"])
        assert [(op["version"], op["userId"], op["seq"]) for op in data["operations"]] == [
            (1, "alice", None),
            (2, "bob", 1),
            (3, "alice", None),
        ]
        assert data["operations"][1]["changes"] == [{"from": 0, "to": 0, "insert": "# 🎉\n"}]
        assert all(op["createdAt"].endswith("Z") for op in data["operations"])
        assert [(p["userId"], p["name"], p["cursorPosition"]) for p in data["participants"]] == [
            ("alice", "Alice", {"line": 2, "column": 3}),
            ("bob", "Bob", None),
        ]
        assert set(data["participants"][0]) == {"userId", "name", "joinedAt", "cursorPosition"}

    def test_export_leaves_out_secrets_and_presence(self):
        """Neither the owner token nor its hash, nor live connections, are part of an export."""
        session = session_make(language="python")
        stored = InterviewSession.objects.get(pk=session.id)
        assert stored.owner_token_hash
        text = json.dumps(session_export(session_id=session.id))
        assert session.owner_token not in text
        assert stored.owner_token_hash not in text
        assert "token" not in text.lower()
        assert "channel" not in text
        assert "serverId" not in text

    def test_expired_session_still_exports(self):
        """A session that expired but is not purged yet can still be exported."""
        session = populate(expired_hours_ago=1)
        assert session_export(session_id=session.id)["session"]["id"] == str(session.id)

    @pytest.mark.parametrize("session_id", [uuid.uuid4(), "not-a-uuid"])
    def test_unknown_session_raises(self, session_id):
        """Exporting an unknown or malformed id raises SessionNotFound."""
        with pytest.raises(SessionNotFound):
            session_export(session_id=session_id)


def _without_session(data: dict) -> None:
    InterviewSession.objects.filter(pk=data["session"]["id"]).delete()


def _mutate(path: str, value):
    """A copy-and-change of an export: `path` like "session.language" or "operations.0.changes"."""

    def change(data: dict) -> dict:
        data = copy.deepcopy(data)
        *parents, last = path.split(".")
        target = data
        for key in parents:
            target = target[int(key)] if isinstance(target, list) else target[key]
        if value is _DELETE:
            del target[last]
        elif isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
        return data

    return change


_DELETE = object()

GARBAGE = {
    "not an object": lambda data: [data],
    "no format": _mutate("format", _DELETE),
    "other format": _mutate("format", "something-else"),
    "future version": _mutate("formatVersion", 2),
    "bad id": _mutate("session.id", "not-a-uuid"),
    "bad language": _mutate("session.language", "cobol"),
    "version as string": _mutate("session.version", "3"),
    "negative version": _mutate("session.version", -1),
    "naive timestamp": _mutate("session.createdAt", "2024-01-01T10:00:00"),
    "not a timestamp": _mutate("session.expiresAt", "tomorrow"),
    "code missing": _mutate("session.code", _DELETE),
    "title too long": _mutate("session.title", "x" * 201),
    "lone surrogate": _mutate("session.code", "\ud800"),
    "snapshots not a list": _mutate("snapshots", {}),
    "snapshot bad id": _mutate("snapshots.0.id", 12),
    "history bad type": _mutate("history.0.changeType", "explosion"),
    "history zero count": _mutate("history.0.count", 0),
    "operation bad changes": _mutate("operations.0.changes", [{"from": 5, "to": 1, "insert": ""}]),
    "operation changes not a list": _mutate("operations.0.changes", "abc"),
    "operation beyond version": _mutate("operations.0.version", 99),
    "operation duplicate version": _mutate("operations.1.version", 1),
    "participant not an object": _mutate("participants.0", "alice"),
    "participant bad cursor": _mutate("participants.0.cursorPosition", [1, 2]),
    "participant duplicate user": _mutate("participants.1.userId", "alice"),
    "participant name too long": _mutate("participants.0.name", "n" * 101),
}


@pytest.mark.django_db
class TestImport:
    def test_round_trip_gives_the_same_export(self):
        """Export, delete, import: the session exports exactly as before, with the same ids and timestamps."""
        session = populate()
        exported = session_export(session_id=session.id)
        InterviewSession.objects.filter(pk=session.id).delete()

        imported = session_import(data=json.loads(json.dumps(exported)))

        assert imported.id == session.id
        assert session_export(session_id=session.id) == exported
        assert InterviewSession.objects.get(pk=session.id).created_at == session.created_at

    def test_imported_session_is_served(self, api):
        """An imported live session answers over REST with its code and version."""
        session = populate()
        exported = session_export(session_id=session.id)
        InterviewSession.objects.filter(pk=session.id).delete()
        session_import(data=exported)
        body = api.get(f"/api/sessions/{session.id}/code").json()
        assert (body["code"], body["version"], body["language"]) == (session.code, 3, "javascript")
        assert len(api.get(f"/api/sessions/{session.id}/history").json()["history"]) == 4

    def test_existing_session_is_an_error_without_replace(self):
        """Importing over an existing session fails and changes nothing."""
        session = populate()
        exported = session_export(session_id=session.id)
        snapshot_make(session.id, "changed")
        after_change = session_export(session_id=session.id)
        with pytest.raises(SessionImportError, match="exists already"):
            session_import(data=exported)
        assert session_export(session_id=session.id) == after_change

    def test_replace_overwrites_the_existing_session(self):
        """With replace the existing session is deleted first, so the import wins entirely."""
        session = populate()
        exported = session_export(session_id=session.id)
        snapshot_make(session.id, "changed")
        participant_make(session, "carol", "Carol")

        owner_token_hash = InterviewSession.objects.get(pk=session.id).owner_token_hash

        session_import(data=exported, replace=True)

        assert session_export(session_id=session.id) == exported
        assert rows(session.id)["connections"] == 0
        assert InterviewSession.objects.get(pk=session.id).owner_token_hash == owner_token_hash

    def test_new_import_has_no_owner_token(self):
        """A session imported fresh has no owner token hash (only staff can delete it)."""
        session = populate()
        exported = session_export(session_id=session.id)
        InterviewSession.objects.filter(pk=session.id).delete()
        assert session_import(data=exported).owner_token_hash == ""

    @pytest.mark.parametrize("damage", list(GARBAGE.values()), ids=list(GARBAGE))
    def test_garbage_fails_and_writes_nothing(self, damage):
        """Malformed exports raise SessionImportError and write nothing."""
        session = populate()
        exported = session_export(session_id=session.id)
        _without_session(exported)
        before = all_rows()
        with pytest.raises(SessionImportError):
            session_import(data=damage(exported))
        assert all_rows() == before

    def test_database_refusal_rolls_everything_back(self):
        """A snapshot id another session holds fails the import as a whole."""
        other = populate(title="Other")
        session = populate()
        exported = session_export(session_id=session.id)
        _without_session(exported)
        exported["snapshots"][0]["id"] = str(CodeSnapshot.objects.get(session=other).id)
        before = all_rows()
        with pytest.raises(SessionImportError, match="refused"):
            session_import(data=exported)
        assert all_rows() == before

    def test_failed_replace_keeps_the_existing_session(self):
        """When a replacing import fails in the database, the session it would replace is kept."""
        other = populate(title="Other")
        session = populate()
        before_export = session_export(session_id=session.id)
        broken = copy.deepcopy(before_export)
        broken["snapshots"][0]["id"] = str(CodeSnapshot.objects.get(session=other).id)
        with pytest.raises(SessionImportError):
            session_import(data=broken, replace=True)
        assert session_export(session_id=session.id) == before_export


@pytest.mark.django_db
class TestExportImportCommands:
    def test_export_to_stdout_is_the_export(self):
        """export_session ID prints the export as JSON."""
        session = populate()
        assert json.loads(run("export_session", str(session.id))) == session_export(session_id=session.id)

    def test_export_to_a_file_is_utf8_with_indent_2(self, tmp_path):
        """--output writes UTF-8 JSON indented by two spaces and says where it went."""
        session = populate()
        target = tmp_path / "export.json"
        out = run("export_session", str(session.id), "--output", str(target))
        assert str(target) in out
        text = target.read_bytes().decode("utf-8")
        assert '\n  "format": "interview-session"' in text
        assert "🎉" in text  # not \u-escaped
        assert json.loads(text) == session_export(session_id=session.id)

    @pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid"])
    def test_export_of_unknown_id_is_a_command_error(self, session_id):
        """An unknown or malformed id is a CommandError naming the id."""
        with pytest.raises(CommandError, match="No session with id"):
            run("export_session", session_id)

    def test_export_to_an_unwritable_path_is_a_command_error(self, tmp_path):
        """A file that cannot be written is a CommandError."""
        session = populate()
        with pytest.raises(CommandError, match="Cannot write"):
            run("export_session", str(session.id), "--output", str(tmp_path / "missing" / "x.json"))

    def test_import_prints_the_id_and_round_trips(self, tmp_path):
        """import_session FILE recreates the session and prints its id."""
        session = populate()
        target = tmp_path / "export.json"
        run("export_session", str(session.id), "--output", str(target))
        exported = session_export(session_id=session.id)
        InterviewSession.objects.filter(pk=session.id).delete()

        assert run("import_session", str(target)).strip() == str(session.id)
        assert session_export(session_id=session.id) == exported

    def test_import_with_replace(self, tmp_path):
        """--replace overwrites an existing session; without it the import is a CommandError."""
        session = populate()
        target = tmp_path / "export.json"
        run("export_session", str(session.id), "--output", str(target))
        exported = session_export(session_id=session.id)
        snapshot_make(session.id, "changed")

        with pytest.raises(CommandError, match="exists already"):
            run("import_session", str(target))
        assert run("import_session", str(target), "--replace").strip() == str(session.id)
        assert session_export(session_id=session.id) == exported

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            (None, "Cannot read"),
            (b"{not json", "not valid JSON"),
            (b"\xff\xfe\x00garbage", "not UTF-8"),
            (b'{"format": "something-else"}', "Not a session export"),
            (b"[]", "must be a JSON object"),
        ],
        ids=["missing", "not-json", "not-utf8", "wrong-format", "not-an-object"],
    )
    def test_bad_files_are_command_errors_and_write_nothing(self, tmp_path, content, message):
        """Missing files, bad JSON, bad encodings and wrong formats are CommandErrors; nothing is written."""
        populate()
        target = tmp_path / "input.json"
        if content is not None:
            target.write_bytes(content)
        before = all_rows()
        with pytest.raises(CommandError, match=message):
            run("import_session", str(target))
        assert all_rows() == before

    def test_manage_py_exits_1_without_traceback(self, tmp_path):
        """From the shell, an unknown id exits with status 1 and a one-line error, no traceback."""
        env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}"}
        result = subprocess.run(
            [sys.executable, str(Path(settings.BASE_DIR) / "manage.py"), "export_session", "not-a-uuid"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert result.returncode == 1
        assert "CommandError: No session with id 'not-a-uuid'." in result.stderr
        assert "Traceback" not in result.stderr
        assert result.stdout == ""


def admin_action(staff_client, action: str, sessions, **kwargs):
    return staff_client.post(
        CHANGELIST,
        {"action": action, ACTION_CHECKBOX_NAME: [str(s.id) for s in sessions], "index": 0},
        **kwargs,
    )


def page_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


@pytest.mark.django_db
class TestAdminActions:
    def test_export_downloads_one_json_file_of_every_selected_session(self, staff_client):
        """ "Export selected sessions" downloads a JSON list of the selected sessions' exports."""
        a, b = populate(title="A"), populate(title="B", expired_hours_ago=1)
        populate(title="not selected")
        response = admin_action(staff_client, "export_sessions", [a, b])
        assert response.status_code == 200
        assert response["Content-Type"].startswith("application/json")
        assert response["Content-Disposition"].startswith('attachment; filename="sessions-')
        body = json.loads(response.content.decode("utf-8"))
        assert body == [session_export(session_id=a.id), session_export(session_id=b.id)]

    def test_purge_deletes_every_expired_session_whatever_is_selected(self, staff_client):
        """ "Purge expired sessions" deletes all expired sessions, keeps live ones, and reports the counts."""
        live = populate(title="live")
        old = [populate(expired_hours_ago=1), populate(expired_hours_ago=50)]
        expected = PurgeReport(**total(*old)).describe()

        response = admin_action(staff_client, "purge_expired_sessions", [live], follow=True)

        assert response.status_code == 200
        assert expected in page_messages(response)
        assert list(InterviewSession.objects.all()) == [live]

    def test_end_ends_the_selected_live_sessions(self, staff_client, api):
        """ "End selected live sessions" expires them now and reports how many were ended."""
        a, b, untouched = populate(title="A"), populate(title="B"), populate(title="C")
        expired = populate(title="old", expired_hours_ago=1)

        response = admin_action(staff_client, "end_sessions", [a, b, expired], follow=True)

        assert "Ended 2 live sessions. 1 was not live." in page_messages(response)
        for session in (a, b):
            assert api.get(f"/api/sessions/{session.id}").status_code == 404
        assert api.get(f"/api/sessions/{untouched.id}").status_code == 200
        assert InterviewSession.objects.count() == 4

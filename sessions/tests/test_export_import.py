"""A session exported and imported: the format, what it leaves out, garbage refused, and the commands."""

import copy
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError

from sessions.exceptions import SessionNotFound
from sessions.export_format import EXPORT_FORMAT
from sessions.lifecycle import SessionImportError, session_import
from sessions.models import STARTER_CODE, CodeSnapshot, InterviewSession, Participant, Role
from sessions.selectors import session_export
from sessions.tests.factories import participant_make, populate, session_make, snapshot_make
from sessions.tests.helpers import all_rows, rows, run


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
        assert set(data["history"][0]) == {
            "timestamp",
            "userId",
            "changeType",
            "description",
            "codeSnapshot",
            "count",
            "version",
            "details",
            "stdout",
            "stderr",
        }
        assert data["history"][2]["codeSnapshot"] == "# 🎉\nprint(2)\n"
        assert (data["history"][2]["version"], data["history"][2]["details"]["snapshotId"]) == (3, str(snapshot.id))
        assert data["history"][3]["details"] == {"from": "python", "to": "javascript"}
        # The starter text, checkpointed by the first change.
        assert [c["version"] for c in data["checkpoints"]] == [0]
        assert data["checkpoints"][0]["code"] == STARTER_CODE["python"]
        assert "notes" not in data
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
        assert set(data["participants"][0]) == {"userId", "name", "joinedAt", "cursorPosition", "role"}
        assert [p["role"] for p in data["participants"]] == ["candidate", "candidate"]

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
    "participant unknown role": _mutate("participants.0.role", "admin"),
    "participant null role": _mutate("participants.0.role", None),
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

    def test_participants_keep_their_role(self):
        """An interviewer exports as `role: interviewer` and is imported as one."""
        session = populate()
        Participant.objects.filter(session=session, user_id="alice").update(role=Role.INTERVIEWER)
        exported = session_export(session_id=session.id)
        assert [(p["userId"], p["role"]) for p in exported["participants"]] == [
            ("alice", "interviewer"),
            ("bob", "candidate"),
        ]
        _without_session(exported)
        session_import(data=json.loads(json.dumps(exported)))
        assert session_export(session_id=session.id) == exported
        roles = dict(Participant.objects.filter(session_id=session.id).values_list("user_id", "role"))
        assert roles == {"alice": "interviewer", "bob": "candidate"}

    def test_an_export_without_roles_imports_candidates(self):
        """`role` is optional on import (exports older than roles have none): its participants are candidates."""
        session = populate()
        Participant.objects.filter(session=session).update(role=Role.INTERVIEWER)
        exported = session_export(session_id=session.id)
        for participant in exported["participants"]:
            del participant["role"]
        _without_session(exported)
        session_import(data=exported)
        roles = set(Participant.objects.filter(session_id=session.id).values_list("role", flat=True))
        assert roles == {"candidate"}

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

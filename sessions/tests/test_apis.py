"""The REST contract of sessions, code, participants and history."""

import json
import os
import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from interview.testing import assert_error
from sessions.models import (
    ChangeType,
    CodeSnapshot,
    HistoryEntry,
    InterviewSession,
    Role,
)
from sessions.tests.factories import participant_make, session_expire

pytestmark = pytest.mark.django_db


class TestSessionCreate:
    def test_defaults_give_javascript_for_24_hours(self, api):
        """An empty body makes a JavaScript session expiring in 24 h with a share URL."""
        response = api.post("/api/sessions", content_type="application/json")
        assert response.status_code == 201
        body = response.json()
        assert set(body) == {
            "sessionId",
            "title",
            "language",
            "createdAt",
            "expiresAt",
            "activeParticipants",
            "url",
            "ownerToken",
        }
        assert len(body["ownerToken"]) >= 32
        assert body["language"] == "javascript"
        assert body["title"] is None
        assert body["activeParticipants"] == 0
        assert body["url"] == f"http://localhost:3001/interview/{body['sessionId']}"
        assert uuid.UUID(body["sessionId"]).version == 4
        created = timezone.datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00"))
        expires = timezone.datetime.fromisoformat(body["expiresAt"].replace("Z", "+00:00"))
        assert timedelta(hours=23, minutes=59) < expires - created <= timedelta(hours=24, seconds=1)
        assert body["createdAt"].endswith(("Z", "+00:00"))

    def test_options_are_stored(self, api):
        """Language, title and expiresIn are taken from the body."""
        body = api.post("/api/sessions", {"language": "python", "title": "Two sum", "expiresIn": 2}).json()
        session = InterviewSession.objects.get(pk=body["sessionId"])
        assert (session.language, session.title) == ("python", "Two sum")
        assert timedelta(hours=1, minutes=59) < session.expires_at - session.created_at <= timedelta(hours=2)

    @pytest.mark.parametrize(
        ("language", "starter"),
        [("python", "# "), ("javascript", "// "), ("java", "// "), ("cpp", "// ")],
    )
    def test_starter_code_is_a_comment_in_the_language(self, api, language, starter):
        """A new session's code is a comment in its language's own syntax."""
        sid = api.post("/api/sessions", {"language": language}).json()["sessionId"]
        code = api.get(f"/api/sessions/{sid}/code").json()["code"]
        assert code.startswith(starter)

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"language": "ruby"}, "language"),
            ({"expiresIn": 0}, "expiresIn"),
            ({"expiresIn": 169}, "expiresIn"),
            ({"expiresIn": "12"}, "expiresIn"),
            ({"expiresIn": 1.5}, "expiresIn"),
            ({"title": "x" * 201}, "title"),
            ({"title": 5}, "title"),
        ],
    )
    def test_invalid_fields_are_400_with_fields(self, api, body, field):
        """Bad values answer 400 VALIDATION_ERROR naming the field, and create nothing."""
        response = api.post("/api/sessions", body)
        error = assert_error(response, 400, "VALIDATION_ERROR")
        assert field in error["fields"]
        assert InterviewSession.objects.count() == 0

    def test_malformed_json_is_400(self, api):
        """A body that is not JSON answers 400 MALFORMED_JSON."""
        response = api.post("/api/sessions", data="{nope", content_type="application/json")
        assert_error(response, 400, "MALFORMED_JSON")
        assert InterviewSession.objects.count() == 0

    def test_deeply_nested_json_is_400_not_500(self, api):
        """JSON nested beyond the parser's depth is a parse error."""
        response = api.post("/api/sessions", data="[" * 100_000, content_type="application/json")
        assert_error(response, 400, "MALFORMED_JSON")

    def test_body_that_is_not_an_object_is_400(self, api):
        """A JSON array as the body is a validation error, not a crash."""
        response = api.post("/api/sessions", data="[1, 2]", content_type="application/json")
        assert_error(response, 400, "VALIDATION_ERROR")

    def test_body_over_the_limit_is_413(self, api, settings):
        """A body over MAX_REQUEST_BODY_BYTES answers 413 and creates nothing."""
        settings.MAX_REQUEST_BODY_BYTES = 1000
        response = api.post("/api/sessions", {"title": "x" * 2000})
        assert_error(response, 413, "PAYLOAD_TOO_LARGE")
        assert InterviewSession.objects.count() == 0

    def test_form_encoding_is_415(self, api):
        """Only JSON bodies are accepted."""
        response = api.post("/api/sessions", data="a=b", content_type="application/x-www-form-urlencoded")
        assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")

    def test_there_is_no_list_of_sessions(self, api, make_session):
        """GET /api/sessions does not list sessions."""
        make_session()
        assert_error(api.get("/api/sessions"), 405, "METHOD_NOT_ALLOWED")


class TestSessionRetrieve:
    def test_get_returns_the_session(self, api, make_session):
        """GET answers the same session shape as create."""
        created = make_session(title="T")
        body = api.get(f"/api/sessions/{created['sessionId']}").json()
        created.pop("ownerToken")
        assert body == created

    def test_trailing_slash_is_accepted(self, api, make_session):
        """The paths work with a trailing slash too."""
        sid = make_session()["sessionId"]
        assert api.get(f"/api/sessions/{sid}/").status_code == 200

    @pytest.mark.parametrize("sid", [str(uuid.uuid4()), "not-a-uuid", "1" * 300])
    def test_unknown_session_is_404(self, api, sid):
        """Unknown or malformed ids answer 404 SESSION_NOT_FOUND."""
        assert_error(api.get(f"/api/sessions/{sid}"), 404, "SESSION_NOT_FOUND")

    def test_expired_session_is_404_everywhere(self, api, make_session):
        """An expired session is gone for every endpoint."""
        sid = make_session()["sessionId"]
        session_expire(sid, ago=timedelta(seconds=1))
        for path in ["", "/code", "/participants", "/history"]:
            assert_error(api.get(f"/api/sessions/{sid}{path}"), 404, "SESSION_NOT_FOUND")
        assert_error(api.patch(f"/api/sessions/{sid}", {"title": "x"}), 404, "SESSION_NOT_FOUND")
        assert_error(api.post(f"/api/sessions/{sid}/code", {"code": "x"}), 404, "SESSION_NOT_FOUND")
        assert_error(api.delete(f"/api/sessions/{sid}"), 404, "SESSION_NOT_FOUND")

    def test_active_participants_counts_connected_users(self, api, make_session):
        """activeParticipants counts distinct joined users with a live connection, not stale ones."""
        sid = make_session()["sessionId"]
        session = InterviewSession.objects.get(pk=sid)
        participant_make(session, "a", "A", live=2)
        participant_make(session, "b", "B", live=1, stale=1)
        participant_make(session, "c", "C")
        participant_make(session, "d", "D", stale=2)
        assert api.get(f"/api/sessions/{sid}").json()["activeParticipants"] == 2


class TestSessionUpdate:
    def test_language_change_is_recorded(self, api, make_session):
        """PATCH language changes it and records a language-change history entry."""
        sid = make_session()["sessionId"]
        body = api.patch(f"/api/sessions/{sid}", {"language": "python"}).json()
        assert body["language"] == "python"
        entry = HistoryEntry.objects.get(session_id=sid)
        assert entry.change_type == ChangeType.LANGUAGE_CHANGE
        assert "python" in entry.description

    def test_same_language_records_nothing(self, api, make_session):
        """Setting the language it already has adds no history."""
        sid = make_session(language="java")["sessionId"]
        api.patch(f"/api/sessions/{sid}", {"language": "java"})
        assert not HistoryEntry.objects.filter(session_id=sid).exists()

    def test_title_can_be_set_and_cleared(self, api, make_session):
        """PATCH title sets it; null clears it; omitting it keeps it."""
        sid = make_session(title="a")["sessionId"]
        assert api.patch(f"/api/sessions/{sid}", {"title": "b"}).json()["title"] == "b"
        assert api.patch(f"/api/sessions/{sid}", {}).json()["title"] == "b"
        assert api.patch(f"/api/sessions/{sid}", {"title": None}).json()["title"] is None

    def test_invalid_language_changes_nothing(self, api, make_session):
        """A bad language is 400 and the session keeps its language and title."""
        sid = make_session(title="keep")["sessionId"]
        assert_error(api.patch(f"/api/sessions/{sid}", {"language": "cobol", "title": "new"}), 400, "VALIDATION_ERROR")
        session = InterviewSession.objects.get(pk=sid)
        assert (session.language, session.title) == ("javascript", "keep")

    def test_put_is_not_allowed(self, api, make_session):
        """Only PATCH updates a session."""
        sid = make_session()["sessionId"]
        assert_error(api.put(f"/api/sessions/{sid}", {"language": "python"}), 405, "METHOD_NOT_ALLOWED")


class TestSessionDelete:
    def test_delete_removes_the_session_and_its_data(self, api, make_session):
        """DELETE with the owner token answers 204 and the session, its snapshots and history are gone."""
        created = make_session()
        sid = created["sessionId"]
        api.post(f"/api/sessions/{sid}/code", {"code": "x"})
        response = api.delete(f"/api/sessions/{sid}", HTTP_AUTHORIZATION=f"Bearer {created['ownerToken']}")
        assert response.status_code == 204
        assert not InterviewSession.objects.filter(pk=sid).exists()
        assert not CodeSnapshot.objects.exists()
        assert not HistoryEntry.objects.exists()
        assert_error(api.get(f"/api/sessions/{sid}"), 404, "SESSION_NOT_FOUND")

    def test_delete_without_token_is_401_and_keeps_the_session(self, api, make_session):
        """No token: 401 UNAUTHORIZED, nothing deleted."""
        sid = make_session()["sessionId"]
        assert_error(api.delete(f"/api/sessions/{sid}"), 401, "UNAUTHORIZED")
        assert InterviewSession.objects.filter(pk=sid).exists()

    def test_delete_with_another_sessions_token_is_403(self, api, make_session):
        """A token that is not this session's: 403 FORBIDDEN, nothing deleted."""
        sid = make_session()["sessionId"]
        other = make_session()["ownerToken"]
        assert_error(api.delete(f"/api/sessions/{sid}", HTTP_AUTHORIZATION=f"Bearer {other}"), 403, "FORBIDDEN")
        assert InterviewSession.objects.filter(pk=sid).exists()

    def test_staff_user_may_delete(self, api, make_session, admin_user):
        """A logged-in staff user deletes without the token."""
        sid = make_session()["sessionId"]
        api.force_login(admin_user)
        assert api.delete(f"/api/sessions/{sid}").status_code == 204

    def test_token_is_not_stored_or_exposed(self, api, make_session):
        """Only a hash is stored; no read endpoint shows the token or its hash."""
        created = make_session()
        session = InterviewSession.objects.get(pk=created["sessionId"])
        assert created["ownerToken"] not in session.owner_token_hash
        assert len(session.owner_token_hash) == 64
        for path in ["", "/code", "/participants", "/history"]:
            text = api.get(f"/api/sessions/{created['sessionId']}{path}").content.decode()
            assert created["ownerToken"] not in text
            assert session.owner_token_hash not in text


class TestRateLimits:
    def test_session_creation_is_limited_per_address(self, api, settings):
        """Past RATE_LIMITS['session_create'], creation answers 429 with Retry-After in the error shape."""
        settings.RATE_LIMITS = {**settings.RATE_LIMITS, "session_create": "2/minute"}
        assert api.post("/api/sessions", {}).status_code == 201
        assert api.post("/api/sessions", {}).status_code == 201
        response = api.post("/api/sessions", {})
        assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
        assert int(response["Retry-After"]) >= 1
        assert InterviewSession.objects.count() == 2

    def test_code_saves_are_limited_but_reads_are_not(self, api, make_session, settings):
        """code_save limits POST code; GET code is not counted."""
        sid = make_session()["sessionId"]
        settings.RATE_LIMITS = {**settings.RATE_LIMITS, "code_save": "1/minute"}
        assert api.post(f"/api/sessions/{sid}/code", {"code": "a"}).status_code == 200
        assert_error(api.post(f"/api/sessions/{sid}/code", {"code": "b"}), 429, "RATE_LIMIT_EXCEEDED")
        for _ in range(3):
            assert api.get(f"/api/sessions/{sid}/code").json()["code"] == "a"

    def test_limits_are_per_client_address(self, api, settings):
        """Another address has its own budget."""
        settings.RATE_LIMITS = {**settings.RATE_LIMITS, "session_create": "1/minute"}
        assert api.post("/api/sessions", {}, REMOTE_ADDR="10.0.0.1").status_code == 201
        assert api.post("/api/sessions", {}, REMOTE_ADDR="10.0.0.1").status_code == 429
        assert api.post("/api/sessions", {}, REMOTE_ADDR="10.0.0.2").status_code == 201

    def test_limits_hold_per_process_while_the_shared_cache_is_down(self, api, settings):
        """With Redis unreachable, limited requests are neither failed (no 500) nor let through
        unlimited: they are counted in the process until Redis is back."""
        settings.CACHES = {
            "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:1/0"}
        }
        settings.RATE_LIMITS = {**settings.RATE_LIMITS, "session_create": "2/minute"}
        address = {"REMOTE_ADDR": "10.9.9.9"}
        assert api.post("/api/sessions", {}, **address).status_code == 201
        assert api.post("/api/sessions", {}, **address).status_code == 201
        assert_error(api.post("/api/sessions", {}, **address), 429, "RATE_LIMIT_EXCEEDED")
        assert InterviewSession.objects.count() == 2


class TestCode:
    def test_get_code_has_contract_fields_and_version(self, api, make_session):
        """GET code answers sessionId, code, language, lastModified and version."""
        sid = make_session(language="python")["sessionId"]
        body = api.get(f"/api/sessions/{sid}/code").json()
        assert set(body) == {"sessionId", "code", "language", "lastModified", "version"}
        assert body["sessionId"] == sid
        assert body["language"] == "python"
        assert body["version"] == 0

    def test_save_makes_snapshot_current_code_and_history(self, api, make_session):
        """Saving stores a snapshot, makes it current, and records a snapshot entry carrying the code."""
        sid = make_session()["sessionId"]
        before = api.get(f"/api/sessions/{sid}/code").json()
        code = "  const x = 1;\n\n"
        receipt = api.post(f"/api/sessions/{sid}/code", {"code": code}).json()
        assert {"sessionId", "snapshotId", "savedAt"} <= set(receipt)
        assert receipt["sessionId"] == sid
        snapshot = CodeSnapshot.objects.get(pk=receipt["snapshotId"])
        assert snapshot.code == code
        after = api.get(f"/api/sessions/{sid}/code").json()
        assert after["code"] == code  # whitespace kept exactly
        assert after["version"] == before["version"] + 1
        assert after["lastModified"] > before["lastModified"]
        history = api.get(f"/api/sessions/{sid}/history").json()["history"]
        assert history[-1]["changeType"] == "snapshot"
        assert history[-1]["codeSnapshot"] == code

    def test_save_with_language_changes_language(self, api, make_session):
        """A save with a language also switches the session's language."""
        sid = make_session()["sessionId"]
        api.post(f"/api/sessions/{sid}/code", {"code": "print(1)", "language": "python"})
        assert api.get(f"/api/sessions/{sid}/code").json()["language"] == "python"
        types = [h["changeType"] for h in api.get(f"/api/sessions/{sid}/history").json()["history"]]
        assert types == ["language-change", "snapshot"]

    def test_saving_the_same_code_keeps_the_version(self, api, make_session):
        """An unchanged save still makes a snapshot but no new version."""
        sid = make_session()["sessionId"]
        api.post(f"/api/sessions/{sid}/code", {"code": "a"})
        version = api.get(f"/api/sessions/{sid}/code").json()["version"]
        api.post(f"/api/sessions/{sid}/code", {"code": "a"})
        assert api.get(f"/api/sessions/{sid}/code").json()["version"] == version
        assert CodeSnapshot.objects.filter(session_id=sid).count() == 2

    def test_unicode_code_round_trips(self, api, make_session):
        """Astral characters and emoji are stored and returned unchanged."""
        sid = make_session()["sessionId"]
        code = "s = '😀𝄞 naïve'\n"
        api.post(f"/api/sessions/{sid}/code", {"code": code})
        assert api.get(f"/api/sessions/{sid}/code").json()["code"] == code

    @pytest.mark.parametrize("body", [{}, {"code": None}, {"code": 5}, {"code": "x", "language": "go"}])
    def test_invalid_save_changes_nothing(self, api, make_session, body):
        """A bad save answers 400 and leaves code, version and history as they were."""
        sid = make_session()["sessionId"]
        before = api.get(f"/api/sessions/{sid}/code").json()
        assert_error(api.post(f"/api/sessions/{sid}/code", body), 400, "VALIDATION_ERROR")
        assert api.get(f"/api/sessions/{sid}/code").json() == before
        assert not HistoryEntry.objects.filter(session_id=sid).exists()

    def test_code_over_the_limit_is_400(self, api, make_session, settings):
        """Code over MAX_CODE_BYTES is refused with a field error."""
        settings.MAX_CODE_BYTES = 100
        sid = make_session()["sessionId"]
        error = assert_error(api.post(f"/api/sessions/{sid}/code", {"code": "é" * 51}), 400, "VALIDATION_ERROR")
        assert "code" in error["fields"]


class TestParticipants:
    def test_lists_connected_participants(self, api, make_session):
        """Only participants with an open connection are listed, in the contract's shape."""
        sid = make_session()["sessionId"]
        session = InterviewSession.objects.get(pk=sid)
        participant_make(session, "u1", "Ann", live=1, cursor={"line": 1, "column": 2})
        participant_make(session, "u2", "Gone")
        participant_make(session, "u3", "Crashed", stale=1)
        body = api.get(f"/api/sessions/{sid}/participants").json()
        assert body["sessionId"] == sid
        assert len(body["participants"]) == 1
        participant = body["participants"][0]
        assert set(participant) == {"userId", "name", "joinedAt", "cursorPosition", "role"}
        assert participant["userId"] == "u1"
        assert participant["role"] == "candidate"
        assert participant["cursorPosition"] == {"line": 1, "column": 2}

    def test_participants_carry_their_role(self, api, make_session):
        """Each participant has `role`: interviewer or candidate, as stored."""
        sid = make_session()["sessionId"]
        session = InterviewSession.objects.get(pk=sid)
        participant_make(session, "cand", "Cara", live=1)
        participant_make(session, "ada", "Ada", live=1, role=Role.INTERVIEWER)
        body = api.get(f"/api/sessions/{sid}/participants").json()
        assert {p["userId"]: p["role"] for p in body["participants"]} == {"cand": "candidate", "ada": "interviewer"}

    def test_empty_session_has_no_participants(self, api, make_session):
        """A session nobody joined lists none."""
        sid = make_session()["sessionId"]
        assert api.get(f"/api/sessions/{sid}/participants").json()["participants"] == []


class TestHistory:
    def _fill(self, sid, n):
        session = InterviewSession.objects.get(pk=sid)
        HistoryEntry.objects.bulk_create(
            HistoryEntry(session=session, change_type=ChangeType.SNAPSHOT, description=f"e{i}") for i in range(n)
        )

    def test_newest_entries_oldest_first(self, api, make_session):
        """limit gives the newest N entries, oldest first."""
        sid = make_session()["sessionId"]
        self._fill(sid, 5)
        body = api.get(f"/api/sessions/{sid}/history?limit=3").json()
        assert [h["description"] for h in body["history"]] == ["e2", "e3", "e4"]
        assert set(body["history"][0]) >= {"timestamp", "userId", "changeType", "description", "codeSnapshot"}

    def test_default_limit_is_50(self, api, make_session):
        """Without limit, 50 entries come back."""
        sid = make_session()["sessionId"]
        self._fill(sid, 60)
        assert len(api.get(f"/api/sessions/{sid}/history").json()["history"]) == 50

    @pytest.mark.parametrize("limit", ["0", "101", "abc", "-1", "1.5", ""])
    def test_limit_out_of_range_is_400(self, api, make_session, limit):
        """limit must be an integer from 1 to 100."""
        sid = make_session()["sessionId"]
        error = assert_error(api.get(f"/api/sessions/{sid}/history?limit={limit}"), 400, "VALIDATION_ERROR")
        assert "limit" in error["fields"]


class TestErrorsAndMeta:
    def test_unknown_route_is_404_in_error_shape(self, api):
        """Unknown URLs answer JSON in the error shape."""
        assert_error(api.get("/api/nope"), 404, "NOT_FOUND")

    def test_index(self, api):
        """GET / names the service and its docs."""
        body = api.get("/").json()
        assert body["docs"] == "/docs"
        assert body["name"] and body["version"]

    @pytest.mark.parametrize("path", ["/health", "/api/health"])
    def test_health_checks_the_database(self, api, path):
        """Health answers healthy with the database check."""
        body = api.get(path).json()
        assert body["status"] == "healthy"
        assert body["checks"]["database"]["ok"] is True

    def test_health_says_which_process_answered_and_what_it_runs_on(self, api):
        """One process on the defaults: no worker number, the in-memory layer, the database's vendor."""
        body = api.get("/health").json()
        assert body["server"] == {
            "workers": 1,
            "worker": None,
            "pid": os.getpid(),
            "channelLayer": "in-memory",
            "database": connection.vendor,
        }
        assert body["checks"]["channelLayer"] == {"ok": True, "backend": "in-memory"}

    def test_health_is_unhealthy_while_redis_is_unreachable(self, api, settings):
        """A process that cannot reach the other processes' clients is taken out by the load balancer."""
        import interview.health

        settings.REDIS_URL = "redis://127.0.0.1:1/0"
        interview.health._redis_client = None
        try:
            response = api.get("/health")
        finally:
            interview.health._redis_client = None
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy"
        assert body["checks"]["channelLayer"]["ok"] is False
        assert body["server"]["channelLayer"] == "redis"

    def test_cors_preflight_allows_the_client_origin(self, api):
        """A preflight from the SPA's origin gets that exact origin and credentials."""
        response = api.options(
            "/api/sessions",
            HTTP_ORIGIN="http://localhost:3001",
            HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
            HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type",
        )
        assert response.status_code == 200
        assert response["Access-Control-Allow-Origin"] == "http://localhost:3001"
        assert response["Access-Control-Allow-Credentials"] == "true"

    def test_cors_refuses_other_origins(self, api):
        """Another origin gets no CORS grant."""
        response = api.get("/health", HTTP_ORIGIN="http://evil.example")
        assert "Access-Control-Allow-Origin" not in response

    def test_credentialed_request_echoes_origin(self, api, make_session):
        """A credentialed GET from the client's origin is granted with the exact origin."""
        sid = make_session()["sessionId"]
        response = api.get(f"/api/sessions/{sid}", HTTP_ORIGIN="http://localhost:3000")
        assert response["Access-Control-Allow-Origin"] == "http://localhost:3000"
        assert response["Access-Control-Allow-Credentials"] == "true"

    def test_error_body_is_json_for_every_error(self, api):
        """Errors are application/json, never HTML."""
        response = api.get("/api/sessions/x/history")
        assert response["Content-Type"].startswith("application/json")
        json.loads(response.content)

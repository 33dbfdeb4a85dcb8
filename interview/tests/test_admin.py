"""The Django admin: staff only, sessions searchable and filterable, code readable."""

import pytest
from django.apps import apps

from sessions.models import InterviewSession
from sessions.tests.factories import participant_make

pytestmark = pytest.mark.django_db


class TestAdmin:
    def test_anonymous_is_sent_to_login(self, client):
        """The admin needs a staff login."""
        response = client.get("/admin/interview_sessions/interviewsession/")
        assert response.status_code == 302
        assert "/admin/login/" in response["Location"]

    def test_sessions_are_searchable_by_id_and_title(self, staff_client, make_session):
        """Search finds a session by its full UUID and by its title."""
        a = make_session(title="Graph problem")
        b = make_session(title="Strings")
        by_id = staff_client.get("/admin/interview_sessions/interviewsession/", {"q": a["sessionId"]})
        assert a["sessionId"] in by_id.content.decode()
        assert b["sessionId"] not in by_id.content.decode()
        by_title = staff_client.get("/admin/interview_sessions/interviewsession/", {"q": "strings"})
        assert b["sessionId"] in by_title.content.decode()
        assert a["sessionId"] not in by_title.content.decode()

    def test_sessions_filter_by_language_and_expired(self, staff_client, make_session):
        """The list filters by language and by expired."""
        py = make_session(language="python")
        js = make_session(language="javascript")
        page = staff_client.get("/admin/interview_sessions/interviewsession/", {"language": "python"}).content.decode()
        assert py["sessionId"] in page and js["sessionId"] not in page
        page = staff_client.get("/admin/interview_sessions/interviewsession/", {"expired": "yes"}).content.decode()
        assert py["sessionId"] not in page

    def test_change_page_shows_code_snapshots_and_history(self, staff_client, api, make_session):
        """A session's page shows its code in a monospace block with snapshots and history inline."""
        sid = make_session()["sessionId"]
        api.post(f"/api/sessions/{sid}/code", {"code": "let <b>x</b> = 1;"})
        page = staff_client.get(f"/admin/interview_sessions/interviewsession/{sid}/change/").content.decode()
        assert "<pre" in page and "monospace" in page
        assert "let &lt;b&gt;x&lt;/b&gt; = 1;" in page
        assert "Code snapshots" in page and "History entries" in page

    @pytest.mark.parametrize("model", ["codesnapshot", "historyentry", "documentoperation", "participant"])
    def test_related_models_are_browsable(self, staff_client, api, make_session, model):
        """Snapshots, history, operations and participants have their own lists."""
        sid = make_session()["sessionId"]
        api.post(f"/api/sessions/{sid}/code", {"code": "x"})
        participant_make(InterviewSession.objects.get(pk=sid), "u1", "Ann", live=1)
        response = staff_client.get(f"/admin/interview_sessions/{model}/")
        assert response.status_code == 200
        stored = apps.get_model("interview_sessions", model).objects.count()
        assert stored >= 1
        assert response.context["cl"].result_count == stored

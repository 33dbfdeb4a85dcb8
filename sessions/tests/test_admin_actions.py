"""The admin's session actions: export, purge expired, end."""

import json

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME

from sessions.lifecycle import PurgeReport
from sessions.models import InterviewSession
from sessions.selectors import session_export
from sessions.tests.factories import populate
from sessions.tests.helpers import total

CHANGELIST = "/admin/interview_sessions/interviewsession/"


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

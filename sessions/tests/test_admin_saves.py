"""Saving a session in the admin goes through the services: recorded, announced, ended."""

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from sessions.models import ChangeType, HistoryEntry, InterviewSession
from sessions.services import session_create

pytestmark = pytest.mark.django_db


def _change_url(session) -> str:
    return f"/admin/interview_sessions/interviewsession/{session.id}/change/"


def admin_save(admin_client, session, on_commit, **changes):
    """Post the session's change form with `changes`; returns what was published after commit."""
    page = admin_client.get(_change_url(session))
    values = {"title": session.title or "", "language": session.language, "expires_at": session.expires_at}
    values.update(changes)
    expires = timezone.localtime(values.pop("expires_at"))
    data = {**values, "expires_at_0": expires.strftime("%Y-%m-%d"), "expires_at_1": expires.strftime("%H:%M:%S")}
    for inline in page.context["inline_admin_formsets"]:
        for field in inline.formset.management_form:
            data[field.html_name] = field.value()
    with mock.patch("sessions.events.publish") as publish, on_commit(execute=True):
        response = admin_client.post(_change_url(session), data)
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else response
    return [call.args for call in publish.call_args_list]


def _types(published) -> list[str]:
    return [event.get("type") for _sid, event in published]


class TestAdminSaves:
    def test_language_change_is_recorded_and_announced(self, admin_client, django_capture_on_commit_callbacks):
        """A language changed in the admin records a language-change entry and tells clients (language-changed)."""
        session = session_create(language="python")
        published = admin_save(admin_client, session, django_capture_on_commit_callbacks, language="java")
        assert InterviewSession.objects.get(pk=session.id).language == "java"
        entry = HistoryEntry.objects.get(session=session)
        assert (entry.change_type, entry.description) == (
            ChangeType.LANGUAGE_CHANGE,
            "Changed language from python to java",
        )
        assert _types(published) == ["session.message"]
        assert '"type":"language-changed"' in published[0][1]["text"]

    def test_title_change_is_recorded(self, admin_client, django_capture_on_commit_callbacks):
        """A title changed in the admin is recorded as the API records it, and announces nothing."""
        session = session_create(title="Old")
        published = admin_save(admin_client, session, django_capture_on_commit_callbacks, title="New")
        assert InterviewSession.objects.get(pk=session.id).title == "New"
        assert list(HistoryEntry.objects.filter(session=session).values_list("change_type", flat=True)) == [
            ChangeType.TITLE_CHANGE
        ]
        assert published == []

    def test_expiring_a_session_ends_its_connections(self, admin_client, api, django_capture_on_commit_callbacks):
        """An expires_at in the past ends the session as the "end sessions" action does."""
        session = session_create()
        past = timezone.now() - timedelta(minutes=5)
        published = admin_save(admin_client, session, django_capture_on_commit_callbacks, expires_at=past)
        assert published == [(session.id, {"type": "session.ended", "reason": "ended"})]
        assert api.get(f"/api/sessions/{session.id}").status_code == 404

    def test_extending_a_live_session_ends_nothing(self, admin_client, api, django_capture_on_commit_callbacks):
        """A later expires_at is saved and tells nobody."""
        session = session_create()
        later = session.expires_at + timedelta(days=2)
        published = admin_save(admin_client, session, django_capture_on_commit_callbacks, expires_at=later)
        assert published == []
        stored = InterviewSession.objects.get(pk=session.id).expires_at
        assert abs(stored - later) < timedelta(seconds=1)

    def test_reviving_an_expired_session_with_a_new_language(
        self, admin_client, api, django_capture_on_commit_callbacks
    ):
        """An expired session given a later expires_at and a language is live again, the change recorded."""
        session = session_create(language="python")
        InterviewSession.objects.filter(pk=session.id).update(expires_at=timezone.now() - timedelta(hours=1))
        session.refresh_from_db()
        later = timezone.now() + timedelta(hours=3)
        admin_save(admin_client, session, django_capture_on_commit_callbacks, expires_at=later, language="cpp")
        assert api.get(f"/api/sessions/{session.id}").json()["language"] == "cpp"
        assert HistoryEntry.objects.filter(session=session, change_type=ChangeType.LANGUAGE_CHANGE).count() == 1

    def test_language_of_an_expired_session_is_saved_without_telling(
        self, admin_client, django_capture_on_commit_callbacks
    ):
        """An expired session that stays expired takes a new language; there is nobody to tell."""
        session = session_create(language="python")
        InterviewSession.objects.filter(pk=session.id).update(expires_at=timezone.now() - timedelta(hours=1))
        session.refresh_from_db()
        published = admin_save(admin_client, session, django_capture_on_commit_callbacks, language="java")
        assert InterviewSession.objects.get(pk=session.id).language == "java"
        assert published == []

"""The sessions app: interview sessions, their document, snapshots, history and participants."""

from django.apps import AppConfig


class InterviewSessionsConfig(AppConfig):
    # "sessions" is django.contrib.sessions' label, which the admin needs.
    name = "sessions"
    label = "interview_sessions"
    verbose_name = "Interview sessions"
    default_auto_field = "django.db.models.BigAutoField"

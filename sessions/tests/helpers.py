"""Helpers for the sessions tests: how many rows a session holds, and what a management command prints."""

from io import StringIO

from django.core.management import call_command

from sessions import models


def rows(session_id) -> dict:
    """How many rows of each kind a session holds."""
    return {
        "sessions": models.InterviewSession.objects.filter(pk=session_id).count(),
        "snapshots": models.CodeSnapshot.objects.filter(session_id=session_id).count(),
        "history_entries": models.HistoryEntry.objects.filter(session_id=session_id).count(),
        "operations": models.DocumentOperation.objects.filter(session_id=session_id).count(),
        "participants": models.Participant.objects.filter(session_id=session_id).count(),
        "connections": models.ParticipantConnection.objects.filter(participant__session_id=session_id).count(),
    }


def all_rows() -> dict:
    return {
        model.__name__: model.objects.count()
        for model in (
            models.InterviewSession,
            models.CodeSnapshot,
            models.HistoryEntry,
            models.DocumentOperation,
            models.Participant,
            models.ParticipantConnection,
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

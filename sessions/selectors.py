"""Reads of sessions and what hangs off them."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.db.models import Func, IntegerField
from django.utils import timezone

from sessions.exceptions import SessionNotFound
from sessions.models import HistoryEntry, InterviewSession, Participant, ParticipantConnection


def parse_session_id(value) -> uuid.UUID:
    """A session id from user input; anything that is not a UUID is an unknown session."""
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError, AttributeError) as exc:
        raise SessionNotFound() from exc


def session_get(*, session_id) -> InterviewSession:
    """The live (unexpired) session with this id, else SessionNotFound."""
    sid = parse_session_id(session_id)
    session = InterviewSession.objects.filter(pk=sid, expires_at__gt=timezone.now()).first()
    if session is None:
        raise SessionNotFound()
    return session


def presence_cutoff():
    """Connections not refreshed since this moment belong to a dead process."""
    return timezone.now() - timedelta(seconds=settings.PRESENCE_TTL_SECONDS)


def _active(session: InterviewSession):
    return session.participants.filter(
        pk__in=ParticipantConnection.objects.filter(participant__session=session, seen_at__gt=presence_cutoff()).values(
            "participant_id"
        )
    )


def participants_active(*, session: InterviewSession) -> list[Participant]:
    """Participants with at least one live connection, in the order they joined."""
    return list(_active(session).order_by("joined_at", "id"))


def participant_active_count(*, session: InterviewSession) -> int:
    """How many distinct users are connected and joined right now."""
    return _active(session).count()


class _Utf8Bytes(Func):
    """The UTF-8 size of a text column, computed by the database without sending the text."""

    function = "OCTET_LENGTH"
    output_field = IntegerField()

    def as_sqlite(self, compiler, connection, **extra_context):
        return self.as_sql(compiler, connection, template="LENGTH(CAST(%(expressions)s AS BLOB))", **extra_context)


def history_recent(*, session: InterviewSession, limit: int, offset: int = 0) -> list[HistoryEntry]:
    """The newest `limit` history entries after skipping the `offset` newest, oldest first (by
    timestamp: an `edit` entry's is its burst's latest change), without their code:
    `code_bytes` is its UTF-8 size (None when the entry has none), and `history_codes`
    fetches the codes worth sending."""
    newest = list(
        session.history.defer("code_snapshot")
        .annotate(code_bytes=_Utf8Bytes("code_snapshot"))
        .order_by("-timestamp", "-id")[offset : offset + limit]
    )
    newest.reverse()
    return newest


def history_codes(*, entry_ids: list[int]) -> dict[int, str]:
    """The code carried by each of these history entries."""
    if not entry_ids:
        return {}
    return dict(HistoryEntry.objects.filter(pk__in=entry_ids).values_list("pk", "code_snapshot"))

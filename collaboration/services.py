"""What a connection reads when it opens or resyncs (moving to sessions.selectors).

Presence writes are collaboration.presence's.
"""

import uuid
from dataclasses import dataclass

from django.utils import timezone

from sessions.models import InterviewSession
from sessions.selectors import participants_active, session_get


@dataclass(frozen=True)
class Welcome:
    session_id: uuid.UUID
    code: str
    language: str
    version: int
    participants: list[dict]
    expires_at: object


def welcome_state(*, session_id) -> Welcome:
    """What a new connection is told: the document, its version and who is here."""
    session = session_get(session_id=session_id)
    people = [{"userId": p.user_id, "name": p.name} for p in participants_active(session=session)]
    return Welcome(session.id, session.code, session.language, session.version, people, session.expires_at)


def session_exists(*, session_id) -> bool:
    return InterviewSession.objects.filter(pk=session_id, expires_at__gt=timezone.now()).exists()

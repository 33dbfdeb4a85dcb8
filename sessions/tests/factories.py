"""Test data: the one way every app's tests make sessions, saved code and participants.

Sessions and snapshots go through the real services, so a test's data is what the app
itself would have written. `conftest.py`'s `make_session` and `new_session` fixtures are
thin wrappers over these functions.
"""

import uuid
from datetime import timedelta

from django.utils import timezone

from sessions.models import CodeSnapshot, InterviewSession, Participant, ParticipantConnection, Role
from sessions.services import CodeChange, code_change_apply, session_create, session_update, snapshot_create


def session_make(*, code: str | None = None, **fields) -> InterviewSession:
    """A session from `session_create(**fields)`; with `code`, that code saved as its first snapshot.

    The returned instance is as `session_create` made it (its `code` and `version` are not
    refreshed after the snapshot); tests use its `id` and `owner_token`.
    """
    session = session_create(**fields)
    if code is not None:
        snapshot_make(session.id, code)
    return session


def snapshot_make(session_id, code: str, **fields) -> CodeSnapshot:
    """Code saved through `snapshot_create`, as a REST save does (one change, announced)."""
    return snapshot_create(session_id=session_id, code=code, **fields)


def session_post(api, **body) -> dict:
    """A session created over the API by `api` (a DRF test client); its JSON answer."""
    response = api.post("/api/sessions", body, format="json")
    assert response.status_code == 201, response.content
    return response.json()


def participant_make(
    session: InterviewSession,
    user_id: str,
    name: str,
    *,
    live: int = 0,
    stale: int = 0,
    cursor: dict | None = None,
    role: str = Role.CANDIDATE,
) -> Participant:
    """A participant with `live` fresh connections and `stale` ones from a dead process.

    Written as rows, not through `participant_join`: no service makes a connection an hour
    old, and tests of presence need exactly such rows.
    """
    participant = Participant.objects.create(
        session=session, user_id=user_id, name=name, cursor_position=cursor, role=role
    )
    old = timezone.now() - timedelta(hours=1)
    for i in range(live + stale):
        ParticipantConnection.objects.create(
            participant=participant,
            channel_name=f"test.{user_id}-{i}.{uuid.uuid4().hex[:8]}",
            server_id="test",
            seen_at=timezone.now() if i < live else old,
        )
    return participant


def session_expire(session_id, *, ago: timedelta) -> None:
    """Move a session's expiry `ago` into the past (no service ends a session in the past)."""
    InterviewSession.objects.filter(pk=session_id).update(expires_at=timezone.now() - ago)


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

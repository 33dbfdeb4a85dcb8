"""What the session endpoints do and answer on success, for the views (`sessions.apis`) and
the fast lane (`sessions.fast_lane`) alike, so that the two cannot drift apart. Each takes
what its serializer validated and gives the answer's data; errors are raised for the
caller to map."""

from sessions import selectors, serializers, services


def session_answer(session) -> dict:
    """GET (and PATCH) /api/sessions/{id}: the session with who is connected."""
    session.active_participants = selectors.participant_active_count(session=session)
    return serializers.SessionSerializer(session).data


def participants_answer(session) -> dict:
    """GET /api/sessions/{id}/participants."""
    participants = selectors.participants_active(session=session)
    return serializers.ParticipantListSerializer({"sessionId": session.id, "participants": participants}).data


def session_created(params: dict) -> dict:
    """POST /api/sessions: a new session from `SessionCreateSerializer`'s data."""
    session = services.session_create(
        language=params["language"], title=params["title"], expires_in_hours=params["expiresIn"]
    )
    session.active_participants = 0
    return serializers.SessionCreatedSerializer(session).data


def code_saved(session_id, params: dict) -> dict:
    """POST /api/sessions/{id}/code: `CodeSaveSerializer`'s data saved (SessionNotFound,
    InvalidChange raised)."""
    snapshot = services.snapshot_create(session_id=session_id, code=params["code"], language=params.get("language"))
    return serializers.SnapshotReceiptSerializer(snapshot).data

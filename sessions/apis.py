"""Thin REST views over the session services and selectors."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from interview.schema import error
from interview.throttling import throttles_for
from sessions import selectors, serializers, services
from sessions.exceptions import InvalidChange
from sessions.permissions import IsSessionOwner

SESSION_ID = OpenApiParameter("id", str, OpenApiParameter.PATH, description="The session's UUID.")


def _with_count(session):
    session.active_participants = selectors.participant_active_count(session=session)
    return session


@extend_schema_view(
    create=extend_schema(
        tags=["sessions"],
        summary="Create a session",
        request=serializers.SessionCreateSerializer,
        responses={201: serializers.SessionCreatedSerializer},
    ),
    retrieve=extend_schema(
        tags=["sessions"],
        summary="Get a session",
        parameters=[SESSION_ID],
        responses={200: serializers.SessionSerializer},
    ),
    partial_update=extend_schema(
        tags=["sessions"],
        summary="Change a session's language or title",
        description="A new language is announced to connected clients (`language-changed`) "
        "and recorded as a `language-change` history entry.",
        parameters=[SESSION_ID],
        request=serializers.SessionUpdateSerializer,
        responses={200: serializers.SessionSerializer},
    ),
    destroy=extend_schema(
        tags=["sessions"],
        summary="Delete a session",
        description="Needs `Authorization: Bearer <ownerToken>` (the token returned by create) or a "
        "logged-in staff user. Connected clients get SESSION_NOT_FOUND and are closed with code 4404.",
        parameters=[SESSION_ID],
        responses={
            204: OpenApiResponse(description="Deleted."),
            401: error("No owner token given."),
            403: error("The owner token does not match."),
        },
    ),
)
class SessionViewSet(viewsets.ViewSet):
    """Sessions, their code, participants and history. There is no list of all sessions."""

    lookup_value_regex = "[^/]+"
    throttle_scopes = {"create": "session_create", "code": "code_save"}

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        # drf-spectacular's schema class of each action keeps the last view instance (DRF's
        # schema descriptor sets `view` on it): the view must not keep its answer alive.
        self.response = self.request = None
        return response

    def get_permissions(self):
        if self.action == "destroy":
            return [*super().get_permissions(), IsSessionOwner()]
        return super().get_permissions()

    def get_throttles(self):
        if self.action == "code" and self.request.method != "POST":
            return []
        return throttles_for(self.throttle_scopes.get(self.action))

    def create(self, request):
        params = serializers.SessionCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        session = services.session_create(
            language=data["language"], title=data["title"], expires_in_hours=data["expiresIn"]
        )
        session.active_participants = 0
        return Response(serializers.SessionCreatedSerializer(session).data, status=status.HTTP_201_CREATED)

    def retrieve(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        return Response(serializers.SessionSerializer(_with_count(session)).data)

    def partial_update(self, request, pk=None):
        selectors.session_get(session_id=pk)
        params = serializers.SessionUpdateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        data = params.validated_data
        session = services.session_update(
            session_id=pk,
            language=data.get("language"),
            title=data.get("title"),
            set_title="title" in data,
        )
        return Response(serializers.SessionSerializer(_with_count(session)).data)

    def destroy(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        self.check_object_permissions(request, session)
        services.session_delete(session_id=session.id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        tags=["sessions"],
        summary="Get the current code",
        parameters=[SESSION_ID],
        responses={200: serializers.CodeSerializer},
    )
    @extend_schema(
        methods=["POST"],
        tags=["sessions"],
        summary="Save code as a snapshot",
        description="Stores a snapshot, makes it the current code, records a `snapshot` history "
        "entry carrying the code, and sends connected clients a `code-update`.",
        parameters=[SESSION_ID],
        request=serializers.CodeSaveSerializer,
        responses={
            200: serializers.SnapshotReceiptSerializer,
            400: error("Invalid input, or code over the size limit."),
        },
    )
    @action(detail=True, methods=["get", "post"])
    def code(self, request, pk=None):
        if request.method == "GET":
            return Response(serializers.CodeSerializer(selectors.session_get(session_id=pk)).data)
        selectors.session_get(session_id=pk)
        params = serializers.CodeSaveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            snapshot = services.snapshot_create(
                session_id=pk, code=params.validated_data["code"], language=params.validated_data.get("language")
            )
        except InvalidChange as exc:
            raise ValidationError({"code": [str(exc)]}) from exc
        return Response(serializers.SnapshotReceiptSerializer(snapshot).data)

    @extend_schema(
        tags=["collaboration"],
        summary="Who is connected",
        description="Participants with an open WebSocket connection who have joined, in join order.",
        parameters=[SESSION_ID],
        responses={200: serializers.ParticipantListSerializer},
    )
    @action(detail=True, methods=["get"])
    def participants(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        participants = selectors.participants_active(session=session)
        return Response(
            serializers.ParticipantListSerializer({"sessionId": session.id, "participants": participants}).data
        )

    @extend_schema(
        tags=["collaboration"],
        summary="What happened in the session",
        description="The newest `limit` entries, oldest first (in timestamp order). Edits are coalesced "
        "per user and burst of typing; an edit entry's timestamp is its latest change. The answer is at "
        "most HISTORY_MAX_RESPONSE_BYTES of JSON: the newest entries keep their code while it fits, older "
        "ones come with `codeSnapshot: null` and `codeSnapshotOmitted: true`; `offset` pages back to them.",
        parameters=[SESSION_ID, serializers.HistoryQuerySerializer],
        responses={200: serializers.HistoryListSerializer},
    )
    @action(detail=True, methods=["get"])
    def history(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        query = serializers.HistoryQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        entries = selectors.history_recent(
            session=session, limit=query.validated_data["limit"], offset=query.validated_data["offset"]
        )
        answer = serializers.history_answer(
            session_id=session.id,
            entries=entries,
            max_bytes=settings.HISTORY_MAX_RESPONSE_BYTES,
            load_codes=lambda ids: selectors.history_codes(entry_ids=ids),
        )
        return Response(answer)

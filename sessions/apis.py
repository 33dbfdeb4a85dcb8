"""Thin REST views over the session services and selectors."""

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from interview.schema import error
from interview.throttling import throttles_for
from sessions import answers, replay, selectors, serializers, services
from sessions.exceptions import InvalidChange
from sessions.permissions import IsSessionOwner

SESSION_ID = OpenApiParameter("id", str, OpenApiParameter.PATH, description="The session's UUID.")


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

    # What needs the owner token, as its 401 names it.
    owner_only = {"destroy": "Deleting a session", "notes": "A session's notes"}

    def get_permissions(self):
        if self.action in self.owner_only:
            return [*super().get_permissions(), IsSessionOwner()]
        return super().get_permissions()

    def get_throttles(self):
        if self.action in ("code", "notes"):
            return throttles_for("code_save") if self.request.method in ("POST", "PUT") else []
        return throttles_for(self.throttle_scopes.get(self.action))

    def create(self, request):
        params = serializers.SessionCreateSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        return Response(answers.session_created(params.validated_data), status=status.HTTP_201_CREATED)

    def retrieve(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        return Response(answers.session_answer(session))

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
        return Response(answers.session_answer(session))

    def destroy(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        self.check_object_permissions(request, session)
        services.session_delete(session_id=session.id)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        methods=["GET"],
        tags=["sessions"],
        summary="Get the current code, or the code at a past version",
        description="With `version`, the document as it was at that version, rebuilt from the newest "
        "checkpoint before it (one every DOCUMENT_CHECKPOINT_INTERVAL versions) and the changes after it; "
        "`lastModified` is then when that version's text was made and `language` the language then.",
        parameters=[SESSION_ID, serializers.CodeQuerySerializer],
        responses={
            200: serializers.CodeSerializer,
            400: error("`version` is not an integer of 0 or more."),
            404: error("No such session (SESSION_NOT_FOUND), or a version beyond the current one (VERSION_NOT_FOUND)."),
            410: error("A version older than the oldest the session still keeps (VERSION_NOT_KEPT)."),
        },
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
            session = selectors.session_get(session_id=pk)
            if "version" in request.query_params:
                query = serializers.CodeQuerySerializer(data=request.query_params)
                query.is_valid(raise_exception=True)
                past = replay.version_get(session=session, version=query.validated_data["version"])
                session.code, session.version = past.code, past.version
                session.language, session.code_modified_at = past.language, past.modified_at
            return Response(serializers.CodeSerializer(session).data)
        selectors.session_get(session_id=pk)
        params = serializers.CodeSaveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        try:
            return Response(answers.code_saved(pk, params.validated_data))
        except InvalidChange as exc:
            raise ValidationError({"code": [str(exc)]}) from exc

    @extend_schema(
        tags=["collaboration"],
        summary="Who is connected",
        description="Participants with an open WebSocket connection who have joined, in join order.",
        parameters=[SESSION_ID],
        responses={200: serializers.ParticipantListSerializer},
    )
    @action(detail=True, methods=["get"])
    def participants(self, request, pk=None):
        return Response(answers.participants_answer(selectors.session_get(session_id=pk)))

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

    @extend_schema(
        tags=["replay"],
        summary="The session's timeline",
        description="Oldest first: every change (the version it made, when, who, and its changes in the "
        "contract's UTF-16 change format, as applied to the previous version), and the language and title "
        "changes, saves and runs, each after the change of the version the document was at when it "
        "happened. Paged by position: pass the answer's `next` as `after` and `afterEvent` until "
        "`hasMore` is false. A run keeps at most HISTORY_OUTPUT_BYTES of each output stream, and only "
        "the newest SESSION_MAX_HISTORY_CODES runs and saves keep it at all (older ones: null).",
        parameters=[SESSION_ID, serializers.TimelineQuerySerializer],
        responses={
            200: serializers.TimelineSerializer,
            400: error("A bad `after`, `afterEvent` or `limit`, or `after` beyond the current version."),
        },
    )
    @action(detail=True, methods=["get"])
    def timeline(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        query = serializers.TimelineQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        if data["after"] > session.version:
            raise ValidationError(
                {"after": [f"The session is at version {session.version}; there is nothing after {data['after']}."]}
            )
        page = replay.timeline_page(
            session=session, after=data["after"], after_event=data.get("afterEvent"), limit=data["limit"]
        )
        return Response(
            {
                "sessionId": session.id,
                "currentVersion": session.version,
                "firstVersion": page.first_version,
                "items": page.items,
                "next": {"after": page.next_after, "afterEvent": page.next_after_event},
                "hasMore": page.has_more,
            }
        )

    @extend_schema(
        methods=["GET"],
        tags=["replay"],
        summary="The interviewer's private notes",
        description="Needs `Authorization: Bearer <ownerToken>` or a logged-in staff user. Notes are never "
        "sent over the WebSocket and never shown with the share link alone.",
        parameters=[SESSION_ID],
        responses={
            200: serializers.NotesSerializer,
            401: error("No owner token given."),
            403: error("The owner token does not match."),
        },
    )
    @extend_schema(
        methods=["PUT"],
        tags=["replay"],
        summary="Replace the interviewer's private notes",
        description="Needs `Authorization: Bearer <ownerToken>` or a logged-in staff user. At most "
        "SESSION_NOTES_MAX_BYTES of UTF-8.",
        parameters=[SESSION_ID],
        request=serializers.NotesSaveSerializer,
        responses={
            200: serializers.NotesSerializer,
            400: error("Invalid input, or notes over the size limit."),
            401: error("No owner token given."),
            403: error("The owner token does not match."),
        },
    )
    @action(detail=True, methods=["get", "put"])
    def notes(self, request, pk=None):
        session = selectors.session_get(session_id=pk)
        self.check_object_permissions(request, session)
        if request.method == "GET":
            return Response(serializers.NotesSerializer(replay.notes_get(session=session)).data)
        params = serializers.NotesSaveSerializer(data=request.data)
        params.is_valid(raise_exception=True)
        notes = services.notes_save(session=session, text=params.validated_data["notes"])
        return Response(serializers.NotesSerializer(notes).data)

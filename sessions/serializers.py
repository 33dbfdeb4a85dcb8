"""The REST shapes of sessions, code, participants and history (camelCase on the wire)."""

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, PolymorphicProxySerializer, extend_schema_serializer
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import BindingDict

from sessions.models import TITLE_MAX_LENGTH, Language, Role


class StrictCharField(serializers.CharField):
    """A CharField that refuses numbers and booleans instead of turning them into text."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class BoundedTextField(StrictCharField):
    """Text kept exactly as sent (no trimming), at most `settings.<limit_setting>` UTF-8 bytes."""

    def __init__(self, *, limit_setting: str, label_text: str, **kwargs):
        self.limit_setting = limit_setting
        self.label_text = label_text
        super().__init__(allow_blank=True, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        limit = getattr(settings, self.limit_setting)
        if len(value.encode("utf-8", "surrogatepass")) > limit:
            raise serializers.ValidationError(f"{self.label_text} is larger than the limit of {limit} bytes.")
        return value


def code_field(**kwargs) -> BoundedTextField:
    return BoundedTextField(limit_setting="MAX_CODE_BYTES", label_text="Code", **kwargs)


class StrictIntegerField(serializers.IntegerField):
    """An IntegerField that refuses strings, floats with fractions and booleans."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not data.is_integer():
            self.fail("invalid")
        return super().to_internal_value(int(data))


def language_field(**kwargs):
    return serializers.ChoiceField(choices=Language.values, help_text="One of javascript, python, java, cpp.", **kwargs)


# A serializer of answers only, whose fields are built and bound once per class. DRF
# deep-copies every declared field for every serializer instance (each copy a new field built
# from its arguments): for a GET of the code that was a third of the view's time. An answer's
# fields read only the object they are given (no context, no instance, no validation state),
# so one bound set serves every answer, from any thread. (A comment, not a docstring: the
# OpenAPI document would show a docstring as the description of every answer's schema.)
class AnswerSerializer(serializers.Serializer):
    @property
    def fields(self):
        cls = type(self)
        shared = cls.__dict__.get("_shared_fields")
        if shared is None:
            # Bound to a bare instance of the class: the parent a SerializerMethodField calls.
            prototype = cls.__new__(cls)
            serializers.Serializer.__init__(prototype)
            shared = BindingDict(prototype)
            for name, field in prototype.get_fields().items():
                shared[name] = field
            cls._shared_fields = shared
        return shared


@extend_schema_serializer(
    examples=[
        OpenApiExample("Python interview", value={"language": "python", "title": "Two sum", "expiresIn": 24}),
    ]
)
class SessionCreateSerializer(serializers.Serializer):
    language = language_field(required=False, default=Language.JAVASCRIPT)
    title = StrictCharField(
        required=False, allow_null=True, allow_blank=True, max_length=TITLE_MAX_LENGTH, default=None
    )
    expiresIn = StrictIntegerField(
        required=False,
        min_value=1,
        max_value=settings.SESSION_MAX_EXPIRES_HOURS,
        default=settings.SESSION_DEFAULT_EXPIRES_HOURS,
        help_text="Hours until the session expires (1 to 168).",
    )


@extend_schema_serializer(examples=[OpenApiExample("Switch to Java", value={"language": "java"})])
class SessionUpdateSerializer(serializers.Serializer):
    language = language_field(required=False)
    title = StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=TITLE_MAX_LENGTH)


_SESSION_EXAMPLE = {
    "sessionId": "6f1c2a9e-3b1d-4f5e-9a7b-2c8d4e6f8a10",
    "title": "Two sum",
    "language": "python",
    "createdAt": "2026-11-27T10:00:00Z",
    "expiresAt": "2026-11-28T10:00:00Z",
    "activeParticipants": 2,
    "url": "http://localhost:3001/interview/6f1c2a9e-3b1d-4f5e-9a7b-2c8d4e6f8a10",
}


@extend_schema_serializer(examples=[OpenApiExample("Session", response_only=True, value=_SESSION_EXAMPLE)])
class SessionSerializer(AnswerSerializer):
    sessionId = serializers.UUIDField(source="id")
    title = serializers.CharField(allow_null=True)
    language = language_field()
    createdAt = serializers.DateTimeField(source="created_at")
    expiresAt = serializers.DateTimeField(source="expires_at")
    activeParticipants = serializers.IntegerField(
        source="active_participants", help_text="Distinct users connected and joined right now."
    )
    url = serializers.SerializerMethodField(help_text="The share link for the interview.")

    def get_url(self, obj) -> str:
        return f"{settings.CLIENT_URL}/interview/{obj.id}"


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Created session",
            response_only=True,
            value={
                **_SESSION_EXAMPLE,
                "activeParticipants": 0,
                "ownerToken": "q2V0b3Jlc3QtdG9rZW4tZXhhbXBsZS1vbmx5LWRvLW5vdA",
            },
        )
    ]
)
class SessionCreatedSerializer(SessionSerializer):
    ownerToken = serializers.CharField(
        source="owner_token",
        help_text="Shown once: send it as `Authorization: Bearer <ownerToken>` to delete the session. "
        "The share link alone lets anyone view, edit and run code; this token is the interviewer's.",
    )


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Code",
            response_only=True,
            value={
                "sessionId": "6f1c2a9e-3b1d-4f5e-9a7b-2c8d4e6f8a10",
                "code": "def two_sum(nums, target):\n    pass\n",
                "language": "python",
                "lastModified": "2026-11-27T10:05:00Z",
                "version": 42,
            },
        )
    ]
)
class CodeSerializer(AnswerSerializer):
    sessionId = serializers.UUIDField(source="id")
    code = serializers.CharField(allow_blank=True, trim_whitespace=False)
    language = language_field()
    lastModified = serializers.DateTimeField(source="code_modified_at")
    version = serializers.IntegerField(help_text="Document version; rises by one per change.")


@extend_schema_serializer(examples=[OpenApiExample("Save", value={"code": "print('hello')\n", "language": "python"})])
class CodeSaveSerializer(serializers.Serializer):
    code = code_field()
    language = language_field(required=False)


class SnapshotReceiptSerializer(AnswerSerializer):
    sessionId = serializers.UUIDField(source="session_id")
    snapshotId = serializers.UUIDField(source="id")
    savedAt = serializers.DateTimeField(source="created_at")
    version = serializers.IntegerField(help_text="Document version after the save.")


class CursorPositionSerializer(serializers.Serializer):
    line = serializers.IntegerField()
    column = serializers.IntegerField()


class ParticipantSerializer(AnswerSerializer):
    userId = serializers.CharField(source="user_id")
    name = serializers.CharField()
    joinedAt = serializers.DateTimeField(source="joined_at")
    cursorPosition = serializers.JSONField(
        source="cursor_position", allow_null=True, help_text="`{line, column, ...}` or null."
    )
    role = serializers.ChoiceField(
        choices=Role.values,
        help_text="Beyond the contract: `interviewer` when the participant's latest join carried the "
        "session's owner token (`ownerToken`), else `candidate`.",
    )


class ParticipantListSerializer(AnswerSerializer):
    sessionId = serializers.UUIDField()
    participants = ParticipantSerializer(many=True)


class HistoryEntrySerializer(AnswerSerializer):
    timestamp = serializers.DateTimeField()
    userId = serializers.CharField(source="user_id", allow_null=True)
    changeType = serializers.CharField(
        source="change_type", help_text="edit, language-change, snapshot, execution, title-change."
    )
    description = serializers.CharField()
    codeSnapshot = serializers.CharField(
        source="code_snapshot",
        allow_null=True,
        help_text="The code a snapshot saved or a run ran; null for other entries, for older "
        "entries whose code would take the answer past its size bound (see codeSnapshotOmitted), "
        "and for snapshots and runs older than the newest SESSION_MAX_HISTORY_CODES with code, "
        "whose code the server no longer keeps (codeSnapshotOmitted false: no page has it).",
    )
    count = serializers.IntegerField(help_text="How many changes this entry stands for.")
    codeSnapshotOmitted = serializers.BooleanField(
        source="code_omitted",
        default=False,
        help_text="True when the entry has code that this answer leaves out (codeSnapshot is null) "
        "to stay under HISTORY_MAX_RESPONSE_BYTES; the newest entries keep theirs. Page with "
        "`offset` (and a small `limit`) to get an older entry's code. False when the server no "
        "longer keeps the code (see codeSnapshot).",
    )


class HistoryListSerializer(AnswerSerializer):
    sessionId = serializers.UUIDField()
    history = HistoryEntrySerializer(many=True)


def _json_size(value) -> int:
    return len(JSONRenderer().render(value))


def history_answer(*, session_id, entries: list, max_bytes: int, load_codes) -> dict:
    """The history answer, at most `max_bytes` of JSON: the newest entries keep their code
    while it fits, older ones get `codeSnapshot: null` and `codeSnapshotOmitted: true`.

    `entries` come without their code but with its UTF-8 size (`code_bytes`), so only
    the codes that can fit are loaded (`load_codes(ids) -> {id: code}`), never all.
    """
    for entry in entries:
        entry.code_snapshot = None
        entry.code_omitted = False
    data = HistoryListSerializer({"sessionId": session_id, "history": entries}).data
    # Each code sent replaces a `null` (4 bytes); its JSON is at least its UTF-8 size plus quotes.
    room = max_bytes - _json_size(data)
    candidates, estimate = [], room
    for entry in reversed(entries):
        if entry.code_bytes is not None and entry.code_bytes - 2 <= estimate:
            candidates.append(entry)
            estimate -= entry.code_bytes - 2
    codes = load_codes([entry.pk for entry in candidates])
    for entry in candidates:
        cost = _json_size(codes[entry.pk]) - 4
        if cost <= room:
            entry.code_snapshot = codes[entry.pk]
            room -= cost
    # The codes go into the answer built above (its fields as the serializer gives them: a
    # text, a boolean) rather than through a second serialization of every entry.
    for entry, row in zip(entries, data["history"], strict=True):
        entry.code_omitted = entry.code_bytes is not None and entry.code_snapshot is None
        row["codeSnapshot"] = entry.code_snapshot
        row["codeSnapshotOmitted"] = entry.code_omitted
    return data


class QueryIntegerField(serializers.IntegerField):
    """An integer query parameter where `?limit=` is an invalid value, not a missing one."""

    def get_value(self, dictionary):
        return dictionary.get(self.field_name, serializers.empty)


class HistoryQuerySerializer(serializers.Serializer):
    limit = QueryIntegerField(
        required=False,
        min_value=1,
        max_value=settings.HISTORY_MAX_LIMIT,
        default=settings.HISTORY_DEFAULT_LIMIT,
        help_text="How many of the newest entries (1 to 100, default 50).",
    )
    offset = QueryIntegerField(
        required=False,
        min_value=0,
        max_value=settings.HISTORY_MAX_OFFSET,
        default=0,
        help_text="Beyond the contract: skip this many of the newest entries first (default 0), "
        "to page back through history, e.g. to reach an older entry's code.",
    )


# --- Replay: past versions, the timeline, the interviewer's notes ---------------------------


class CodeQuerySerializer(serializers.Serializer):
    version = QueryIntegerField(
        required=False,
        min_value=0,
        help_text="Beyond the contract: the document as it was at this version (0 is the starter code). "
        "Without it, the current code.",
    )


class TimelineQuerySerializer(serializers.Serializer):
    after = QueryIntegerField(
        required=False,
        min_value=0,
        default=0,
        help_text="Start after the change that made this version (default 0: from the start); the events "
        "recorded at this version come first.",
    )
    afterEvent = QueryIntegerField(
        required=False,
        min_value=0,
        help_text="With `after`: continue after this event (an item's `id`) of version `after`. "
        "Pass the previous page's `next` as `after` and `afterEvent`.",
    )
    limit = QueryIntegerField(
        required=False,
        min_value=1,
        max_value=settings.TIMELINE_MAX_LIMIT,
        default=settings.TIMELINE_DEFAULT_LIMIT,
        help_text=f"At most this many items (1 to {settings.TIMELINE_MAX_LIMIT}, default "
        f"{settings.TIMELINE_DEFAULT_LIMIT}); a page also stops at TIMELINE_MAX_RESPONSE_BYTES of JSON.",
    )


class _FromFieldMixin:
    """A field named `from` (a Python keyword), declared as `from_`."""

    def get_fields(self):
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields


class ChangeSpecSerializer(_FromFieldMixin, serializers.Serializer):
    from_ = serializers.IntegerField(help_text="UTF-16 offset in the previous version.")
    to = serializers.IntegerField(help_text="UTF-16 offset in the previous version (exclusive).")
    insert = serializers.CharField(allow_blank=True, trim_whitespace=False)


class _TimelineItemSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        help_text="A change: the version it made. An event: the document's version when it happened."
    )
    timestamp = serializers.DateTimeField()
    userId = serializers.CharField(allow_null=True, help_text="Who did it (null for a REST call or a run).")


class _TimelineEventSerializer(_TimelineItemSerializer):
    id = serializers.IntegerField(help_text="The event's id: its order among the events of one version.")


class TimelineChangeSerializer(_TimelineItemSerializer):
    type = serializers.ChoiceField(choices=["change"])
    changes = ChangeSpecSerializer(many=True, help_text="As applied to the previous version, in order.")


class TimelineLanguageChangeSerializer(_FromFieldMixin, _TimelineEventSerializer):
    type = serializers.ChoiceField(choices=["language-change"])
    from_ = serializers.CharField(help_text="The language before.")
    to = serializers.CharField(help_text="The language after.")


class TimelineTitleChangeSerializer(_FromFieldMixin, _TimelineEventSerializer):
    type = serializers.ChoiceField(choices=["title-change"])
    from_ = serializers.CharField(allow_null=True)
    to = serializers.CharField(allow_null=True)
    description = serializers.CharField()


class TimelineSaveSerializer(_TimelineEventSerializer):
    type = serializers.ChoiceField(choices=["save"])
    snapshotId = serializers.UUIDField(allow_null=True)
    language = language_field(allow_null=True)


class TimelineRunSerializer(_TimelineEventSerializer):
    type = serializers.ChoiceField(choices=["run"])
    language = language_field(allow_null=True)
    status = serializers.CharField(allow_null=True)
    success = serializers.BooleanField(allow_null=True)
    exitCode = serializers.IntegerField(allow_null=True)
    executionTime = serializers.IntegerField(allow_null=True, help_text="Wall time in milliseconds.")
    error = serializers.CharField(allow_null=True)
    stdout = serializers.CharField(
        allow_null=True, help_text="At most HISTORY_OUTPUT_BYTES; null once an older run's output is no longer kept."
    )
    stderr = serializers.CharField(allow_null=True)
    truncated = serializers.BooleanField(help_text="The output was cut (by the run's limit or the timeline's).")
    description = serializers.CharField()


class TimelineCursorSerializer(serializers.Serializer):
    after = serializers.IntegerField()
    afterEvent = serializers.IntegerField(allow_null=True)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A typed line, a run, another change",
            value={
                "sessionId": "6f1c1b1e-8a51-4f0e-9f58-0f6a2b2f0d11",
                "currentVersion": 2,
                "firstVersion": 0,
                "items": [
                    {
                        "type": "change",
                        "version": 1,
                        "timestamp": "2026-12-04T10:00:01.250Z",
                        "userId": "candidate-1",
                        "changes": [{"from": 0, "to": 0, "insert": "print(42)\n"}],
                    },
                    {
                        "type": "run",
                        "id": 17,
                        "version": 1,
                        "timestamp": "2026-12-04T10:00:03.010Z",
                        "userId": None,
                        "language": "python",
                        "status": "ok",
                        "success": True,
                        "exitCode": 0,
                        "executionTime": 31,
                        "error": None,
                        "stdout": "42\n",
                        "stderr": "",
                        "truncated": False,
                        "description": "Ran python: succeeded (31 ms)",
                    },
                    {
                        "type": "change",
                        "version": 2,
                        "timestamp": "2026-12-04T10:00:05.900Z",
                        "userId": "candidate-1",
                        "changes": [{"from": 6, "to": 8, "insert": "43"}],
                    },
                ],
                "next": {"after": 2, "afterEvent": None},
                "hasMore": False,
            },
        )
    ]
)
class TimelineSerializer(serializers.Serializer):
    sessionId = serializers.UUIDField()
    currentVersion = serializers.IntegerField()
    firstVersion = serializers.IntegerField(
        help_text="The oldest version this session can still show (`code?version=`); usually 0."
    )
    items = PolymorphicProxySerializer(
        component_name="TimelineItem",
        serializers=[
            TimelineChangeSerializer,
            TimelineLanguageChangeSerializer,
            TimelineTitleChangeSerializer,
            TimelineSaveSerializer,
            TimelineRunSerializer,
        ],
        resource_type_field_name="type",
        many=True,
    )
    next = TimelineCursorSerializer(help_text="Where this page ended: the next page's `after` and `afterEvent`.")
    hasMore = serializers.BooleanField(help_text="More items follow already (ask again with `next`).")


@extend_schema_serializer(examples=[OpenApiExample("Notes", value={"notes": "Clear about edge cases; slow start."})])
class NotesSaveSerializer(serializers.Serializer):
    notes = BoundedTextField(limit_setting="SESSION_NOTES_MAX_BYTES", label_text="Notes")


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Notes",
            value={
                "sessionId": "6f1c1b1e-8a51-4f0e-9f58-0f6a2b2f0d11",
                "notes": "Clear about edge cases; slow start.",
                "updatedAt": "2026-12-04T10:40:00Z",
            },
        )
    ]
)
class NotesSerializer(AnswerSerializer):
    sessionId = serializers.UUIDField(source="session_id")
    notes = serializers.CharField(source="text", allow_blank=True, trim_whitespace=False)
    updatedAt = serializers.DateTimeField(source="updated_at", allow_null=True)

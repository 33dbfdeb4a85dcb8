"""The session export format: its name and version, and the serializers that check an export
before `sessions.lifecycle.session_import` writes it (`sessions.selectors.session_export` writes it)."""

from datetime import UTC, datetime

from django.core.validators import ProhibitNullCharactersValidator
from rest_framework import serializers

from sessions import document
from sessions.models import ChangeType, DocumentOperation, HistoryEntry, InterviewSession, Language, Participant, Role
from sessions.serializers import StrictCharField

EXPORT_FORMAT = "interview-session"
EXPORT_FORMAT_VERSION = 1


def _max_length(model, name: str) -> int:
    return model._meta.get_field(name).max_length


class ExportTextField(StrictCharField):
    """Text kept exactly as exported: blank allowed, no trimming, NUL allowed (the database
    decides), lone surrogates refused (no UTF-8 encoding holds them)."""

    def __init__(self, **kwargs):
        super().__init__(allow_blank=True, trim_whitespace=False, **kwargs)
        self.validators = [v for v in self.validators if not isinstance(v, ProhibitNullCharactersValidator)]


def _nullable_text(**kwargs) -> ExportTextField:
    return ExportTextField(required=False, allow_null=True, default=None, **kwargs)


class ExportIntegerField(serializers.IntegerField):
    """A JSON integer: no strings, floats or booleans."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class ExportUuidField(serializers.UUIDField):
    """A UUID written as a string (DRF would take an integer too)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


class ExportTimestampField(serializers.Field):
    """An ISO 8601 timestamp with a time zone, as UTC."""

    default_error_messages = {
        "invalid": "Must be an ISO 8601 timestamp.",
        "naive": "Has no time zone: {value!r}.",
    }

    def to_internal_value(self, data) -> datetime:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            parsed = datetime.fromisoformat(data)
        except ValueError:
            self.fail("invalid")
        if parsed.tzinfo is None:
            self.fail("naive", value=data)
        return parsed.astimezone(UTC)

    def to_representation(self, value):
        return value


class ExportChangesField(serializers.Field):
    """An operation's change list, checked and normalized as the document holds it."""

    def to_internal_value(self, data) -> list:
        try:
            return document.normalize(data, None)
        except document.ChangeError as exc:
            raise serializers.ValidationError(str(exc)) from exc

    def to_representation(self, value):
        return value


class ExportObjectField(serializers.Field):
    """A JSON object kept as it is (a cursor position)."""

    default_error_messages = {"invalid": "Must be an object or null."}

    def to_internal_value(self, data) -> dict:
        if not isinstance(data, dict):
            self.fail("invalid")
        return data

    def to_representation(self, value):
        return value


class ExportedSessionSerializer(serializers.Serializer):
    id = ExportUuidField()
    title = _nullable_text(max_length=_max_length(InterviewSession, "title"))
    language = serializers.ChoiceField(choices=Language.values)
    version = ExportIntegerField(min_value=0)
    code = ExportTextField()
    createdAt = ExportTimestampField(source="created_at")
    codeModifiedAt = ExportTimestampField(source="code_modified_at")
    expiresAt = ExportTimestampField(source="expires_at")


class ExportedSnapshotSerializer(serializers.Serializer):
    id = ExportUuidField()
    code = ExportTextField()
    language = serializers.ChoiceField(choices=Language.values)
    version = ExportIntegerField(min_value=0)
    createdAt = ExportTimestampField(source="created_at")


class ExportedHistoryEntrySerializer(serializers.Serializer):
    timestamp = ExportTimestampField()
    userId = _nullable_text(source="user_id", max_length=_max_length(HistoryEntry, "user_id"))
    changeType = serializers.ChoiceField(source="change_type", choices=ChangeType.values)
    description = ExportTextField(max_length=_max_length(HistoryEntry, "description"))
    codeSnapshot = _nullable_text(source="code_snapshot")
    count = ExportIntegerField(min_value=1, required=False, default=1)
    # The timeline's part (absent from exports made before it).
    version = ExportIntegerField(min_value=0, required=False, allow_null=True, default=None)
    details = ExportObjectField(required=False, allow_null=True, default=None)
    stdout = _nullable_text()
    stderr = _nullable_text()


class ExportedCheckpointSerializer(serializers.Serializer):
    version = ExportIntegerField(min_value=0)
    code = ExportTextField()
    createdAt = ExportTimestampField(source="created_at")


class ExportedNotesSerializer(serializers.Serializer):
    text = ExportTextField()
    updatedAt = ExportTimestampField(source="updated_at")


class ExportedOperationSerializer(serializers.Serializer):
    version = ExportIntegerField(min_value=1)
    userId = _nullable_text(source="user_id", max_length=_max_length(DocumentOperation, "user_id"))
    seq = ExportIntegerField(required=False, allow_null=True, default=None)
    changes = ExportChangesField()
    createdAt = ExportTimestampField(source="created_at")


class ExportedParticipantSerializer(serializers.Serializer):
    userId = ExportTextField(source="user_id", max_length=_max_length(Participant, "user_id"))
    name = ExportTextField(max_length=_max_length(Participant, "name"))
    joinedAt = ExportTimestampField(source="joined_at")
    cursorPosition = ExportObjectField(source="cursor_position", required=False, allow_null=True, default=None)
    # Optional: exports made before roles existed hold none, and their participants were candidates.
    role = serializers.ChoiceField(choices=Role.values, required=False, default=Role.CANDIDATE.value)


def _no_repeats(items: list[dict], key: str, where: str, label: str | None = None) -> None:
    seen = set()
    for index, item in enumerate(items):
        if item[key] in seen:
            raise serializers.ValidationError(f"{where}[{index}].{label or key} {item[key]!r} appears twice.")
        seen.add(item[key])


class ExportSerializer(serializers.Serializer):
    """A whole export (its `format` and `formatVersion` are checked before); validated, each
    part holds its model's field names (`source`), ready to make its rows."""

    session = ExportedSessionSerializer()
    snapshots = ExportedSnapshotSerializer(many=True)
    history = ExportedHistoryEntrySerializer(many=True)
    operations = ExportedOperationSerializer(many=True)
    participants = ExportedParticipantSerializer(many=True)
    checkpoints = ExportedCheckpointSerializer(many=True, required=False, default=list)
    # Only in an export asked for with the notes (`export_session --with-notes`).
    notes = ExportedNotesSerializer(required=False, allow_null=True, default=None)

    def validate(self, attrs: dict) -> dict:
        _no_repeats(attrs["snapshots"], "id", "snapshots")
        _no_repeats(attrs["operations"], "version", "operations")
        _no_repeats(attrs["checkpoints"], "version", "checkpoints")
        _no_repeats(attrs["participants"], "user_id", "participants", "userId")
        version = attrs["session"]["version"]
        for index, operation in enumerate(attrs["operations"]):
            if operation["version"] > version:
                raise serializers.ValidationError(
                    f"operations[{index}].version {operation['version']} is beyond the session's version {version}."
                )
        for index, checkpoint in enumerate(attrs["checkpoints"]):
            if checkpoint["version"] > version:
                raise serializers.ValidationError(
                    f"checkpoints[{index}].version {checkpoint['version']} is beyond the session's version {version}."
                )
        return attrs


def first_error(detail, where: str = "export") -> str:
    """The first message of a serializer's errors, with where it is: `snapshots[0].id: ...`."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            if value:
                if key == "non_field_errors":  # about the object at `where` as a whole
                    return first_error(value, "" if where == "export" else where)
                if isinstance(key, int):  # an item of a list, as DRF reports it
                    return first_error(value, f"{where}[{key}]")
                return first_error(value, f"{where}.{key}" if where and where != "export" else key)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if value:
                if isinstance(value, dict):
                    return first_error(value, f"{where}[{index}]")
                return first_error(value, where)
    return f"{where}: {detail}" if where else str(detail)


def export_check(data: dict) -> dict:
    """The validated export, or serializers.ValidationError."""
    serializer = ExportSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data

"""The shapes of the execution API."""

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from execution.runner import STATUSES
from sessions.models import Language
from sessions.serializers import BoundedTextField, code_field


class StrictNumberField(serializers.FloatField):
    """A number, not a numeric string or a boolean."""

    def to_internal_value(self, data):
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return super().to_internal_value(data)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Python with input",
            value={"code": "name = input()\nprint(f'hello {name}')\n", "language": "python", "stdin": "Ada\n"},
        )
    ]
)
class ExecutionRequestSerializer(serializers.Serializer):
    code = code_field()
    language = serializers.ChoiceField(choices=Language.values)
    stdin = BoundedTextField(limit_setting="MAX_STDIN_BYTES", label_text="stdin", required=False, default="")
    timeout = StrictNumberField(
        required=False,
        min_value=1,
        max_value=settings.EXECUTION_MAX_TIMEOUT,
        default=settings.EXECUTION_DEFAULT_TIMEOUT,
        help_text="Wall-time limit in seconds, 1 to 10 (default 5).",
    )
    sessionId = serializers.UUIDField(
        required=False, help_text="Record the run in this session's history and send it to its clients."
    )


class ExecutionResultSerializer(serializers.Serializer):
    success = serializers.BooleanField(help_text="True only for a normal exit with code 0 within the limits.")
    stdout = serializers.CharField(allow_blank=True)
    stderr = serializers.CharField(allow_blank=True)
    exitCode = serializers.IntegerField(
        allow_null=True, help_text="The exit status (128+N for signal N); null if the program did not end itself."
    )
    executionTime = serializers.IntegerField(help_text="Wall time in milliseconds.")
    error = serializers.CharField(allow_null=True, help_text="Null on success, else a short sentence.")
    status = serializers.ChoiceField(choices=STATUSES)
    truncated = serializers.BooleanField(help_text="Output was cut at the output limit.")

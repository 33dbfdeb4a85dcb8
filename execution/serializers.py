"""The shapes of the execution API."""

import dataclasses
import typing

from django.conf import settings
from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from execution.sandbox import ExecutionResult, Status
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


def _result_field(annotation, help_text: str) -> serializers.Field:
    """The schema of one ExecutionResult field, from its type."""
    kwargs = {"help_text": help_text} if help_text else {}
    nullable = type(None) in typing.get_args(annotation)
    base = next((t for t in typing.get_args(annotation) if t is not type(None)), annotation)
    if base is bool:
        return serializers.BooleanField(**kwargs)
    if base is int:
        return serializers.IntegerField(allow_null=nullable, **kwargs)
    if base is Status:
        return serializers.ChoiceField(choices=Status.values(), **kwargs)
    return serializers.CharField(allow_null=True, **kwargs) if nullable else serializers.CharField(allow_blank=True)


ExecutionResultSerializer = type(
    "ExecutionResultSerializer",
    (serializers.Serializer,),
    {
        "__module__": __name__,
        **{
            f.metadata["wire"]: _result_field(typing.get_type_hints(ExecutionResult)[f.name], f.metadata["help"])
            for f in dataclasses.fields(ExecutionResult)
        },
    },
)

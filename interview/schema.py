"""OpenAPI generation: the error shape, documented on every operation it can answer."""

from drf_spectacular.openapi import AutoSchema as BaseAutoSchema
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    error = serializers.CharField(help_text="Machine-readable code, e.g. SESSION_NOT_FOUND.")
    message = serializers.CharField()
    statusCode = serializers.IntegerField()
    detail = serializers.CharField(help_text="Repeats `message`; the client shows it.")
    fields = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        required=False,
        help_text="Validation errors by field (400 only).",
    )


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorSerializer, description=description)


# Errors any operation can answer whatever its own rules.
COMMON_ERRORS = {
    400: "Malformed JSON or invalid input.",
    404: "Unknown or expired session, or unknown route.",
    405: "Method not allowed.",
    406: "Not acceptable.",
    413: "Request body over the size limit.",
    415: "Unsupported media type (send application/json).",
    429: "Rate limit exceeded; see Retry-After.",
}


class AutoSchema(BaseAutoSchema):
    """drf-spectacular's schema with the common error responses added to each operation."""

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for code, text in COMMON_ERRORS.items():
            if str(code) not in responses:
                responses[str(code)] = self._get_response_for_code(error(text), str(code), direction=direction)
        return responses


def strip_optional_slash(endpoints, **kwargs):
    """Document the contract's paths (`/api/sessions`), not the router's `/api/sessions/`."""
    return [
        (path[:-1] if path.endswith("/") and path != "/" else path, regex, method, callback)
        for path, regex, method, callback in endpoints
    ]

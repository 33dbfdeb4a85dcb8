"""Service-level endpoints: the index and health."""

from django.conf import settings
from django.db import connection
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from interview import health


class IndexView(APIView):
    @extend_schema(
        tags=["meta"],
        summary="Service information",
        responses={
            200: inline_serializer(
                "Index",
                {"name": serializers.CharField(), "version": serializers.CharField(), "docs": serializers.CharField()},
            )
        },
    )
    def get(self, request):
        return Response({"name": settings.APP_NAME, "version": settings.APP_VERSION, "docs": "/docs"})


class HealthView(APIView):
    @extend_schema(
        tags=["meta"],
        summary="Health of the service and its database",
        responses={
            200: inline_serializer(
                "Health",
                {
                    "status": serializers.ChoiceField(choices=["healthy", "unhealthy"]),
                    "version": serializers.CharField(),
                    "timestamp": serializers.DateTimeField(),
                    "server": serializers.DictField(
                        help_text="The process that answered: workers, worker (1..workers, null for one"
                        " process), pid, channelLayer (redis or in-memory), database (its vendor)."
                    ),
                    "checks": serializers.DictField(),
                },
            ),
            503: inline_serializer(
                "Unhealthy",
                {
                    "status": serializers.ChoiceField(choices=["healthy", "unhealthy"]),
                    "version": serializers.CharField(),
                    "timestamp": serializers.DateTimeField(),
                    "server": serializers.DictField(
                        help_text="The process that answered: workers, worker (1..workers, null for one"
                        " process), pid, channelLayer (redis or in-memory), database (its vendor)."
                    ),
                    "checks": serializers.DictField(),
                },
            ),
        },
    )
    def get(self, request):
        body = health.report(connection)
        return Response(body, status=200 if body["status"] == "healthy" else 503)

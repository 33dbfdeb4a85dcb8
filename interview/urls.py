"""URL routes: the API under /api, service endpoints, docs, the replay page and the admin."""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularJSONAPIView, SpectacularRedocView, SpectacularSwaggerView

from interview.views import HealthView, IndexView
from sessions.views import session_replay

urlpatterns = [
    path("", IndexView.as_view(), name="index"),
    path("health", HealthView.as_view(), name="health"),
    path("api/health", HealthView.as_view(), name="api-health"),
    path("api/", include("sessions.urls")),
    path("api/", include("execution.urls")),
    # The interviewer's replay page (HTML, outside the API), with or without a trailing slash.
    re_path(r"^sessions/(?P<session_id>[^/]+)/replay/?$", session_replay, name="session-replay"),
    path("openapi.json", SpectacularJSONAPIView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    path("admin/", admin.site.urls),
]

handler400 = "interview.errors.handler400"
handler403 = "interview.errors.handler403"
handler404 = "interview.errors.handler404"
handler500 = "interview.errors.handler500"

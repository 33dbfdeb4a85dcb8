"""REST routes of execution under /api."""

from django.urls import re_path

from execution.apis import ExecuteView

urlpatterns = [re_path(r"^execute/?$", ExecuteView.as_view(), name="execute")]

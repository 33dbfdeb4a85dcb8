"""REST routes of execution under /api."""

urlpatterns: list = []

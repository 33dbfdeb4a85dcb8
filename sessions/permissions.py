"""Who may do what to a session, as DRF permission classes."""

from django.contrib.auth import get_user
from rest_framework.authentication import SessionAuthentication
from rest_framework.permissions import BasePermission

from interview.errors import ApiError
from sessions import services


class IsSessionOwner(BasePermission):
    """The session's owner token (`Authorization: Bearer <ownerToken>`), or a staff user logged
    in to the admin (CSRF-checked). 401 without either, 403 with a token that does not match."""

    def has_object_permission(self, request, view, obj) -> bool:
        scheme, _, token = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            if services.session_owner_check(session=obj, token=token.strip()):
                return True
            raise ApiError(403, "FORBIDDEN", "The owner token does not match this session.")
        # The API authenticates nobody (DRF has set request.user to None), so read the
        # admin login from Django's session, and demand CSRF as any cookie login must.
        user = get_user(request._request)
        if user.is_active and user.is_staff:
            SessionAuthentication().enforce_csrf(request)
            return True
        # Raised rather than returned: with no authenticators DRF would answer 403, not 401.
        what = getattr(view, "owner_only", {}).get(getattr(view, "action", None), "This")
        message = f"{what} needs the session's owner token: Authorization: Bearer <ownerToken>."
        raise ApiError(401, "UNAUTHORIZED", message)

"""The sessions app's domain errors: plain exceptions, mapped to HTTP only at the API edge."""


class SessionNotFound(Exception):
    """The session does not exist or has expired (the API answers 404 SESSION_NOT_FOUND)."""

    default_message = "Session not found or expired."

    def __init__(self, message: str | None = None):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message


class OwnerTokenMismatch(Exception):
    """An owner token was given and is not the session's; whatever it came with was refused."""


class InvalidChange(Exception):
    """A change that cannot be applied (bad ranges, too large); nothing was changed."""


class ResyncRequired(Exception):
    """The change's base version is older than the changes kept for rebasing."""

    def __init__(self, code: str, version: int):
        super().__init__("Base version is too old; resync with the current document.")
        self.code = code
        self.version = version


class Deferred(Exception):
    """A change left for a later round: this round's rebase work is spent. Nothing was changed."""


class VersionNotFound(Exception):
    """A version the document has not reached (the API answers 404 VERSION_NOT_FOUND)."""


class VersionNotKept(Exception):
    """A version older than the oldest the session's log still rebuilds (410 VERSION_NOT_KEPT)."""

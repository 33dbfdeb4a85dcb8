"""Pages the server renders itself, outside the API: the interviewer's replay of a session."""

from django.shortcuts import render

from interview.errors import error_response
from sessions import selectors
from sessions.exceptions import SessionNotFound

# The page runs its own script and style files only: no inline script, nothing from elsewhere,
# and it calls nothing but this server's API.
REPLAY_CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)


def session_replay(request, session_id):
    """The replay page of a live session; an unknown, expired or deleted one is the API's 404.

    The page holds no secret: the owner token stays in the URL's fragment, which browsers
    never send, and the script sends it to the notes API only."""
    if request.method not in ("GET", "HEAD"):
        response = error_response(405, "METHOD_NOT_ALLOWED", f'Method "{request.method}" not allowed.')
        response["Allow"] = "GET, HEAD"
        return response
    try:
        session = selectors.session_get(session_id=session_id)
    except SessionNotFound as exc:
        return error_response(404, "SESSION_NOT_FOUND", exc.message)
    response = render(request, "sessions/replay.html", {"session": session})
    response["Content-Security-Policy"] = REPLAY_CONTENT_SECURITY_POLICY
    return response

"""The requests the ASGI edge answers itself (`interview.fastlane`): GET a session's code,
save code (POST code) and create a session (POST), the three the REST mix is made of, and
the two other reads of a live session (GET the session, GET its participants).

Each does what its view does, with the view's own parts: the same serializers to validate,
the same `sessions.answers` to do the work and build the answer, DRF's JSON parser and
renderer, the same rate-limit class. Where the view would answer anything but its success (a body that does not
validate, a limit reached, an unknown session, a change the document refuses) the answer
is None and Django answers instead, from the start: nothing was written (a refused write
rolled back), and a rate limit counted here is not counted again (`EdgeRequest.counted`).

Everything runs on the HTTP threads (`interview.handler`), where the views run, in the
order it arrives; reads of one moment go together (`Batcher`: the GETs of many clients in
one turn of the event loop are one statement and one thread hop). A reader thread of their
own, so that reads never wait behind a save, measured worse: with reads that cheap, the
clients of the REST mix all ended up queued behind the saves (p99 154-166 ms against 71-84
ms on the shared threads, and 1.43-1.50 against 1.26-1.42 ms of CPU per request).
"""

import io
import re
from concurrent.futures import Executor

from channels.db import database_sync_to_async
from rest_framework.exceptions import ParseError
from rest_framework.renderers import JSONRenderer

from interview.batching import Batcher
from interview.fastlane import EdgeRequest, Route
from interview.parsers import SafeJSONParser
from interview.throttling import ScopedAddressThrottle
from sessions import answers, selectors, serializers
from sessions.exceptions import InvalidChange, SessionNotFound

_renderer = JSONRenderer()
_parser = SafeJSONParser()


def _code_answers(session_ids: list) -> list[bytes | None]:
    return [
        None if state is None else _renderer.render(serializers.CodeSerializer(state).data)
        for state in selectors.code_states(session_ids=session_ids)
    ]


def _one_by_one(answer):
    """A batch function of `answer` (a live session -> its answer's data): one body per
    session id, None for an unknown one."""

    def bodies(session_ids: list) -> list[bytes | None]:
        out = []
        for session_id in session_ids:
            try:
                out.append(_renderer.render(answer(selectors.session_get(session_id=session_id))))
            except SessionNotFound:
                out.append(None)
        return out

    return bodies


def _params(serializer_class, request: EdgeRequest):
    """The validated body, as the view's serializer gives it, or None (Django's way)."""
    if request.body:
        try:
            data = _parser.parse(io.BytesIO(request.body), "application/json", {"encoding": "utf-8"})
        except ParseError:
            return None
    else:
        data = {}  # DRF's `request.data` of an empty body
    params = serializer_class(data=data)
    return params.validated_data if params.is_valid() else None


def _allowed(scope: str, request: EdgeRequest) -> bool:
    """The view's rate limit, counted here (and then not again by Django)."""
    if not ScopedAddressThrottle(scope).allow_request(request, None):
        return False
    request.counted.add(scope)
    return True


def _code_save(session_id: str, request: EdgeRequest) -> bytes | None:
    """POST /api/sessions/{id}/code, as `SessionViewSet.code` saves."""
    params = _params(serializers.CodeSaveSerializer, request)
    if params is None or not _allowed("code_save", request):
        return None
    try:
        return _renderer.render(answers.code_saved(session_id, params))
    except (SessionNotFound, InvalidChange):
        return None


def _session_create(_value: str, request: EdgeRequest) -> bytes | None:
    """POST /api/sessions, as `SessionViewSet.create` creates one."""
    params = _params(serializers.SessionCreateSerializer, request)
    if params is None or not _allowed("session_create", request):
        return None
    return _renderer.render(answers.session_created(params))


def _reads(answers, executor: Executor):
    """A route's `answer` for a read: the session id, batched with the reads of the moment."""
    batcher = Batcher(answers, executor=executor)

    def read(session_id: str, _request: EdgeRequest):
        return batcher(session_id)

    return read


def routes(executor: Executor) -> list[Route]:
    """The routes, run on `executor` (the HTTP threads of `interview.handler`).
    Paths as the router has them (sessions/urls.py): an id without a slash, an optional
    trailing slash."""

    def on_http_thread(fn):
        return database_sync_to_async(fn, thread_sensitive=False, executor=executor)

    def reads(answers):
        return _reads(answers, executor)

    session, code = re.compile(r"/api/sessions/([^/]+?)/?"), re.compile(r"/api/sessions/([^/]+)/code/?")
    participants = re.compile(r"/api/sessions/([^/]+)/participants/?")
    return [
        Route("session-code", "GET", code, reads(_code_answers)),
        Route("session", "GET", session, reads(_one_by_one(answers.session_answer))),
        Route("session-participants", "GET", participants, reads(_one_by_one(answers.participants_answer))),
        Route("session-code-save", "POST", code, on_http_thread(_code_save), body=True),
        Route("session-create", "POST", re.compile(r"/api/sessions(/?)"), on_http_thread(_session_create), 201, True),
    ]

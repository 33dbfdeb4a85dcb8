"""The reads the ASGI edge answers itself (`interview.fastlane`): GET a session's code.

The body is what the view answers: the same serializer, rendered by DRF's JSON renderer.
Reads of one moment go to the database together (`Batcher`: the GETs of many clients in
one turn of the event loop are one statement and one thread hop) on a reader thread of
their own, so they never wait behind a save on the HTTP threads.
"""

import re
from concurrent.futures import ThreadPoolExecutor

from rest_framework.renderers import JSONRenderer

from interview.batching import Batcher
from interview.fastlane import Route
from sessions import selectors, serializers

_renderer = JSONRenderer()


def _code_answers(session_ids: list) -> list[bytes | None]:
    return [
        None if state is None else _renderer.render(serializers.CodeSerializer(state).data)
        for state in selectors.code_states(session_ids=session_ids)
    ]


_reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="http-reader")
_read_code = Batcher(_code_answers, executor=_reader)

# The router's pattern (sessions/urls.py): any id but a slash, an optional trailing slash.
CODE = Route("session-code", re.compile(r"/api/sessions/([^/]+)/code/?"), _read_code)
ROUTES = [CODE]

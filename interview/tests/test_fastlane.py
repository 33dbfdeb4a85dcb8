"""The fast lane (interview/fastlane.py): a GET of a session's code answered at the edge
with exactly Django's answer, and every request it cannot be sure of left to Django."""

import asyncio
import datetime
import json
import re

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import override_settings
from django.utils import timezone

from interview.fastlane import FastLane, Route
from interview.handler import PooledSyncASGIHandler
from interview.middleware import BodyLengthMiddleware
from interview.testing import RunningServer, http_call, http_request
from sessions.fast_lane import routes
from sessions.models import InterviewSession
from sessions.tests.factories import participant_make, session_make

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = "http://localhost:3001"  # in the default CORS_ORIGINS


def _scope(path: str, *, method: str = "GET", query: bytes = b"", headers=(), root_path: str = "") -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1:3000"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 3000),
    }


async def _call(app, scope: dict, body: bytes = b"") -> tuple[int, list, bytes]:
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = sent[0]
    return (
        start["status"],
        [(bytes(n), bytes(v)) for n, v in start["headers"]],
        b"".join(m.get("body", b"") for m in sent[1:]),
    )


@pytest.fixture(autouse=True)
async def _close_async_orm_connection():
    """The async ORM's calls run on one shared thread: its connection closed after each test."""
    yield
    await sync_to_async(lambda: connection.close())()


@pytest.fixture
def apps():
    """The fast lane in front of Django's handler, and the same handler alone."""
    handler = PooledSyncASGIHandler(threads=1)
    django_only = BodyLengthMiddleware(handler)
    yield FastLane(django_only, routes(handler.executor)), django_only
    handler.executor.submit(lambda: connection.close()).result()  # the pool thread's own connection
    handler.executor.shutdown(wait=True)


async def _in_thread(fn, *args, **kwargs):
    """`fn` on a thread of its own, whose database connection it closes (PostgreSQL's test
    database cannot be dropped while a thread holds one)."""

    def run():
        try:
            return fn(*args, **kwargs)
        finally:
            connection.close()

    return await asyncio.to_thread(run)


def _code_path(session) -> str:
    return f"/api/sessions/{session.id}/code"


HEADER_SETS = {
    "plain": [],
    "allowed origin": [(b"origin", ORIGIN.encode())],
    "other origin": [(b"origin", b"http://evil.example")],
    "json accepted": [(b"accept", b"application/json")],
    "html only accepted": [(b"accept", b"text/html")],  # DRF answers 406
    "bad host": [],  # the host replaced below: Django answers 400
    "browser-like": [(b"user-agent", b"Mozilla/5.0"), (b"accept-language", b"en"), (b"cookie", b"a=b")],
}


READS = {
    "code": "/api/sessions/{}/code",
    "session": "/api/sessions/{}",
    "session, slash": "/api/sessions/{}/",
    "participants": "/api/sessions/{}/participants/",
}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("name", list(HEADER_SETS))
async def test_the_answer_is_djangos_byte_for_byte(apps, name, read):
    """Every read, every header set: the first answer (Django's), the second (the fast
    lane's where it serves) and Django's own alone are the same status, headers and body."""
    fast, django_only = apps
    code = 'print("é \u2028 😀 \\u0000")\n\ttabs\r\n'
    session = await _in_thread(session_make, code=code, language="python", title="Tï 😀")
    await _in_thread(participant_make, session, "u1", "Ann 😀", live=1, cursor={"line": 1, "column": 2})
    await _in_thread(participant_make, session, "u2", "Gone", stale=1)
    await _in_thread(participant_make, session, "u3", "Bob", live=2, role="interviewer")
    scope = _scope(READS[read].format(session.id), headers=HEADER_SETS[name])
    if name == "bad host":
        scope["headers"] = [(b"host", b"evil.example")]
    first = await _call(fast, scope)
    second = await _call(fast, scope)
    alone = await _call(django_only, scope)
    assert first == second == alone
    served = 1 if first[0] == 200 else 0
    assert fast.served == served
    if first[0] == 200:
        answer = json.loads(first[2])
        if read == "code":
            stored = await InterviewSession.objects.aget(pk=session.pk)
            assert answer["code"] == stored.code and "😀" in stored.code
        elif read == "participants":
            assert [p["userId"] for p in answer["participants"]] == ["u1", "u3"]
        else:
            assert answer["activeParticipants"] == 2
        if name == "allowed origin":
            assert (b"access-control-allow-origin", ORIGIN.encode()) in first[1]


async def test_every_language_and_a_fresh_save_are_read_as_django_reads_them(apps):
    fast, django_only = apps
    sessions = [
        await _in_thread(session_make, language=lang, code=f"// {lang}\n")
        for lang in ("python", "javascript", "java", "cpp")
    ]
    for session in sessions:
        await _call(fast, _scope(_code_path(session)))  # learn (once is enough for all)
    for session in sessions:
        assert await _call(fast, _scope(_code_path(session))) == await _call(django_only, _scope(_code_path(session)))
    assert fast.served == 3 + 4  # all but the very first read were the fast lane's
    # A save, then a read through the fast lane: the read sees it.
    path = _code_path(sessions[0])
    version = json.loads((await _call(fast, _scope(path)))[2])["version"]
    body = json.dumps({"code": "saved = True\n", "language": "python"}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    status, _, _ = await _call(fast, _scope(path, method="POST", headers=headers), body)
    assert status == 200
    before = fast.served
    status, _, answer = await _call(fast, _scope(path))
    assert (status, fast.served) == (200, before + 1)
    assert json.loads(answer)["code"] == "saved = True\n"
    assert json.loads(answer)["version"] == version + 1


async def test_what_it_cannot_be_sure_of_goes_to_django(apps):
    """A query, HEAD, a body, a script prefix, an unknown, malformed or expired session:
    Django answers, as it would alone (the errors in the contract's shape)."""
    fast, django_only = apps
    live = await _in_thread(session_make, code="x = 1\n")
    expired = await _in_thread(session_make, code="old\n")
    await InterviewSession.objects.filter(pk=expired.pk).aupdate(
        expires_at=timezone.now() - datetime.timedelta(seconds=1)
    )
    await _call(fast, _scope(_code_path(live)))  # learned: the fast lane would serve a plain GET
    cases = [
        _scope(_code_path(live), query=b"version=0"),
        _scope(_code_path(live), method="HEAD"),
        _scope(_code_path(live), headers=[(b"content-length", b"2")]),
        _scope(_code_path(live), headers=[(b"transfer-encoding", b"chunked")]),
        _scope("/prefix" + _code_path(live), root_path="/prefix"),
        _scope(_code_path(expired)),
        _scope("/api/sessions/00000000-0000-0000-0000-000000000000/code"),
        _scope("/api/sessions/not-a-uuid/code"),
    ]
    for scope in cases:
        body = b"{}" if any(n == b"content-length" for n, _ in scope["headers"]) else b""
        assert await _call(fast, scope, body) == await _call(django_only, scope, body), scope
    assert fast.served == 0
    status, _, answer = await _call(fast, _scope(_code_path(expired)))
    assert status == 404 and json.loads(answer)["error"] == "SESSION_NOT_FOUND"


async def test_learned_header_sets_are_bounded_least_recently_used_first(apps):
    _, django_only = apps
    fast = FastLane(django_only, routes(django_only.application.executor), templates=2)
    session = await _in_thread(session_make, code="x\n")
    by_agent = {n: _scope(_code_path(session), headers=[(b"x-client", f"c{n}".encode())]) for n in range(3)}
    for n in (0, 1):
        await _call(fast, by_agent[n])
    await _call(fast, by_agent[0])  # 0 served: now the most recently used
    assert fast.served == 1
    await _call(fast, by_agent[2])  # learned; 1 is dropped
    assert len(fast.templates) == 2
    await _call(fast, by_agent[1])  # through Django again
    assert fast.served == 1
    await _call(fast, by_agent[2])
    assert fast.served == 2


async def test_an_answer_with_a_cookie_or_etag_is_never_learned():
    """Headers that belong to one answer would be wrong on the next: such answers are not kept."""
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])
        headers = [(b"Content-Type", b"application/json"), (b"Content-Length", b"2"), *scope["extra"]]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"{}"})

    async def read(_value, _request):
        return b'{"fast":true}'

    fast = FastLane(app, [Route("r", "GET", re.compile(r"/r/([^/]+)"), read)])
    for extra in ([(b"Set-Cookie", b"a=b")], [(b"ETag", b'"1"')]):
        scope = {**_scope("/r/1"), "extra": extra}
        for _ in range(2):
            assert (await _call(fast, scope))[2] == b"{}"
    assert fast.served == 0 and len(calls) == 4
    scope = {**_scope("/r/1"), "extra": [(b"Vary", b"origin")]}
    assert [(await _call(fast, scope))[2] for _ in range(2)] == [b"{}", b'{"fast":true}']


@override_settings(FAST_LANE_TEMPLATES=0)
async def test_no_header_sets_kept_means_every_request_goes_to_django(apps):
    _, django_only = apps
    fast = FastLane(django_only, routes(django_only.application.executor))
    session = await _in_thread(session_make, code="x\n")
    for _ in range(3):
        assert (await _call(fast, _scope(_code_path(session))))[0] == 200
    assert fast.served == 0


def test_on_the_real_server_reads_answer_like_django_and_follow_saves(tmp_path):
    """`make run`'s server: the fast lane's answers (counted in /health) have the status,
    headers and body of a server without it, and a save over REST is in the next read."""
    seen = {}
    for name, env in (("fast", {}), ("slow", {"FAST_LANE": "false"})):
        (tmp_path / name).mkdir()
        with RunningServer(tmp_path / name, env=env) as server:
            sid = http_call(f"{server.url}/api/sessions", "POST", {"language": "python"})[1]["sessionId"]
            code_url = f"{server.url}/api/sessions/{sid}/code"
            http_call(code_url, "POST", {"code": "a = '\u2028 😀'\n"})
            reads = [http_request(code_url) for _ in range(3)]
            http_call(code_url, "POST", {"code": "b = 2\n"})
            reads.append(http_request(code_url))
            lane = http_call(f"{server.url}/health")[1]["checks"]["http"]["fastLane"]
            seen[name] = (lane, [_comparable(read, sid) for read in reads])
    (fast_lane, fast_reads), (slow_lane, slow_reads) = seen["fast"], seen["slow"]
    # Learned: the create, the first save, the first read; the rest answered by the fast lane.
    assert fast_lane == {"enabled": True, "served": 4, "headerSets": 3}
    assert slow_lane == {"enabled": False, "served": 0, "headerSets": 0}
    assert fast_reads == slow_reads
    assert [json.loads(body)["code"] for _, _, body in fast_reads] == ["a = '\u2028 😀'\n"] * 3 + ["b = 2\n"]


def _comparable(read, sid: str):
    """A read with what differs between two servers (the id, the times) taken out."""
    status, headers, raw = read
    text = raw.decode().replace(sid, "ID").replace(json.loads(raw)["lastModified"], "T")
    return status, [(k, v) for k, v in headers.items() if k.lower() != "date"], text.encode()


# --- Writes: saving code and creating a session ------------------------------------------

_VARYING = ("sessionId", "snapshotId", "savedAt", "createdAt", "expiresAt", "ownerToken", "url", "lastModified")


def _post(path: str, body: bytes | None, *, client: str = "10.1.0.1", content_type=b"application/json") -> dict:
    headers = [] if content_type is None else [(b"content-type", content_type)]
    if body is not None:
        headers.append((b"content-length", str(len(body)).encode()))
    scope = _scope(path, method="POST", headers=headers)
    scope["client"] = (client, 40000)
    return scope


def _normal(answer: tuple[int, list, bytes]) -> tuple:
    """An answer with what two sessions' answers differ in (ids, times, tokens) taken out."""
    status, headers, raw = answer
    body = json.loads(raw)
    if isinstance(body, dict):
        for key in _VARYING:
            if key in body:
                body[key] = type(body[key]).__name__
    return status, [h for h in headers if h[0].lower() != b"content-length"], body


CODE_BODIES = [
    b'{"code": "print(1)\\n"}',
    b'{"code": "x = \\"\\u00e9 \\u2028 \\ud83d\\ude00\\"\\n", "language": "python"}',
    b'{"code": "print(1)\\n"}',  # the same code again: no change, still a snapshot
    b'{"code": "int main() {}\\n", "language": "cpp", "extra": 1}',
    b'{"code": 5}',
    b'{"language": "python"}',
    b'{"code": "x", "language": "cobol"}',
    b'{"code": "x", "language": null}',
    b'{"code": null}',
    b'{"code": "unterminated',
    b'{"code": NaN}',
    b"[1, 2]",
    b"",
    b"[" * 5000 + b"]" * 5000,
    json.dumps({"code": "y" * 300_000}).encode(),  # over MAX_CODE_BYTES
]


async def test_saves_answer_and_change_what_djangos_do(apps):
    """Each body saved to one session through the fast lane and to a twin through Django
    alone: the same answers, and the twins hold the same code, language and version after
    each (every body twice, so the fast lane has learned by the second round)."""
    fast, django_only = apps
    one, twin = [await _in_thread(session_make, language="javascript", code="start\n") for _ in range(2)]
    for _ in range(2):
        for body in CODE_BODIES:
            mine = await _call(fast, _post(_code_path(one), body), body)
            theirs = await _call(django_only, _post(_code_path(twin), body), body)
            assert _normal(mine) == _normal(theirs), body[:80]
            a, b = [await InterviewSession.objects.aget(pk=s.pk) for s in (one, twin)]
            assert (a.code, a.language, a.version) == (b.code, b.language, b.version)
    assert fast.served == 3 + 4  # the valid saves but the very first (Django's, learned)
    # A save to an unknown session, or with another content type, is Django's.
    served = fast.served
    unknown = "/api/sessions/00000000-0000-0000-0000-000000000000/code"
    body = CODE_BODIES[0]
    assert _normal(await _call(fast, _post(unknown, body), body)) == _normal(
        await _call(django_only, _post(unknown, body), body)
    )
    for content_type in (None, b"text/plain", b"application/json; charset=latin-1"):
        for _ in range(2):  # the second time too: such a request is never the fast lane's
            scope = _post(_code_path(one), body, content_type=content_type)
            assert _normal(await _call(fast, scope, body)) == _normal(await _call(django_only, dict(scope), body))
    assert fast.served == served


async def test_a_body_without_a_json_content_type_is_djangos(apps):
    """Without a Content-Type DRF reads an empty body as `{}` (201) and refuses any other
    (415): after an empty create has been answered, one with a body is still refused."""
    fast, django_only = apps
    for body, status in ((b"", 201), (b'{"language": "python"}', 415), (b"", 201), (b'{"language": "python"}', 415)):
        mine = await _call(fast, _post("/api/sessions", body, content_type=None), body)
        theirs = await _call(django_only, _post("/api/sessions", body, content_type=None), body)
        assert _normal(mine) == _normal(theirs)
        assert mine[0] == status
    assert fast.served == 0


SESSION_BODIES = [
    b"{}",
    b'{"language": "python", "title": "Two sum", "expiresIn": 2}',
    b'{"language": "cobol"}',
    b'{"title": 7}',
    b'{"expiresIn": 100000}',
    b'{"title": "' + b"t" * 500 + b'"}',
    b"not json",
    b"",
]


async def test_creates_answer_what_djangos_do(apps):
    fast, django_only = apps
    for _ in range(2):
        for body in SESSION_BODIES:
            mine = await _call(fast, _post("/api/sessions", body), body)
            theirs = await _call(django_only, _post("/api/sessions", body), body)
            assert _normal(mine) == _normal(theirs), body
            if mine[0] == 201:
                created = await InterviewSession.objects.aget(pk=json.loads(mine[2])["sessionId"])
                expected = json.loads(theirs[2])
                assert (created.language, created.title) == (expected["language"], expected["title"])
    assert fast.served == 2 + 3  # the valid creates ({}, the full one, no body) but the very first
    assert await InterviewSession.objects.acount() == 12


async def test_rate_limits_count_once_and_refuse_as_django_does(apps):
    """At "3/minute" for saves: a save to an unknown session (404) counts, as it does in
    Django, but once; the fourth request is refused with Django's 429."""
    fast, django_only = apps
    session = await _in_thread(session_make, code="x\n")
    body = CODE_BODIES[0]
    await _call(fast, _post(_code_path(session), body, client="10.2.0.1"), body)  # learned (another address)
    unknown = "/api/sessions/00000000-0000-0000-0000-000000000000/code"
    with override_settings(RATE_LIMITS={"code_save": "3/minute", "session_create": "3/minute"}):
        answers = [
            await _call(fast, _post(path, body, client="10.2.0.2"), body)
            for path in (unknown, _code_path(session), _code_path(session), _code_path(session))
        ]
        refused_by_django = await _call(django_only, _post(_code_path(session), body, client="10.2.0.2"), body)
    assert [status for status, _, _ in answers] == [404, 200, 200, 429]
    assert fast.served == 2
    assert answers[3][0] == refused_by_django[0] == 429
    assert json.loads(answers[3][2])["error"] == json.loads(refused_by_django[2])["error"]
    assert dict(answers[3][1]).get(b"Retry-After") is not None


async def test_a_route_that_fails_leaves_the_request_to_django(caplog):
    """An answer that raises (a database that fails, say) is Django's to give, and logged."""

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"Content-Length", b"9")]})
        await send({"type": "http.response.body", "body": b"by django"})

    async def broken(_value, _request):
        raise RuntimeError("database gone")

    fast = FastLane(app, [Route("r", "GET", re.compile(r"/r/([^/]+)"), broken)])
    answers = [(await _call(fast, _scope("/r/1")))[2] for _ in range(2)]  # learned, then the route fails
    assert answers == [b"by django", b"by django"]
    assert fast.served == 0
    assert "could not answer GET /r/1" in caplog.text

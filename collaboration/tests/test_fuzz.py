"""WebSocket fuzzing: random, malformed, huge, binary and ill-typed frames never break the server."""

import asyncio
import json
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collaboration.tests.helpers import get_document
from collaboration.writer import get_writer
from interview.asgi import application
from interview.testing import PatientCommunicator
from sessions.tests.factories import session_make

pytestmark = pytest.mark.django_db(transaction=True)

FRAME_LIMIT = 2000
TYPES = ["join", "ping", "code-update", "cursor-position", "language-change"]

# Plain text, plus what JSON can carry but a database cannot keep: NUL and lone surrogates.
texts = st.text(max_size=20) | st.sampled_from(["\x00", "a\x00", "\ud800", "x\udfff", "😀"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
changes = st.lists(
    st.dictionaries(st.sampled_from(["from", "to", "insert"]), json_values | st.integers(-5, 50), max_size=3),
    min_size=1,
    max_size=4,
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from([*TYPES, "dance", ""])},
    optional={
        "userId": json_values,
        "timestamp": json_values,
        "data": json_values
        | st.fixed_dictionaries(
            {},
            optional={
                "code": json_values,
                "changes": changes | json_values,
                "version": json_values | st.integers(-3, 10),
                "seq": json_values,
                "name": json_values,
                "line": json_values,
                "column": json_values,
                "language": json_values | st.sampled_from(["python", "java"]),
            },
        ),
    },
)
frames = st.one_of(
    st.text(max_size=300).map(lambda t: ("text", t)),
    json_values.map(lambda v: ("text", json.dumps(v))),
    messages.map(lambda m: ("text", json.dumps(m))),
    st.binary(max_size=300).map(lambda b: ("bytes", b)),
    st.integers(FRAME_LIMIT + 1, FRAME_LIMIT * 3).map(
        lambda n: ("text", json.dumps({"type": "code-update", "data": {"code": "x" * n, "changes": []}}))
    ),
)


async def barrier(communicator, replies: list[dict]) -> None:
    """Send a frame whose answer is unique (an unknown type names itself) and collect every
    other message until that answer: everything the server sent before it."""
    tag = f"barrier-{uuid.uuid4().hex[:8]}"
    await communicator.send_json_to({"type": tag})
    while True:
        message = await communicator.receive_json_from(timeout=15)
        if message["type"] == "error" and tag in message["data"]["message"]:
            return
        replies.append(message)


async def exchange(communicator, kind, payload) -> list[dict]:
    """Send a frame and return every answer to it (pongs aside), waiting for events only: the
    frame was handled (a barrier), any change it handed the writer was committed and answered
    (the writer is idle), and that answer was delivered (a second barrier)."""
    # Raw ASGI input: the communicator's helper refuses empty frames, which clients can send.
    await communicator.send_input({"type": "websocket.receive", kind: payload})
    replies: list[dict] = []
    await barrier(communicator, replies)
    await get_writer().idle()
    await barrier(communicator, replies)
    pongs = [reply for reply in replies if reply["type"] == "pong"]
    assert len(pongs) <= 1  # one, if the frame was a valid ping
    return [reply for reply in replies if reply["type"] != "pong"]


@pytest.fixture
def fuzz_session(transactional_db):
    return session_make(language="python", code="def f():\n    return '😀'\n")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(frames, min_size=1, max_size=12))
def test_random_frames_are_answered_and_change_nothing_invalid(fuzz_session, batch, settings_override):
    """Every frame gets a proper answer; invalid ones change nothing; the connection stays usable."""

    async def drive():
        communicator = PatientCommunicator(application, f"/ws/sessions/{fuzz_session.id}")
        connected, _ = await communicator.connect()
        assert connected
        welcome = await communicator.receive_json_from()
        assert welcome["type"] == "welcome"
        for kind, payload in batch:
            before = await get_document(fuzz_session.id)
            replies = await exchange(communicator, kind, payload)
            after = await get_document(fuzz_session.id)
            for reply in replies:
                assert reply["type"] in {"error", "code-ack", "user-joined", "language-changed"}, reply
                if reply["type"] == "error":
                    assert reply["data"]["code"] in {"INVALID_MESSAGE", "RESYNC_REQUIRED"}, reply
            if any(r["type"] == "error" for r in replies):
                assert after == before
        # Still alive and answering.
        await communicator.send_json_to({"type": "ping"})
        assert (await communicator.receive_json_from(timeout=5))["type"] == "pong"
        await communicator.disconnect()

    asyncio.run(drive())


@pytest.fixture
def settings_override(settings):
    settings.WS_MAX_MESSAGE_BYTES = FRAME_LIMIT
    settings.WS_RATE_LIMIT_BURST = 100_000
    settings.WS_RATE_LIMIT_PER_SECOND = 100_000
    return settings

"""Property: OT clients editing through the real document service (database, batches, cache) converge."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collaboration.tests.otclient import OTClient, boundaries
from sessions.models import DocumentOperation, InterviewSession
from sessions.services import CodeChange, CodeChangeResult, code_changes_apply
from sessions.tests.factories import session_make

pytestmark = pytest.mark.django_db

INSERTS = ["a", "bc", "😀", "𝄞x", "\n", ""]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_three_clients_converge_through_the_service(db, data):
    """Random edits, batches and delivery orders: every client ends with the stored text and version."""
    session = session_make(code="ab😀c\n")
    row = InterviewSession.objects.get(pk=session.id)
    clients = [OTClient(row.code, row.version) for _ in range(3)]
    inbox: list[list[tuple]] = [[] for _ in clients]  # per client, FIFO: ("remote", changes, v) | ("ack", v)
    outbox: list[tuple[int, dict]] = []  # submissions waiting for the server, in arrival order

    def send(index, message):
        if message is not None:
            outbox.append((index, message))

    def serve(count):
        batch, outbox[:] = outbox[:count], outbox[count:]
        results = code_changes_apply(
            submissions=[
                (
                    session.id,
                    CodeChange(changes=m["changes"], base_version=m["version"], user_id=f"u{i}", seq=m["seq"]),
                )
                for i, m in batch
            ],
            notify=False,
        )
        for (index, _), result in zip(batch, results, strict=True):
            assert isinstance(result, CodeChangeResult), result
            for other in range(len(clients)):
                if other != index:
                    inbox[other].append(("remote", result.changes, result.version))
            inbox[index].append(("ack", result.version))

    for _ in range(data.draw(st.integers(5, 60), label="steps")):
        action = data.draw(st.sampled_from(["edit", "serve", "deliver"]), label="action")
        if action == "edit":
            index = data.draw(st.integers(0, 2), label="client")
            offsets = boundaries(clients[index].text)
            start = data.draw(st.sampled_from(offsets), label="from")
            end = data.draw(st.sampled_from([o for o in offsets if o >= start][:4]), label="to")
            insert = data.draw(st.sampled_from(INSERTS), label="insert")
            if start == end and not insert:
                continue
            send(index, clients[index].edit([{"from": start, "to": end, "insert": insert}]))
        elif action == "serve" and outbox:
            serve(data.draw(st.integers(1, len(outbox)), label="batch"))
        elif action == "deliver":
            index = data.draw(st.integers(0, 2), label="to client")
            if inbox[index]:
                message = inbox[index].pop(0)
                if message[0] == "remote":
                    clients[index].remote(message[1], message[2])
                else:
                    send(index, clients[index].ack(message[1]))

    # Quiesce: serve everything, deliver everything, until nothing moves.
    while outbox or any(inbox):
        if outbox:
            serve(len(outbox))
        for index, queue in enumerate(inbox):
            while queue:
                message = queue.pop(0)
                if message[0] == "remote":
                    clients[index].remote(message[1], message[2])
                else:
                    send(index, clients[index].ack(message[1]))

    row = InterviewSession.objects.get(pk=session.id)
    assert [c.text for c in clients] == [row.code] * 3
    assert [c.version for c in clients] == [row.version] * 3
    assert DocumentOperation.objects.filter(session_id=session.id).count() == row.version

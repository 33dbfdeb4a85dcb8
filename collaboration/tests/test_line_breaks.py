"""Line breaks in deltas: the server holds each insert as CodeMirror does (\\n only), so editors and server agree."""

import pytest
from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collaboration.tests.cmclient import CodeMirrorClient
from collaboration.tests.helpers import close_all, join, receive_type
from collaboration.tests.otclient import boundaries
from sessions.models import DocumentOperation, InterviewSession
from sessions.services import CodeChange, CodeChangeResult, code_changes_apply
from sessions.tests.factories import session_make

INSERTS = ["a", "A\r\nB\rC", "\r\n", "\r", "x\r", "\ny\r\r\n", "😀\r", "\n", ""]


class Server:
    """The real document service with CodeMirror clients around it; deliveries are explicit."""

    def __init__(self, code: str, clients: int):
        self.session = session_make(code=code)
        row = self.row()
        self.clients = [CodeMirrorClient(row.code, row.version) for _ in range(clients)]
        self.inbox: list[list[tuple]] = [[] for _ in self.clients]  # per client, FIFO
        self.outbox: list[tuple[int, dict]] = []  # waiting for the server, in arrival order

    def row(self) -> InterviewSession:
        return InterviewSession.objects.get(pk=self.session.id)

    def send(self, index: int, message: dict | None) -> None:
        if message is not None:
            self.outbox.append((index, message))

    def serve(self, count: int) -> None:
        batch, self.outbox[:] = self.outbox[:count], self.outbox[count:]
        results = code_changes_apply(
            submissions=[
                (
                    self.session.id,
                    CodeChange(changes=m["changes"], base_version=m["version"], user_id=f"u{i}", seq=m["seq"]),
                )
                for i, m in batch
            ],
            notify=False,
        )
        for (index, _), result in zip(batch, results, strict=True):
            assert isinstance(result, CodeChangeResult), result
            for other in range(len(self.clients)):
                if other != index:
                    self.inbox[other].append(("remote", result.changes, result.version))
            self.inbox[index].append(("ack", result.version))

    def deliver(self, index: int) -> None:
        kind, *rest = self.inbox[index].pop(0)
        if kind == "remote":
            self.clients[index].remote(*rest)
        else:
            self.send(index, self.clients[index].ack(*rest))

    def quiesce(self) -> None:
        while self.outbox or any(self.inbox):
            if self.outbox:
                self.serve(len(self.outbox))
            for index, queue in enumerate(self.inbox):
                while queue:
                    self.deliver(index)

    def assert_converged(self) -> None:
        row = self.row()
        assert "\r" not in row.code
        assert [c.text for c in self.clients] == [row.code] * len(self.clients)
        assert [c.version for c in self.clients] == [row.version] * len(self.clients)
        logged = DocumentOperation.objects.filter(session_id=self.session.id).values_list("changes", flat=True)
        assert not any("\r" in change["insert"] for changes in logged for change in changes)


@pytest.mark.django_db
def test_crlf_insert_then_a_delete_at_the_same_base_version_converge(db):
    """A CR LF and CR insert is held with \\n; deletes based on the version after it remove the same text everywhere."""
    server = Server("xyz", 2)
    a, b = server.clients
    server.send(0, a.edit([{"from": 0, "to": 0, "insert": "A\r\nB\rC"}]))
    server.quiesce()
    assert server.row().code == a.text == b.text == "A\nB\nCxyz"
    # Both based on the version that holds the insert: "x" is at 5 in the editors.
    server.send(1, b.edit([{"from": 5, "to": 6, "insert": ""}]))
    server.send(0, a.edit([{"from": 7, "to": 8, "insert": "\r"}]))
    server.quiesce()
    assert server.row().code == "A\nB\nCy\n"
    server.assert_converged()


@pytest.mark.django_db
def test_each_insert_is_split_on_its_own(db):
    """A CR ending one insert and an LF starting the next stay two line breaks, as in CodeMirror."""
    server = Server("ab", 2)
    server.send(
        0, server.clients[0].edit([{"from": 0, "to": 0, "insert": "1\r"}, {"from": 1, "to": 1, "insert": "\n2"}])
    )
    server.quiesce()
    assert server.row().code == "1\na\n2b"
    server.assert_converged()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_codemirror_clients_converge_with_cr_in_inserts(db, data):
    """Random edits with CR, CR LF and lone CR, batches and deliveries: every editor ends with the stored text."""
    server = Server("ab😀c\n", 3)
    for _ in range(data.draw(st.integers(5, 40), label="steps")):
        action = data.draw(st.sampled_from(["edit", "serve", "deliver"]), label="action")
        if action == "edit":
            index = data.draw(st.integers(0, 2), label="client")
            offsets = boundaries(server.clients[index].text)
            start = data.draw(st.sampled_from(offsets), label="from")
            end = data.draw(st.sampled_from([o for o in offsets if o >= start][:4]), label="to")
            insert = data.draw(st.sampled_from(INSERTS), label="insert")
            if start == end and not insert:
                continue
            server.send(index, server.clients[index].edit([{"from": start, "to": end, "insert": insert}]))
        elif action == "serve" and server.outbox:
            server.serve(data.draw(st.integers(1, len(server.outbox)), label="batch"))
        elif action == "deliver":
            index = data.draw(st.integers(0, 2), label="to client")
            if server.inbox[index]:
                server.deliver(index)
    server.quiesce()
    server.assert_converged()


@pytest.mark.django_db(transaction=True)
async def test_cr_in_a_delta_over_a_websocket(new_session, open_socket):
    """Over a real socket: others get the insert with \\n, and a later delete at that version removes the same text."""
    session = await new_session(code="xyz")
    a, b = await open_socket(session.id), await open_socket(session.id)
    await join(a, "ua")
    await join(b, "ub")
    version = a.welcome["data"]["version"]
    await a.send_json_to(
        {"type": "code-update", "data": {"changes": [{"from": 0, "to": 0, "insert": "A\r\nB\rC"}], "version": version}}
    )
    update = await receive_type(b, "code-update")
    assert update["data"] == {
        "code": "A\nB\nCxyz",
        "changes": [{"from": 0, "to": 0, "insert": "A\nB\nC"}],
        "version": version + 1,
    }
    assert (await receive_type(a, "code-ack"))["data"]["version"] == version + 1
    await b.send_json_to(
        {"type": "code-update", "data": {"changes": [{"from": 5, "to": 6, "insert": ""}], "version": version + 1}}
    )
    assert (await receive_type(a, "code-update"))["data"]["code"] == "A\nB\nCyz"
    await receive_type(b, "code-ack")
    row = await database_sync_to_async(InterviewSession.objects.get)(pk=session.id)
    assert (row.code, row.version) == ("A\nB\nCyz", version + 2)
    await close_all(a, b)

"""Line breaks in deltas: the server holds each insert as CodeMirror does (\\n only), so editors and server agree."""

import pytest
from channels.db import database_sync_to_async

from collaboration.tests.cmclient import CodeMirrorClient
from collaboration.tests.helpers import ServiceNetwork, close_all, convergence_property, open_joined, receive_type
from sessions.models import DocumentOperation, InterviewSession

INSERTS = ["a", "A\r\nB\rC", "\r\n", "\r", "x\r", "\ny\r\r\n", "😀\r", "\n", ""]


class CodeMirrorNetwork(ServiceNetwork):
    """The real document service with CodeMirror clients around it; deliveries are explicit."""

    client_class = CodeMirrorClient

    def assert_converged(self) -> InterviewSession:
        row = super().assert_converged()
        assert "\r" not in row.code
        logged = DocumentOperation.objects.filter(session_id=self.session.id).values_list("changes", flat=True)
        assert not any("\r" in change["insert"] for changes in logged for change in changes)
        return row


@pytest.mark.django_db
def test_crlf_insert_then_a_delete_at_the_same_base_version_converge(db):
    """A CR LF and CR insert is held with \\n; deletes based on the version after it remove the same text everywhere."""
    server = CodeMirrorNetwork("xyz", 2)
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
    server = CodeMirrorNetwork("ab", 2)
    server.send(
        0, server.clients[0].edit([{"from": 0, "to": 0, "insert": "1\r"}, {"from": 1, "to": 1, "insert": "\n2"}])
    )
    server.quiesce()
    assert server.row().code == "1\na\n2b"
    server.assert_converged()


@convergence_property(CodeMirrorNetwork, max_examples=100, max_steps=40, inserts=INSERTS)
def test_codemirror_clients_converge_with_cr_in_inserts(server):
    """Random edits with CR, CR LF and lone CR, batches and deliveries: every editor ends with the stored text."""
    server.assert_converged()


@pytest.mark.django_db(transaction=True)
async def test_cr_in_a_delta_over_a_websocket(new_session, open_socket):
    """Over a real socket: others get the insert with \\n, and a later delete at that version removes the same text."""
    session = await new_session(code="xyz")
    a, b = await open_joined(open_socket, session.id, "ua", "ub")
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

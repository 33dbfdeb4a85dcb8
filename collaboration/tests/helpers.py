"""Helpers for driving the consumer and the document service, and reading what they stored
(the fixtures live in the root conftest)."""

from channels.db import database_sync_to_async
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collaboration.tests.otclient import OTClient, boundaries
from sessions.models import InterviewSession
from sessions.services import CodeChange, CodeChangeResult, code_changes_apply
from sessions.tests.factories import session_make


async def close_all(*communicators):
    for communicator in communicators:
        await communicator.disconnect()


async def join(communicator, user_id: str, name: str = "User", *, owner_token: str | None = None):
    data = {"name": name} if owner_token is None else {"name": name, "ownerToken": owner_token}
    await communicator.send_json_to({"type": "join", "userId": user_id, "data": data})


async def until_pong(communicator) -> list[dict]:
    """Ping, and return what came before the pong (the consumer answers in order)."""
    await communicator.send_json_to({"type": "ping"})
    seen = []
    while (message := await communicator.receive_json_from(timeout=5))["type"] != "pong":
        seen.append(message)
    return seen


async def open_joined(open_socket, session_id, *user_ids: str) -> list:
    """One socket a user on the session (`open_socket` is the fixture), all opened before any joins."""
    sockets = [await open_socket(session_id) for _ in user_ids]
    for communicator, user_id in zip(sockets, user_ids, strict=True):
        await join(communicator, user_id)
    return sockets


async def play(communicator, client, message: dict) -> None:
    """Play a server message into `client` (an OTClient) and send the change its ack releases."""
    outgoing = client.receive(message)
    if outgoing:
        await communicator.send_json_to({"type": "code-update", "data": outgoing})


async def settle(communicator, client, version: int) -> None:
    """Play the server's messages into `client` until it is at `version` with nothing in flight."""
    while client.version < version or client.inflight is not None or client.queued:
        await play(communicator, client, await communicator.receive_json_from(timeout=5))


async def receive_type(communicator, type_, timeout=5):  # noqa: ASYNC109 - passed to the communicator
    """The next message of `type_`, skipping others."""
    while True:
        message = await communicator.receive_json_from(timeout=timeout)
        if message["type"] == type_:
            return message


def stored_document(session_id) -> tuple[str, int, str]:
    """The session's stored code, version and language."""
    row = InterviewSession.objects.get(pk=session_id)
    return row.code, row.version, row.language


get_document = database_sync_to_async(stored_document)


class ServiceNetwork:
    """The real document service (`code_changes_apply`, in batches) with model clients around
    it and FIFO queues between them; every send, batch and delivery is explicit."""

    client_class = OTClient

    def __init__(self, code: str, clients: int):
        self.session = session_make(code=code)
        row = self.row()
        self.clients = [self.client_class(row.code, row.version) for _ in range(clients)]
        self.inbox: list[list[tuple]] = [[] for _ in self.clients]  # per client: ("remote", changes, v) | ("ack", v)
        self.outbox: list[tuple[int, dict]] = []  # submissions waiting for the server, in arrival order

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
        """Serve everything, deliver everything, until nothing moves."""
        while self.outbox or any(self.inbox):
            if self.outbox:
                self.serve(len(self.outbox))
            for index, queue in enumerate(self.inbox):
                while queue:
                    self.deliver(index)

    def random_steps(self, data, *, steps, inserts: list[str]) -> None:
        """Edits, batches and deliveries in an order hypothesis draws (`data` is `st.data()`)."""
        last = len(self.clients) - 1
        for _ in range(data.draw(steps, label="steps")):
            action = data.draw(st.sampled_from(["edit", "serve", "deliver"]), label="action")
            if action == "edit":
                index = data.draw(st.integers(0, last), label="client")
                offsets = boundaries(self.clients[index].text)
                start = data.draw(st.sampled_from(offsets), label="from")
                end = data.draw(st.sampled_from([o for o in offsets if o >= start][:4]), label="to")
                insert = data.draw(st.sampled_from(inserts), label="insert")
                if start == end and not insert:
                    continue
                self.send(index, self.clients[index].edit([{"from": start, "to": end, "insert": insert}]))
            elif action == "serve" and self.outbox:
                self.serve(data.draw(st.integers(1, len(self.outbox)), label="batch"))
            elif action == "deliver":
                index = data.draw(st.integers(0, last), label="to client")
                if self.inbox[index]:
                    self.deliver(index)

    def assert_converged(self) -> InterviewSession:
        """Every client holds the stored text at the stored version; the stored row."""
        row = self.row()
        assert [c.text for c in self.clients] == [row.code] * len(self.clients)
        assert [c.version for c in self.clients] == [row.version] * len(self.clients)
        return row


def convergence_property(network_class: type[ServiceNetwork], *, max_examples: int, max_steps: int, inserts: list[str]):
    """Make `check(network)` a hypothesis test of `db` and `st.data()`: three `network_class`
    clients on "ab😀c\\n" take 5 to `max_steps` random edits (from `inserts`), batches and
    deliveries, everything is then served and delivered, and `check` looks at the result."""

    def decorate(check):
        def test(db, data):
            network = network_class("ab😀c\n", 3)
            network.random_steps(data, steps=st.integers(5, max_steps), inserts=inserts)
            network.quiesce()
            check(network)

        test.__name__, test.__qualname__, test.__doc__ = check.__name__, check.__qualname__, check.__doc__
        test.__module__ = check.__module__
        # Hypothesis keys its example database by the source of the function it wraps, the same
        # `test` here for every property: salt it as hypothesis's pytest plugin does.
        test._hypothesis_internal_add_digest = f"{check.__module__}.{check.__qualname__}".encode()
        test = given(data=st.data())(test)
        return settings(
            max_examples=max_examples, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
        )(test)

    return decorate

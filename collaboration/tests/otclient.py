"""A minimal OT client, as an editor speaking the delta protocol would be (for tests and benchmarks)."""

from sessions.document import apply, transform


class OTClient:
    """Keeps one change list in flight and queues later local edits until it is acknowledged."""

    def __init__(self, text: str, version: int):
        self.text = text
        self.version = version
        self.inflight: list | None = None
        self.queued: list[list] = []
        self.seq = 0

    @classmethod
    def from_welcome(cls, welcome: dict) -> "OTClient":
        """A client starting from the document a welcome message carries."""
        return cls(welcome["data"]["currentCode"], welcome["data"]["version"])

    def receive(self, message: dict) -> dict | None:
        """Play a server message (another's change or the ack of ours); return the message data to send now, if any."""
        if message["type"] == "code-update":
            self.remote(message["data"]["changes"], message["data"]["version"])
        elif message["type"] == "code-ack":
            return self.ack(message["data"]["version"])
        elif message["type"] == "error":
            raise AssertionError(message)
        return None

    def edit(self, changes: list) -> dict | None:
        """Apply a local edit; return the message data to send now, if any."""
        self.text = apply(self.text, changes)
        self.queued.append(changes)
        return self._send_next()

    def _send_next(self) -> dict | None:
        if self.inflight is not None or not self.queued:
            return None
        self.inflight = self.queued.pop(0)
        self.seq += 1
        return {"changes": self.inflight, "version": self.version, "seq": self.seq}

    def ack(self, version: int) -> dict | None:
        """Our in-flight change became `version`; send the next queued one."""
        self.inflight = None
        self.version = version
        return self._send_next()

    def remote(self, changes: list, version: int) -> None:
        """Apply a change the server accepted before ours: it goes first on ties."""
        incoming = changes
        rebased = []
        for local in [*([self.inflight] if self.inflight is not None else []), *self.queued]:
            rebased.append(transform(local, incoming, over_first=True))
            incoming = transform(incoming, local, over_first=False)
        if self.inflight is not None:
            self.inflight, self.queued = rebased[0], rebased[1:]
        else:
            self.queued = rebased
        self.text = apply(self.text, incoming)
        self.version = version


def boundaries(text: str) -> list[int]:
    """UTF-16 offsets between code points: where an edit may start or end."""
    offsets = [0]
    for ch in text:
        offsets.append(offsets[-1] + (2 if ord(ch) > 0xFFFF else 1))
    return offsets

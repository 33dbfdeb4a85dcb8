"""A CodeMirror 6 client as far as line breaks go: the editor model the line-break tests hold the server to."""

import re

from collaboration.tests.otclient import OTClient

# ChangeSet.of splits every insert into lines on this, and the document joins lines with \n.
_BREAK = re.compile(r"\r\n?|\n")


def as_codemirror(changes: list) -> list:
    """Change specs as CodeMirror applies them: each insert split into lines on its own."""
    return [{**c, "insert": "\n".join(_BREAK.split(c.get("insert", "")))} for c in changes]


class CodeMirrorClient(OTClient):
    """An OT client whose document is CodeMirror's: every insert it applies, its own or a
    broadcast one, is split on /\\r\\n?|\\n/. It sends an edit as it was dispatched (CRs
    and all), as a client that forwards the specs it dispatched does; an edit rebased
    before sending goes as the editor holds it."""

    def __init__(self, text: str, version: int):
        super().__init__(text, version)
        self.dispatched: list[tuple[list, list]] = []  # (as held, as dispatched)

    def edit(self, changes: list) -> dict | None:
        held = as_codemirror(changes)
        self.dispatched.append((held, changes))
        return self._wire(super().edit(held))

    def ack(self, version: int) -> dict | None:
        return self._wire(super().ack(version))

    def remote(self, changes: list, version: int) -> None:
        super().remote(as_codemirror(changes), version)

    def _wire(self, message: dict | None) -> dict | None:
        if message is None:
            return None
        for held, dispatched in self.dispatched:
            if message["changes"] is held:
                self.dispatched.remove((held, dispatched))
                return {**message, "changes": dispatched}
        return message

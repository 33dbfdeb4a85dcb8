"""What a change to a document asks for (`CodeChange`) and what it did (`CodeChangeResult`)."""

import functools
import hashlib
import json
import uuid
from dataclasses import dataclass, field


@dataclass(frozen=True)
class CodeChange:
    """A request to change a document: full text, or `changes` against `base_version`."""

    code: str | None = None
    changes: list | None = None
    base_version: int | None = None
    user_id: str | None = None
    seq: int | None = None
    # The version of the document the sending connection started from (its welcome).
    # An earlier identical request of the same user and seq is this one resent only if
    # it is at most this version: a connection that was sent the earlier one as a
    # broadcast (another tab of the user) is asking for a change of its own.
    connection_version: int | None = None

    @functools.cached_property
    def digest(self) -> str:
        """What identifies a request beyond (user_id, seq): its base version and changes as sent
        (what of them the server reads: from, to, insert)."""
        try:
            if self.changes is None:
                body = [None, self.code]
            else:
                body = [self.base_version, [[c.get(k) for k in ("from", "to", "insert")] for c in self.changes]]
            text = json.dumps(body, separators=(",", ":"))
        except (TypeError, ValueError, AttributeError):
            # Not a request the document would accept anyway; it matches nothing.
            return uuid.uuid4().hex
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@dataclass
class CodeChangeResult:
    """What an accepted change did; `duplicate` marks a resent `seq` not applied again."""

    session_id: uuid.UUID
    version: int
    code: str
    changes: list = field(default_factory=list)
    user_id: str | None = None
    duplicate: bool = False
    new_version: bool = False

    @property
    def changed(self) -> bool:
        """Whether the change took a new version (which every client must then see)."""
        return self.new_version

"""Change lists as CodeMirror 6 sends them: validated, applied, transformed and diffed in UTF-16 offsets."""

import re
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any, TypedDict

__all__ = [
    "Change",
    "ChangeError",
    "apply",
    "apply_log",
    "diff",
    "line_breaks",
    "line_breaks_in_inserts",
    "normalize",
    "transform",
    "transform_over_log",
    "utf16_len",
]

# "from" is a Python keyword, hence the functional form.
Change = TypedDict("Change", {"from": int, "to": int, "insert": str})

# Browsers count offsets in UTF-16 code units; working on the encoded bytes turns
# those offsets into plain slice indices (times two) for text with astral characters.
_UTF16 = "utf-16-le"
# A lone surrogate cannot be encoded as UTF-8, so it would only fail later, in the database.
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# CodeMirror's line splitting (Text.of after ChangeSet.of splits an insert on /\r\n?|\n/).
_LINE_BREAK = re.compile(r"\r\n?")


class ChangeError(ValueError):
    """A change list that is malformed or does not fit the document it is applied to."""


def utf16_len(text: str) -> int:
    """Return the length of `text` in UTF-16 code units, as a browser counts it."""
    if text.isascii():  # O(1) in CPython: the flag is stored on the string
        return len(text)
    return len(text.encode(_UTF16, "surrogatepass")) // 2


def line_breaks(text: str) -> str:
    """Return `text` with CR LF and lone CR as LF, the only line break CodeMirror keeps."""
    return _LINE_BREAK.sub("\n", text) if "\r" in text else text


def line_breaks_in_inserts(changes: object) -> object:
    """Return `changes` with each insert's line breaks as CodeMirror makes them.

    Each insert is split on its own, as ChangeSet.of does: a CR ending one insert and an
    LF starting the next stay two breaks. Offsets are untouched, since they refer to the
    document before the changes. Anything malformed is returned as it is, for `normalize`
    to refuse.
    """
    if not isinstance(changes, list) or not any(
        isinstance(c, Mapping) and isinstance(c.get("insert"), str) and "\r" in c["insert"] for c in changes
    ):
        return changes
    return [
        {**c, "insert": line_breaks(c["insert"])} if isinstance(c, Mapping) and isinstance(c.get("insert"), str) else c
        for c in changes
    ]


def normalize(changes: object, length: int) -> list[Change]:
    """Validate `changes` against a document of `length` units and return them sorted, without no-ops."""
    return _normalize(changes, length)


def apply(text: str, changes: object) -> str:
    """Return `text` with `changes` (offsets into `text` itself) applied."""
    if text.isascii():
        return _splice(text, _normalize(changes, len(text)))
    data = text.encode(_UTF16, "surrogatepass")
    length = len(data) // 2
    normalized = _normalize(changes, length)
    if length == len(text):
        # Pure BMP: one code unit per code point, so offsets are already str indices.
        return _splice(text, normalized)
    for change in normalized:
        for offset in (change["from"], change["to"]):
            if _splits_pair(data, offset):
                raise ChangeError(f"offset {offset} splits a surrogate pair")
    parts: list[bytes] = []
    last = 0
    for change in normalized:
        parts.append(data[2 * last : 2 * change["from"]])
        parts.append(change["insert"].encode(_UTF16))
        last = change["to"]
    parts.append(data[2 * last :])
    return b"".join(parts).decode(_UTF16, "surrogatepass")


def apply_log(text: str, log: Iterable[list[Change]]) -> str:
    """Return `text` with each change list of an operation log applied in turn, each against
    the text the one before made: changes as the log holds them, once normalized (sorted,
    not overlapping, not splitting a pair). The text is encoded once and each change is a
    slice assignment in place, where `apply` per operation would encode and decode it each
    time: a replay of a hundred operations on a long text with astral characters."""
    data = bytearray(text.encode(_UTF16, "surrogatepass"))
    for changes in log:
        units = len(data) // 2
        # From the last change back: the earlier ones' offsets (and bounds) stay valid.
        for change in reversed(changes):
            start, end = change["from"], change["to"]
            if not 0 <= start <= end <= units:
                raise ChangeError(f"change {start}..{end} is outside a document of {units} units")
            data[2 * start : 2 * end] = change["insert"].encode(_UTF16, "surrogatepass")
    return data.decode(_UTF16, "surrogatepass")


def transform(changes: object, over: object, *, over_first: bool = True) -> list[Change]:
    """Rewrite `changes` to apply after `over`, both made against the same document."""
    mine = _normalize(changes, None)
    theirs = _normalize(over, None)
    if not mine or not theirs:
        return mine
    # Both lists must cover the same length; the true length is unknown here, and
    # nothing past the last change matters, so the larger end stands in for it.
    length = max(mine[-1]["to"], theirs[-1]["to"])
    mapped = _map(_sections(mine, length), _sections(theirs, length), before=not over_first)
    return _changes(mapped)


def transform_over_log(changes: object, log: Iterable[object], *, length: int | None = None) -> list[Change]:
    """Rewrite `changes` to apply after every change list in `log`, accepted in that order.

    With `length`, the length of the document both start from, the changes stay in
    section form from the first change list to the last instead of being converted,
    validated and sorted again at every step: the same result, in a third of the time.
    """
    result = _normalize(changes, None)
    if length is None:
        for accepted in log:
            result = transform(result, accepted, over_first=True)
        return result
    if not result:
        return result
    if result[-1]["to"] > length:
        raise ChangeError(f"changes reach {result[-1]['to']}, beyond the document's length {length}")
    mine = None
    for accepted in log:
        theirs = _normalize(accepted, length)
        if theirs:
            # Sections merge neighbouring changes; as `transform`, leave the list alone until then.
            mine = _map(_sections(result, length) if mine is None else mine, _sections(theirs, length), before=False)
            length += sum(utf16_len(c["insert"]) - (c["to"] - c["from"]) for c in theirs)
    return result if mine is None else _changes(mine)


def diff(old: str, new: str) -> list[Change]:
    """Return one change turning `old` into `new`, spanning everything between their common prefix and suffix."""
    if old == new:
        return []
    prefix = _common_prefix(old, new)
    suffix = _common_suffix(old, new, min(len(old), len(new)) - prefix)
    # A str indexes code points, so these bounds split a pair only in text decoded with
    # "surrogatepass", where a pair can sit in two code points; widen over such a half.
    if prefix and "\ud800" <= old[prefix - 1] <= "\udbff":
        prefix -= 1
    if suffix and "\udc00" <= old[len(old) - suffix] <= "\udfff":
        suffix -= 1
    old_end = len(old) - suffix
    if old.isascii():
        start, end = prefix, old_end
    else:
        start = utf16_len(old[:prefix])
        end = start + utf16_len(old[prefix:old_end])
    return [{"from": start, "to": end, "insert": new[prefix : len(new) - suffix]}]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _normalize(changes: object, length: int | None) -> list[Change]:
    if not isinstance(changes, list | tuple):
        raise ChangeError("changes must be a list")
    result: list[Change] = []
    for index, change in enumerate(changes):
        if not isinstance(change, Mapping):
            raise ChangeError(f"change {index} is not an object")
        start = change.get("from")
        # CodeMirror's own defaults for a spec that leaves these out.
        end = change.get("to", start)
        insert = change.get("insert", "")
        if not _is_int(start) or not _is_int(end):
            raise ChangeError(f"change {index}: from and to must be integers")
        if not isinstance(insert, str):
            raise ChangeError(f"change {index}: insert must be a string")
        if start < 0 or start > end:
            raise ChangeError(f"change {index}: invalid range {start} to {end}")
        if length is not None and end > length:
            raise ChangeError(f"change {index}: range {start} to {end} is beyond the document's length {length}")
        if not insert.isascii() and _SURROGATE.search(insert):
            raise ChangeError(f"change {index}: insert holds a lone surrogate")
        if start == end and not insert:
            continue
        result.append({"from": start, "to": end, "insert": insert})
    # Stable, so inserts at one position keep the order the client gave them.
    result.sort(key=lambda change: (change["from"], change["to"]))
    for previous, current in pairwise(result):
        if previous["to"] > current["from"]:
            raise ChangeError(f"changes overlap at {current['from']}")
    return result


def _splice(text: str, changes: list[Change]) -> str:
    if not changes:
        return text
    parts: list[str] = []
    last = 0
    for change in changes:
        parts.append(text[last : change["from"]])
        parts.append(change["insert"])
        last = change["to"]
    parts.append(text[last:])
    return "".join(parts)


def _splits_pair(data: bytes, offset: int) -> bool:
    if offset <= 0 or 2 * offset >= len(data):
        return False
    # Little-endian: the odd byte of each unit is its high byte, which tells a surrogate's half.
    return 0xD8 <= data[2 * offset - 1] <= 0xDB and 0xDC <= data[2 * offset + 1] <= 0xDF


def _common_prefix(a: str, b: str) -> int:
    # Binary search over C-level comparisons: linear in copying, with no Python loop per character.
    low, high = 0, min(len(a), len(b))
    while low < high:
        middle = (low + high + 1) // 2
        if b.startswith(a[low:middle], low):
            low = middle
        else:
            high = middle - 1
    return low


def _common_suffix(a: str, b: str, limit: int) -> int:
    low, high = 0, limit
    while low < high:
        middle = (low + high + 1) // 2
        if b.endswith(a[len(a) - middle : len(a) - low], 0, len(b) - low):
            low = middle
        else:
            high = middle - 1
    return low


# What follows mirrors @codemirror/state's ChangeSet sections and mapSet, so that the
# server and a browser mapping the same changes (for instance with @codemirror/collab)
# make the same choices on every tie and overlap. A section is [length, inserted, text]:
# `inserted` is -1 for an unchanged stretch, else the UTF-16 length of `text`, which
# replaces `length` units of the old document.
_Section = list[Any]


def _add_section(sections: list[_Section], length: int, inserted: int, text: str = "") -> None:
    if length == 0 and inserted <= 0:
        return
    if sections:
        last = sections[-1]
        if inserted <= 0 and inserted == last[1]:
            last[0] += length
            return
        if length == 0 and last[0] == 0:
            last[1] += inserted
            last[2] += text
            return
    sections.append([length, inserted, text])


def _sections(changes: list[Change], length: int) -> list[_Section]:
    sections: list[_Section] = []
    position = 0
    for change in changes:
        _add_section(sections, change["from"] - position, -1)
        _add_section(sections, change["to"] - change["from"], utf16_len(change["insert"]), change["insert"])
        position = change["to"]
    _add_section(sections, length - position, -1)
    return sections


def _changes(sections: list[_Section]) -> list[Change]:
    result: list[Change] = []
    position = 0
    for length, inserted, text in sections:
        if inserted >= 0:
            result.append({"from": position, "to": position + length, "insert": text})
        position += length
    return result


class _Cursor:
    """Walks a section list, consuming a section in pieces (CodeMirror's SectionIter)."""

    __slots__ = ("index", "inserted", "length", "offset", "sections", "text")

    def __init__(self, sections: list[_Section]) -> None:
        self.sections = sections
        self.index = 0
        self.next()

    def next(self) -> None:
        if self.index < len(self.sections):
            self.length, self.inserted, self.text = self.sections[self.index]
            self.index += 1
        else:
            self.length, self.inserted, self.text = 0, -2, ""
        self.offset = 0

    @property
    def done(self) -> bool:
        return self.inserted == -2

    def forward(self, length: int) -> None:
        if length == self.length:
            self.next()
        else:
            self.length -= length
            self.offset += length


def _map(mine: list[_Section], theirs: list[_Section], *, before: bool) -> list[_Section]:
    # `mine` rewritten to apply after `theirs`; `before` puts mine first on a tie.
    result: list[_Section] = []
    a = _Cursor(mine)
    b = _Cursor(theirs)
    # The index of the section of `a` whose text is already placed, as a section
    # may be consumed in several pieces but must insert its text once.
    inserted = -1
    while True:
        if a.inserted == -1 and b.inserted == -1:
            length = min(a.length, b.length)
            _add_section(result, length, -1)
            a.forward(length)
            b.forward(length)
        elif b.inserted >= 0 and (
            a.inserted < 0
            or inserted == a.index
            or (a.offset == 0 and (b.length < a.length or (b.length == a.length and not before)))
        ):
            # Their change comes first (by start, then length, then priority): keep
            # its text, and place whatever of ours it swallowed whole at its start.
            length = b.length
            _add_section(result, b.inserted, -1)
            while length:
                if a.done:
                    raise ChangeError("change lists cover different lengths")
                piece = min(a.length, length)
                if a.inserted >= 0 and inserted < a.index and a.length <= piece:
                    _add_section(result, 0, a.inserted, a.text)
                    inserted = a.index
                a.forward(piece)
                length -= piece
            b.next()
        elif a.inserted >= 0:
            # Our change up to the next change of theirs that inserts something;
            # what they already deleted inside it is no longer ours to delete.
            length = 0
            left = a.length
            while left:
                if b.inserted == -1:
                    piece = min(left, b.length)
                    length += piece
                    left -= piece
                    b.forward(piece)
                elif b.inserted == 0 and b.length < left:
                    left -= b.length
                    b.next()
                else:
                    break
            if inserted < a.index:
                _add_section(result, length, a.inserted, a.text)
            else:
                _add_section(result, length, 0)
            if b.done and left:
                raise ChangeError("change lists cover different lengths")
            inserted = a.index
            a.forward(a.length - left)
        elif a.done and b.done:
            return result
        else:
            raise ChangeError("change lists cover different lengths")

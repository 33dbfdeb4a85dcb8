"""Line breaks as CodeMirror holds them, without a database."""

import pytest

from sessions.document import apply, line_breaks, line_breaks_in_inserts


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a\r\nb", "a\nb"), ("a\rb", "a\nb"), ("a\r\r\nb", "a\n\nb"), ("\n\r", "\n\n"), ("plain\n", "plain\n")],
)
def test_line_breaks_become_lf(text, expected):
    """CR LF and lone CR become LF, as CodeMirror splits lines on /\\r\\n?|\\n/."""
    assert line_breaks(text) == expected


def test_each_insert_is_normalised_alone_and_offsets_stay():
    """Inserts are split one by one (a CR ending one and an LF starting the next stay two breaks); from/to are kept."""
    changes = [{"from": 0, "to": 1, "insert": "A\r"}, {"from": 2, "to": 2, "insert": "\nB\r\nC"}]
    normalised = line_breaks_in_inserts(changes)
    assert normalised == [{"from": 0, "to": 1, "insert": "A\n"}, {"from": 2, "to": 2, "insert": "\nB\nC"}]
    assert apply("xyz", normalised) == "A\ny\nB\nCz"
    assert changes[0]["insert"] == "A\r"  # the request as sent is left alone


def test_changes_without_cr_or_malformed_are_returned_as_they_are():
    """No copy when there is nothing to do; malformed input is left for validation to refuse."""
    changes = [{"from": 0, "to": 0, "insert": "x\n"}]
    assert line_breaks_in_inserts(changes) is changes
    assert line_breaks_in_inserts("nope") == "nope"
    assert line_breaks_in_inserts([5, {"from": 0, "insert": 3}, {"from": 0, "insert": "\r"}]) == [
        5,
        {"from": 0, "insert": 3},
        {"from": 0, "insert": "\n"},
    ]

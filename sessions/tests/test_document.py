"""Tests for the pure change-list logic: no Django, no database."""

from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collaboration.tests.otclient import boundaries
from sessions.document import (
    Change,
    ChangeError,
    apply,
    apply_log,
    diff,
    normalize,
    transform,
    transform_over_log,
    utf16_len,
)

# Astral characters (two UTF-16 units each) beside ASCII, BMP letters and line breaks.
SYMBOLS = "ab\né中😀𝄞"
texts = st.text(alphabet=st.sampled_from(SYMBOLS), max_size=12)
inserts = st.text(alphabet=st.sampled_from(SYMBOLS), max_size=4)


@st.composite
def change_lists(draw: st.DrawFn, text: str, max_changes: int = 4) -> list[Change]:
    """Valid changes against `text`, in any order, sharing boundaries and positions at times."""
    points = sorted(draw(st.lists(st.sampled_from(boundaries(text)), max_size=2 * max_changes)))
    if len(points) % 2:
        points.pop()
    changes: list[Change] = []
    for start, end in zip(points[::2], points[1::2], strict=True):
        changes.append({"from": start, "to": draw(st.sampled_from([start, end])), "insert": draw(inserts)})
    return draw(st.permutations(changes))


class TestUtf16Len:
    def test_ascii_counts_characters(self):
        """ASCII text has one unit per character."""
        assert utf16_len("hello") == 5

    def test_astral_characters_count_two_units(self):
        """An emoji or a musical symbol is a surrogate pair; BMP letters are one unit."""
        assert utf16_len("😀") == 2
        assert utf16_len("a𝄞é中") == 5
        assert utf16_len("") == 0


class TestNormalize:
    def test_sorts_by_position_keeping_the_order_of_inserts_at_one_position(self):
        """Changes come back sorted by from then to; inserts at one position keep their given order."""
        changes = [
            {"from": 4, "to": 5, "insert": "d"},
            {"from": 1, "to": 1, "insert": "x"},
            {"from": 1, "to": 3, "insert": "r"},
            {"from": 1, "to": 1, "insert": "y"},
        ]
        assert normalize(changes, 5) == [
            {"from": 1, "to": 1, "insert": "x"},
            {"from": 1, "to": 1, "insert": "y"},
            {"from": 1, "to": 3, "insert": "r"},
            {"from": 4, "to": 5, "insert": "d"},
        ]

    def test_drops_no_ops_and_extra_keys_without_touching_the_input(self):
        """Empty changes vanish, unknown keys are left out and the caller's dicts stay as they were."""
        change = {"from": 0, "to": 1, "insert": "a", "origin": "input"}
        changes = [{"from": 2, "to": 2, "insert": ""}, change]
        result = normalize(changes, 3)
        assert result == [{"from": 0, "to": 1, "insert": "a"}]
        assert result[0] is not change
        assert changes == [{"from": 2, "to": 2, "insert": ""}, {"from": 0, "to": 1, "insert": "a", "origin": "input"}]

    def test_missing_to_and_insert_take_codemirrors_defaults(self):
        """A spec without `to` ends at `from`; one without `insert` deletes."""
        assert normalize([{"from": 1, "insert": "x"}, {"from": 2, "to": 3}], 3) == [
            {"from": 1, "to": 1, "insert": "x"},
            {"from": 2, "to": 3, "insert": ""},
        ]

    def test_adjacent_changes_are_not_overlapping(self):
        """One change may end where the next starts."""
        changes = [{"from": 0, "to": 2, "insert": ""}, {"from": 2, "to": 2, "insert": "x"}, {"from": 2, "to": 4}]
        assert len(normalize(changes, 4)) == 3

    def test_accepts_a_change_ending_at_the_documents_end(self):
        """The document's length is a valid offset."""
        assert normalize([{"from": 2, "to": 2, "insert": "!"}], 2) == [{"from": 2, "to": 2, "insert": "!"}]

    @pytest.mark.parametrize(
        "changes",
        [
            pytest.param({"from": 0, "to": 0, "insert": "x"}, id="not-a-list"),
            pytest.param(None, id="none"),
            pytest.param(["x"], id="change-not-an-object"),
            pytest.param([{"to": 1, "insert": "x"}], id="missing-from"),
            pytest.param([{"from": -1, "to": 0, "insert": ""}], id="negative"),
            pytest.param([{"from": 3, "to": 2, "insert": ""}], id="from-after-to"),
            pytest.param([{"from": 0, "to": 5, "insert": ""}], id="beyond-length"),
            pytest.param([{"from": 5, "to": 5, "insert": "x"}], id="insert-beyond-length"),
            pytest.param([{"from": True, "to": 1, "insert": ""}], id="bool-from"),
            pytest.param([{"from": 0, "to": False, "insert": ""}], id="bool-to"),
            pytest.param([{"from": 1.0, "to": 1, "insert": ""}], id="float"),
            pytest.param([{"from": "1", "to": 1, "insert": ""}], id="string-offset"),
            pytest.param([{"from": 1, "to": None, "insert": ""}], id="null-to"),
            pytest.param([{"from": 0, "to": 1, "insert": 7}], id="insert-not-a-string"),
            pytest.param([{"from": 0, "to": 1, "insert": None}], id="insert-null"),
            pytest.param([{"from": 0, "to": 1, "insert": "\ud83d"}], id="lone-surrogate"),
            pytest.param([{"from": 0, "to": 3, "insert": ""}, {"from": 2, "to": 4, "insert": ""}], id="overlap"),
            pytest.param([{"from": 2, "to": 4, "insert": ""}, {"from": 3, "to": 3, "insert": "x"}], id="insert-inside"),
            pytest.param(
                [{"from": 2, "to": 4, "insert": "a"}, {"from": 1, "to": 3, "insert": "b"}], id="unsorted-overlap"
            ),
        ],
    )
    def test_rejects_invalid_changes(self, changes):
        """Malformed, out-of-range or overlapping changes raise ChangeError."""
        with pytest.raises(ChangeError):
            normalize(changes, 4)

    def test_change_error_is_a_value_error(self):
        """Callers that catch ValueError also catch bad changes."""
        with pytest.raises(ValueError, match="overlap"):
            normalize([{"from": 0, "to": 2}, {"from": 1, "to": 3}], 3)


class TestApply:
    def test_offsets_refer_to_the_original_document(self):
        """Every change in a list counts from the document before any of them."""
        changes = [{"from": 0, "to": 1, "insert": "J"}, {"from": 5, "to": 5, "insert": "!"}]
        assert apply("hello", changes) == "Jello!"

    def test_order_given_does_not_matter(self):
        """Changes sent out of order apply as if sorted."""
        changes = [{"from": 5, "to": 5, "insert": "!"}, {"from": 2, "to": 4, "insert": ""}, {"from": 0, "insert": ">"}]
        assert apply("hello", changes) == ">heo!"

    def test_inserts_at_one_position_keep_their_order(self):
        """Two inserts at one offset land in the order given."""
        assert apply("ab", [{"from": 1, "to": 1, "insert": "x"}, {"from": 1, "to": 1, "insert": "y"}]) == "axyb"

    def test_offsets_count_utf16_units_after_an_emoji(self):
        """An emoji before a change moves its offsets by two."""
        assert apply("a😀b", [{"from": 3, "to": 4, "insert": "c"}]) == "a😀c"
        assert apply("😀𝄞", [{"from": 4, "to": 4, "insert": "!"}]) == "😀𝄞!"

    def test_replaces_an_astral_character_as_two_units(self):
        """Deleting units 1 to 3 removes the whole emoji."""
        assert apply("a😀b", [{"from": 1, "to": 3, "insert": "𝄞"}]) == "a𝄞b"

    def test_bmp_text_is_one_unit_per_character(self):
        """Accented and CJK letters are single units."""
        assert apply("é中x", [{"from": 2, "to": 3, "insert": "y"}]) == "é中y"

    def test_length_counts_utf16_units(self):
        """A lone emoji's document is two units long, no more."""
        assert apply("😀", [{"from": 2, "to": 2, "insert": "x"}]) == "😀x"
        with pytest.raises(ChangeError):
            apply("😀", [{"from": 3, "to": 3, "insert": "x"}])

    @pytest.mark.parametrize(
        "change",
        [{"from": 2, "to": 2, "insert": "x"}, {"from": 0, "to": 2, "insert": ""}, {"from": 2, "to": 4, "insert": ""}],
    )
    def test_rejects_offsets_inside_a_surrogate_pair(self, change):
        """An offset between the two halves of an emoji is refused."""
        with pytest.raises(ChangeError, match="surrogate"):
            apply("a😀b", [change])

    def test_empty_change_list_returns_the_text(self):
        """No changes, no difference."""
        assert apply("a😀", []) == "a😀"

    def test_failed_validation_leaves_the_input_alone(self):
        """A rejected list is not reordered or trimmed."""
        changes = [{"from": 3, "to": 3, "insert": "x"}, {"from": 0, "to": 9, "insert": ""}]
        with pytest.raises(ChangeError):
            apply("abc", changes)
        assert changes == [{"from": 3, "to": 3, "insert": "x"}, {"from": 0, "to": 9, "insert": ""}]


class TestDiff:
    def test_equal_texts_give_no_changes(self):
        """Nothing changed, nothing to send."""
        assert diff("same", "same") == []

    @pytest.mark.parametrize(
        ("old", "new", "expected"),
        [
            ("abc", "abXc", {"from": 2, "to": 2, "insert": "X"}),
            ("abc", "ac", {"from": 1, "to": 2, "insert": ""}),
            ("hello world", "hello there", {"from": 6, "to": 11, "insert": "there"}),
            ("", "new", {"from": 0, "to": 0, "insert": "new"}),
            ("old", "", {"from": 0, "to": 3, "insert": ""}),
            ("aaa", "aaaa", {"from": 3, "to": 3, "insert": "a"}),
        ],
    )
    def test_one_change_between_common_prefix_and_suffix(self, old, new, expected):
        """The change covers only what lies between the shared start and end."""
        assert diff(old, new) == [expected]

    def test_offsets_count_utf16_units(self):
        """An emoji before the change moves its offsets by two."""
        assert diff("😀x", "😀yx") == [{"from": 2, "to": 2, "insert": "y"}]

    def test_never_splits_a_surrogate_pair(self):
        """Two emoji sharing a high surrogate are replaced whole."""
        assert diff("a😀b", "a😁b") == [{"from": 1, "to": 3, "insert": "😁"}]

    def test_widens_over_a_pair_held_as_two_code_points(self):
        """Text decoded with surrogatepass still gets boundaries on whole characters."""
        old = "a\ud83d\ude00b"
        new = "a\ud83d\ude01b"
        assert diff(old, new) == [{"from": 1, "to": 3, "insert": "\ud83d\ude01"}]
        assert diff("\ud83d\ude00", "\ud83e\ude00") == [{"from": 0, "to": 2, "insert": "\ud83e\ude00"}]
        assert diff("\ud83d\ude00a", "\ud83d\ude00") == [{"from": 2, "to": 3, "insert": ""}]

    @given(old=st.text(), new=st.text())
    def test_applying_the_diff_gives_the_new_text(self, old, new):
        """apply(old, diff(old, new)) == new, for any text."""
        changes = diff(old, new)
        assert len(changes) <= 1
        assert apply(old, changes) == new

    @given(old=texts, new=texts)
    def test_applying_the_diff_gives_the_new_text_with_astral_characters(self, old, new):
        """The round trip holds on text dense in surrogate pairs."""
        assert apply(old, diff(old, new)) == new


class TestTransform:
    def test_concurrent_inserts_put_the_accepted_one_first(self):
        """With over_first, their insert at our position ends up before ours."""
        mine = [{"from": 1, "to": 1, "insert": "X"}]
        theirs = [{"from": 1, "to": 1, "insert": "Y"}]
        assert transform(mine, theirs) == [{"from": 2, "to": 2, "insert": "X"}]
        assert apply(apply("ab", theirs), transform(mine, theirs)) == "aYXb"

    def test_concurrent_inserts_put_ours_first_when_asked(self):
        """Without over_first, our insert stays before theirs."""
        mine = [{"from": 1, "to": 1, "insert": "X"}]
        theirs = [{"from": 1, "to": 1, "insert": "Y"}]
        assert transform(mine, theirs, over_first=False) == [{"from": 1, "to": 1, "insert": "X"}]
        assert apply(apply("ab", theirs), transform(mine, theirs, over_first=False)) == "aXYb"

    def test_shift_counts_utf16_units(self):
        """An emoji inserted before our change moves it by two."""
        assert transform([{"from": 1, "to": 2, "insert": ""}], [{"from": 0, "to": 0, "insert": "😀"}]) == [
            {"from": 3, "to": 4, "insert": ""}
        ]

    def test_insert_inside_a_deleted_range_moves_to_its_start(self):
        """Our insert in text they deleted survives where that text began."""
        mine = [{"from": 3, "to": 3, "insert": "X"}]
        theirs = [{"from": 1, "to": 5, "insert": ""}]
        assert transform(mine, theirs) == [{"from": 1, "to": 1, "insert": "X"}]
        assert apply(apply("abcdef", theirs), transform(mine, theirs)) == "aXf"

    def test_deletion_around_their_insert_keeps_it(self):
        """Deleting a range they inserted into removes the old text but not theirs."""
        mine = [{"from": 1, "to": 5, "insert": ""}]
        theirs = [{"from": 3, "to": 3, "insert": "X"}]
        assert transform(mine, theirs) == [{"from": 1, "to": 3, "insert": ""}, {"from": 4, "to": 6, "insert": ""}]
        assert apply(apply("abcdef", theirs), transform(mine, theirs)) == "aXf"

    def test_overlapping_deletions_shrink_to_what_is_left(self):
        """We delete only the part they have not already deleted."""
        mine = [{"from": 1, "to": 4, "insert": ""}]
        theirs = [{"from": 2, "to": 5, "insert": ""}]
        assert transform(mine, theirs) == [{"from": 1, "to": 2, "insert": ""}]
        assert apply(apply("abcdef", theirs), transform(mine, theirs)) == "af"

    def test_deletion_inside_their_deletion_vanishes(self):
        """Text they already deleted cannot be deleted twice."""
        assert transform([{"from": 2, "to": 3, "insert": ""}], [{"from": 1, "to": 5, "insert": ""}]) == []
        assert transform([{"from": 1, "to": 3, "insert": ""}], [{"from": 1, "to": 3, "insert": ""}]) == []

    def test_replacement_inside_their_deletion_keeps_its_text(self):
        """Our replacement of text they deleted leaves our new text at the deletion's start."""
        mine = [{"from": 2, "to": 3, "insert": "Z"}]
        theirs = [{"from": 1, "to": 5, "insert": "Y"}]
        assert transform(mine, theirs) == [{"from": 2, "to": 2, "insert": "Z"}]
        assert apply(apply("abcdef", theirs), transform(mine, theirs)) == "aYZf"

    def test_pure_insert_goes_before_a_replacement_at_its_start(self):
        """As in CodeMirror, ties order by start, then length: an insert precedes a replacement either way."""
        insert = [{"from": 1, "to": 1, "insert": "I"}]
        replace = [{"from": 1, "to": 3, "insert": "R"}]
        for over_first in (True, False):
            assert apply(apply("abcd", replace), transform(insert, replace, over_first=over_first)) == "aIRd"
            assert apply(apply("abcd", insert), transform(replace, insert, over_first=over_first)) == "aIRd"

    def test_nothing_to_transform_over_returns_the_changes(self):
        """Transforming over no changes (or no-ops) changes nothing; no changes stay none."""
        mine = [{"from": 2, "to": 2, "insert": "x"}, {"from": 0, "to": 1, "insert": ""}]
        assert transform(mine, []) == normalize(mine, 2)
        assert transform(mine, [{"from": 1, "to": 1, "insert": ""}]) == normalize(mine, 2)
        assert transform([], [{"from": 0, "to": 0, "insert": "y"}]) == []

    def test_rejects_invalid_change_lists(self):
        """Either list being malformed raises ChangeError."""
        with pytest.raises(ChangeError):
            transform([{"from": 0, "to": 2}, {"from": 1, "to": 3}], [])
        with pytest.raises(ChangeError):
            transform([{"from": 0, "to": 1}], [{"from": "0", "to": 1}])

    @settings(max_examples=300, deadline=None)
    @given(data=st.data())
    def test_tp1_convergence(self, data):
        """Both orders of applying two concurrent change lists reach the same text."""
        text = data.draw(texts, label="text")
        a = data.draw(change_lists(text), label="a")
        b = data.draw(change_lists(text), label="b")
        left = apply(apply(text, a), transform(b, a, over_first=True))
        right = apply(apply(text, b), transform(a, b, over_first=False))
        assert left == right


class TestTransformOverLog:
    def test_transforms_over_each_accepted_list_in_turn(self):
        """A change made at an old version lands where the accepted changes moved its text."""
        log = [[{"from": 0, "to": 0, "insert": "😀"}], [{"from": 3, "to": 4, "insert": ""}]]
        mine = [{"from": 2, "to": 3, "insert": "Z"}]
        assert transform_over_log(mine, log) == [{"from": 3, "to": 4, "insert": "Z"}]
        assert apply(apply(apply("abcd", log[0]), log[1]), transform_over_log(mine, log)) == "😀aZd"

    def test_empty_log_returns_the_changes_normalized(self):
        """With nothing accepted since, the changes only get validated and sorted."""
        mine = [{"from": 2, "to": 2, "insert": "b"}, {"from": 0, "to": 0, "insert": "a"}]
        assert transform_over_log(mine, []) == [
            {"from": 0, "to": 0, "insert": "a"},
            {"from": 2, "to": 2, "insert": "b"},
        ]


class Server:
    """The server's side of the protocol: text, version and log of accepted change lists."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.log: list[list[Change]] = []

    def receive(self, version: int, changes: list[Change]) -> list[Change]:
        accepted = transform_over_log(changes, self.log[version:])
        self.text = apply(self.text, accepted)
        # Even a change that transformed to nothing takes a version, so acks count right.
        self.log.append(accepted)
        return accepted


class Client:
    """An ot.js-style client: one change list in flight, later local edits buffered behind it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.version = 0
        self.pending: list[Change] | None = None
        self.buffer: list[list[Change]] = []

    def edit(self, changes: list[Change]) -> tuple[int, list[Change]] | None:
        self.text = apply(self.text, changes)
        if self.pending is None:
            self.pending = changes
            return self.version, changes
        self.buffer.append(changes)
        return None

    def ack(self) -> tuple[int, list[Change]] | None:
        self.version += 1
        self.pending = self.buffer.pop(0) if self.buffer else None
        return None if self.pending is None else (self.version, self.pending)

    def remote(self, changes: list[Change]) -> None:
        self.version += 1
        # The server put this change before our unacknowledged ones, so it wins every tie:
        # ours go over it with over_first=True, it goes over ours with over_first=False.
        incoming = changes
        if self.pending is not None:
            self.pending, incoming = (
                transform(self.pending, incoming, over_first=True),
                transform(incoming, self.pending, over_first=False),
            )
        rebased = []
        for buffered in self.buffer:
            rebased.append(transform(buffered, incoming, over_first=True))
            incoming = transform(incoming, buffered, over_first=False)
        self.buffer = rebased
        self.text = apply(self.text, incoming)


class Network:
    """A server and clients joined by FIFO queues, one each way per client."""

    def __init__(self, text: str, clients: int) -> None:
        self.server = Server(text)
        self.clients = [Client(text) for _ in range(clients)]
        self.up: list[deque[tuple[int, list[Change]]]] = [deque() for _ in range(clients)]
        self.down: list[deque[list[Change] | None]] = [deque() for _ in range(clients)]

    def edit(self, client: int, changes: list[Change]) -> None:
        outgoing = self.clients[client].edit(changes)
        if outgoing is not None:
            self.up[client].append(outgoing)

    def deliver_up(self, client: int) -> None:
        version, changes = self.up[client].popleft()
        accepted = self.server.receive(version, changes)
        for other, queue in enumerate(self.down):
            # None stands for the sender's ack.
            queue.append(None if other == client else accepted)

    def deliver_down(self, client: int) -> None:
        message = self.down[client].popleft()
        if message is None:
            outgoing = self.clients[client].ack()
            if outgoing is not None:
                self.up[client].append(outgoing)
        else:
            self.clients[client].remote(message)

    def deliveries(self) -> list[tuple[str, int]]:
        return [("up", i) for i, queue in enumerate(self.up) if queue] + [
            ("down", i) for i, queue in enumerate(self.down) if queue
        ]

    def deliver(self, kind: str, client: int) -> None:
        if kind == "up":
            self.deliver_up(client)
        else:
            self.deliver_down(client)


class TestCollaboration:
    def test_concurrent_inserts_at_one_position_converge_with_the_server_change_first(self):
        """Two clients typing at the same offset end with the first-accepted text first, everywhere."""
        network = Network("ab", clients=2)
        network.edit(0, [{"from": 1, "to": 1, "insert": "X"}])
        network.edit(1, [{"from": 1, "to": 1, "insert": "Y"}])
        network.deliver_up(0)
        network.deliver_up(1)
        while deliveries := network.deliveries():
            network.deliver(*deliveries[0])
        assert network.server.text == "aXYb"
        assert [client.text for client in network.clients] == ["aXYb", "aXYb"]

    def test_a_client_giving_its_own_change_priority_would_diverge(self):
        """The tie rule matters: a client that puts its unacknowledged insert first disagrees with the server."""

        class SelfishClient(Client):
            def remote(self, changes: list[Change]) -> None:
                self.version += 1
                assert self.pending is not None
                incoming = transform(changes, self.pending, over_first=True)
                self.pending = transform(self.pending, changes, over_first=False)
                self.text = apply(self.text, incoming)

        network = Network("ab", clients=2)
        network.clients[1] = SelfishClient("ab")
        network.edit(0, [{"from": 1, "to": 1, "insert": "X"}])
        network.edit(1, [{"from": 1, "to": 1, "insert": "Y"}])
        network.deliver_up(0)
        while deliveries := network.deliveries():
            network.deliver(*deliveries[0])
        assert network.server.text == "aXYb"
        assert network.clients[1].text == "aYXb"

    def test_buffered_edits_are_rebased_and_sent_after_the_ack(self):
        """A client's second edit waits for the first ack and still lands where it was typed."""
        network = Network("😀", clients=2)
        network.edit(0, [{"from": 2, "to": 2, "insert": "a"}])
        network.edit(0, [{"from": 3, "to": 3, "insert": "b"}])
        network.edit(1, [{"from": 0, "to": 0, "insert": "𝄞"}])
        assert len(network.up[0]) == 1
        network.deliver_up(1)
        while deliveries := network.deliveries():
            network.deliver(*deliveries[-1])
        assert network.server.text == "𝄞😀ab"
        assert all(client.text == "𝄞😀ab" for client in network.clients)

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(data=st.data())
    def test_three_clients_converge_under_any_interleaving(self, data):
        """Whatever the edits and the order messages arrive in, every client ends with the server's text."""
        network = Network(data.draw(texts, label="initial text"), clients=3)
        steps = data.draw(st.integers(min_value=1, max_value=30), label="steps")
        for _ in range(steps):
            actions = [("edit", i) for i in range(3)] + network.deliveries()
            kind, client = data.draw(st.sampled_from(actions))
            if kind == "edit":
                changes = data.draw(change_lists(network.clients[client].text, max_changes=2))
                if normalize(changes, utf16_len(network.clients[client].text)):
                    network.edit(client, changes)
            else:
                network.deliver(kind, client)
        while deliveries := network.deliveries():
            network.deliver(*data.draw(st.sampled_from(deliveries)))
        for client in network.clients:
            assert client.pending is None
            assert client.buffer == []
            assert client.version == len(network.server.log)
            assert client.text == network.server.text


class TestApplyLog:
    @given(st.data(), texts)
    @settings(max_examples=200, deadline=None)
    def test_a_log_applied_at_once_equals_each_change_applied_in_turn(self, data, text):
        """apply_log gives what `apply` gives operation by operation, astral characters included."""
        log, expected = [], text
        for _ in range(data.draw(st.integers(0, 4))):
            changes = normalize(data.draw(change_lists(expected)), utf16_len(expected))
            log.append(changes)
            expected = apply(expected, changes)
        assert apply_log(text, log) == expected

    def test_a_change_outside_the_text_is_refused(self):
        """A corrupt log (a change past the end) raises ChangeError rather than padding."""
        with pytest.raises(ChangeError):
            apply_log("ab", [[{"from": 1, "to": 5, "insert": ""}]])

"""Resends through the document service: only the same request of the same user counts, and it costs no query."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions.models import DocumentOperation
from sessions.services import (
    CodeChange,
    InvalidChange,
    code_change_apply,
    session_cache_forget,
)
from sessions.tests.factories import session_make

pytestmark = pytest.mark.django_db


@pytest.fixture
def session(db):
    return session_make(code="abc")


@pytest.fixture
def apply(session, django_capture_on_commit_callbacks):
    """Apply a change and run what waits for commit (the cache is filled after commit)."""

    def apply_(change: CodeChange):
        with django_capture_on_commit_callbacks(execute=True):
            return code_change_apply(session_id=session.id, change=change)

    return apply_


def insert(at: int, text: str, base: int, seq: int, user: str = "u", **kwargs) -> CodeChange:
    return CodeChange(
        changes=[{"from": at, "to": at, "insert": text}], base_version=base, user_id=user, seq=seq, **kwargs
    )


@pytest.mark.parametrize("cold_cache", [False, True])
def test_same_user_and_seq_with_another_request_is_applied(session, apply, cold_cache):
    """(user, seq) already in the log with other changes is a new change, from the cache or the database."""
    first = apply(insert(0, "x", 1, seq=1))
    if cold_cache:
        session_cache_forget(session_id=session.id)
    second = apply(insert(3, "y", 1, seq=1))
    assert (first.version, second.version, second.duplicate) == (2, 3, False)
    assert second.code == "xabcy"


@pytest.mark.parametrize("cold_cache", [False, True])
def test_the_same_request_is_acknowledged_with_its_version(session, apply, cold_cache):
    """The identical request again is a duplicate: its first version, nothing applied."""
    apply(insert(0, "x", 1, seq=1))
    apply(insert(0, "z", 1, seq=2, user="other"))
    if cold_cache:
        session_cache_forget(session_id=session.id)
    again = apply(insert(0, "x", 1, seq=1))
    assert (again.version, again.duplicate, again.changed) == (2, True, False)
    assert DocumentOperation.objects.filter(session_id=session.id).count() == 3


def test_a_request_sent_to_the_connection_as_a_broadcast_is_not_its_resend(session, apply):
    """The same request from a connection that started before it was applied (another tab) is applied too;
    from one that started after (a reconnect), it is a resend."""
    apply(insert(0, "x", 1, seq=1, connection_version=1))
    other_tab = apply(insert(0, "x", 1, seq=1, connection_version=1))
    assert (other_tab.version, other_tab.duplicate, other_tab.code) == (3, False, "xxabc")
    reconnected = apply(insert(0, "x", 1, seq=1, connection_version=3))
    assert (reconnected.version, reconnected.duplicate) == (3, True)


def test_the_digest_is_stored_with_the_operation(session, apply):
    """The operation log keeps the request's digest next to user and seq."""
    change = insert(0, "x", 1, seq=1)
    apply(change)
    stored = DocumentOperation.objects.get(session_id=session.id, seq=1)
    assert (stored.user_id, stored.digest) == ("u", change.digest)
    assert len(change.digest) == 32


def test_a_rising_seq_needs_no_query_to_tell_it_is_new(session, apply):
    """The common case (one connection, seq rising by one) is decided by the cache."""
    apply(insert(0, "a", 1, seq=1))
    with CaptureQueriesContext(connection) as queries:
        apply(insert(0, "b", 2, seq=2))
    assert not [q for q in queries.captured_queries if "seq IN" in q["sql"]]


@pytest.mark.parametrize("changes", ["nope", [5], {"from": 0}, [{"from": 0, "insert": object()}]])
def test_a_malformed_request_with_a_seq_is_refused_not_crashed(session, apply, changes):
    """The digest of a request the document refuses never raises: the change is InvalidChange."""
    with pytest.raises(InvalidChange):
        apply(CodeChange(changes=changes, base_version=1, user_id="u", seq=1))

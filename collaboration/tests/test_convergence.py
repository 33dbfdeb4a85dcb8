"""Property: OT clients editing through the real document service (database, batches, cache) converge."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collaboration.tests.helpers import ServiceNetwork
from sessions.models import DocumentOperation

pytestmark = pytest.mark.django_db

INSERTS = ["a", "bc", "😀", "𝄞x", "\n", ""]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_three_clients_converge_through_the_service(db, data):
    """Random edits, batches and delivery orders: every client ends with the stored text and version."""
    network = ServiceNetwork("ab😀c\n", 3)
    network.random_steps(data, steps=st.integers(5, 60), inserts=INSERTS)
    network.quiesce()
    row = network.assert_converged()
    assert DocumentOperation.objects.filter(session_id=network.session.id).count() == row.version

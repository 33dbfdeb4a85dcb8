"""Property: OT clients editing through the real document service (database, batches, cache) converge."""

import pytest

from collaboration.tests.helpers import ServiceNetwork, convergence_property
from sessions.models import DocumentOperation

pytestmark = pytest.mark.django_db

INSERTS = ["a", "bc", "😀", "𝄞x", "\n", ""]


@convergence_property(ServiceNetwork, max_examples=200, max_steps=60, inserts=INSERTS)
def test_three_clients_converge_through_the_service(network):
    """Random edits, batches and delivery orders: every client ends with the stored text and version."""
    row = network.assert_converged()
    assert DocumentOperation.objects.filter(session_id=network.session.id).count() == row.version

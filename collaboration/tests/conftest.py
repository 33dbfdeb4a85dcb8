import pytest

from collaboration.tests.services import fresh_postgres_database


@pytest.fixture
def postgres_database():
    """A fresh PostgreSQL database's URL, dropped afterwards."""
    with fresh_postgres_database() as url:
        yield url

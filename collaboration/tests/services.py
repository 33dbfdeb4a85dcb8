"""The machine's PostgreSQL and Redis for the tests of a deployment of many processes:
where they are, whether they answer, and a fresh database (`postgres_database` in conftest)."""

import socket
import uuid
from contextlib import contextmanager

import pytest

PG = ("127.0.0.1", 5432)
REDIS = ("127.0.0.1", 6379)
REDIS_URL = "redis://127.0.0.1:6379/0"
_ADMIN = "host=127.0.0.1 port=5432 dbname=test user=postgres"


def reachable(address) -> bool:
    try:
        with socket.create_connection(address, timeout=1):
            return True
    except OSError:
        return False


needs_redis = pytest.mark.skipif(not reachable(REDIS), reason="needs Redis on 127.0.0.1:6379")
needs_postgres = pytest.mark.skipif(not reachable(PG), reason="needs PostgreSQL on 127.0.0.1:5432")
needs_postgres_and_redis = pytest.mark.skipif(
    not (reachable(PG) and reachable(REDIS)), reason="needs PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379"
)


@contextmanager
def fresh_postgres_database():
    """The URL of a new PostgreSQL database, dropped afterwards."""
    import psycopg

    name = f"interview_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

"""The PostgreSQL pool (onboards.connexion_patches.PostgresPool): idle connections are handed out again without a
round trip, and one the server has ended is replaced instead of failing a request."""

from collections.abc import Iterator

import psycopg
import pytest

from models.base import bind, db, release
from onboards.connexion_patches import PostgresPool
from tests.helpers import wait_until

MARK = "SELECT pg_backend_pid() AS checked_out_by_test_pool"


@pytest.fixture
def pool(postgres_url: str) -> Iterator[str]:
    bind(postgres_url, max_connections=4, postgres_pool=PostgresPool)
    yield postgres_url
    release()


def backend_pid() -> int:
    with db.connection_context():
        return db.execute_sql(MARK).fetchone()[0]


def last_statement(url: str, pid: int) -> str:
    with psycopg.connect(url, autocommit=True) as admin:
        row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"backend {pid} is gone"
    return row[0]


def test_an_idle_connection_is_handed_out_again_without_a_round_trip(pool):
    first = backend_pid()
    with db.connection_context():  # checked out: the server has seen nothing since the last statement
        assert last_statement(pool, first) == MARK
        assert db.execute_sql("SELECT pg_backend_pid()").fetchone()[0] == first


def test_a_connection_the_server_ended_is_replaced(pool):
    first = backend_pid()
    with psycopg.connect(pool, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (first,)).fetchone() == (True,)
        assert wait_until(lambda: not admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s",
                                                    (first,)).fetchone()), "the backend did not end"
    second = backend_pid()
    assert second != first
    assert backend_pid() == second

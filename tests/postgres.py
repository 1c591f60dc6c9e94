"""Throw-away PostgreSQL databases, for the tests, `make fuzz` and `make bench` alike."""

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql


def unreachable(admin_url: str) -> str | None:
    """None when the server at `admin_url` answers, else the first line of why not."""
    try:
        with psycopg.connect(admin_url, connect_timeout=3, autocommit=True):
            return None
    except psycopg.Error as error:
        return (str(error).strip().splitlines() or [type(error).__name__])[0]


@contextmanager
def throwaway_database(admin_url: str, prefix: str) -> Iterator[str]:
    """A new empty database on the server at `admin_url`; its URL. Dropped on exit, connections or not."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield f"{admin_url.rpartition('/')[0]}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# The server the tests make their databases on, and whether it answers (else the tests run on SQLite only).
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
POSTGRES_PROBLEM = unreachable(ADMIN_URL)
BACKENDS = ["sqlite"] if POSTGRES_PROBLEM else ["sqlite", "postgres"]

"""handlers.lifecycle.unit_of_work: one transaction per call, run again after PostgreSQL undid it for a deadlock."""

import asyncio
import contextlib
import contextvars
import sqlite3
import threading
from collections.abc import Iterator

import peewee
import pytest

from handlers import lifecycle
from handlers.lifecycle import ATTEMPTS, unit_of_work, use_deadline
from models.accounts import Account
from models.base import Unavailable, db, is_postgres, opened, transaction
from tests.helpers import invite


class FakeDriverError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


def test_a_deadlock_victim_runs_again_and_its_first_try_leaves_nothing(app):
    calls: list[str] = []

    @unit_of_work()
    def handler() -> str:
        calls.append(Account.create(name=f"try {len(calls) + 1}").id)
        if len(calls) < ATTEMPTS:
            raise peewee.OperationalError(FakeDriverError("40P01"))
        return "done"

    assert asyncio.run(handler()) == "done" and len(calls) == ATTEMPTS
    with transaction(write=False):
        assert [a.name for a in Account.select()] == [f"try {ATTEMPTS}"]


@pytest.mark.parametrize("sqlstate", ["57P01", "08006"])
def test_other_database_errors_are_not_retried(app, sqlstate):
    calls: list[int] = []

    @unit_of_work()
    def handler() -> None:
        calls.append(1)
        raise peewee.OperationalError(FakeDriverError(sqlstate))

    with pytest.raises(peewee.OperationalError):
        asyncio.run(handler())
    assert calls == [1]


def test_retries_stop_after_the_last_attempt(app):
    calls: list[int] = []

    @unit_of_work()
    def handler() -> None:
        calls.append(1)
        raise peewee.OperationalError(FakeDriverError("40001"))

    with pytest.raises(peewee.OperationalError):
        asyncio.run(handler())
    assert len(calls) == ATTEMPTS


def test_a_unit_of_work_past_its_deadline_answers_503_and_never_commits(app, monkeypatch):
    """The request gets its answer when the deadline passes; the work, when it finishes, is rolled back."""
    deadline = use_deadline(0.2)  # in this test's context, which asyncio.run's task copies
    answered, finished, ended = threading.Event(), threading.Event(), threading.Event()
    real = lifecycle._in_transaction

    def tracked(*args: object) -> object:
        try:
            return real(*args)  # type: ignore[arg-type]
        finally:
            ended.set()  # the transaction is over: committed or rolled back

    monkeypatch.setattr(lifecycle, "_in_transaction", tracked)

    @unit_of_work()
    def slow() -> None:
        Account.create(name="late")
        answered.wait(10)  # the database answering only once the request has had its answer
        finished.set()

    with pytest.raises(Unavailable):
        asyncio.run(slow())
    deadline.var.reset(deadline)
    assert not finished.is_set()
    answered.set()
    assert finished.wait(5) and ended.wait(5)
    with transaction(write=False):
        assert Account.select().count() == 0


def test_a_read_opens_a_transaction_where_it_buys_a_snapshot(app):
    """SQLite keeps one snapshot for a read transaction's statements; at PostgreSQL's READ COMMITTED
    each statement takes its own anyway, so a read there runs without BEGIN and COMMIT."""
    with transaction(write=False):
        assert db.in_transaction() is not is_postgres()
        assert Account.select().count() == 0
    with transaction():
        assert db.in_transaction()


def _on_the_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # a worker thread has none
        return False
    return True


def test_reads_on_sqlite_run_on_the_loop_and_all_else_in_a_worker_thread(client, seller, buyer, monkeypatch):
    """A read on SQLite costs less than a worker thread's hand-off and cannot hang on a network; a write, or
    anything on PostgreSQL, must not hold up every other request while it waits."""
    seen: list[tuple[bool, bool]] = []
    real = lifecycle.transaction

    @contextlib.contextmanager
    def recorded(write: bool = True) -> Iterator[None]:
        seen.append((write, _on_the_loop()))
        with real(write):
            yield

    monkeypatch.setattr(lifecycle, "transaction", recorded)
    entity = invite(client, seller, buyer.email)
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert client.get(f"/invitations/{entity['invitation_id']}", headers=buyer.auth).status_code == 200
    here = not is_postgres()
    assert seen == [(True, False), (False, here), (False, here)]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_read_that_finds_sqlite_locked_waits_in_a_worker_thread_never_on_the_loop(client, buyer, settings,
                                                                                     monkeypatch):
    """On the loop a read waits for no lock (busy timeout 0): when another process holds the file, SQLite
    refuses it at once, and it runs again in a worker thread, which may wait for the lock within the deadline."""
    seen: list[tuple[bool, int]] = []
    real = lifecycle.transaction

    @contextlib.contextmanager
    def locked_for_the_loop(write: bool = True) -> Iterator[None]:
        with real(write):
            seen.append((_on_the_loop(), db.connection().execute("PRAGMA busy_timeout").fetchone()[0]))
            if seen[-1][0]:  # what SQLite raises, with no busy timeout, while another process holds the lock
                refused = sqlite3.OperationalError("database is locked")
                refused.sqlite_errorcode = sqlite3.SQLITE_BUSY
                raise peewee.OperationalError(refused)
            yield

    monkeypatch.setattr(lifecycle, "transaction", locked_for_the_loop)
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert seen == [(True, 0), (False, int(settings.db_statement_timeout_seconds * 1000))]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_read_on_the_loop_leaves_its_connection_waiting_for_locks_again(client, buyer, settings, monkeypatch):
    """The pooled connection a read used on the loop goes on to serve writes in worker threads, which must wait
    for another writer's lock (busy timeout), not fail at once: whether the read answered or raised (a 404)."""
    used: list[sqlite3.Connection] = []
    real = lifecycle.transaction

    @contextlib.contextmanager
    def noted(write: bool = True) -> Iterator[None]:
        with real(write):
            if _on_the_loop():
                used.append(db.connection())
            yield

    monkeypatch.setattr(lifecycle, "transaction", noted)
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    assert client.get("/onboards/" + "0" * 24, headers=buyer.auth).status_code == 404
    waits = int(settings.db_statement_timeout_seconds * 1000)
    assert len(used) == 2 and [c.execute("PRAGMA busy_timeout").fetchone()[0] for c in used] == [waits, waits]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_read_finding_every_pooled_connection_taken_waits_for_one_in_a_worker_thread(database_url):
    """The pool waits for a connection to be given back (up to its timeout): on the loop that wait would hold up
    every request, so the read goes to a worker thread as a locked file sends it."""
    held, given_back = threading.Event(), threading.Event()

    def hold() -> None:
        with db.connection_context():  # the pool's only connection
            held.set()
            given_back.wait(10)

    def where(_abandoned: object) -> bool:
        with transaction(write=False):
            return _on_the_loop()

    async def read_while_held() -> bool:
        reading = asyncio.ensure_future(lifecycle.read(where))
        await asyncio.sleep(0)  # the read's first step: on the loop it would wait for the connection here
        given_back.set()
        return await reading

    with opened(database_url, max_connections=1, statement_timeout=1):
        holder = threading.Thread(target=contextvars.copy_context().run, args=(hold,))
        holder.start()
        try:
            assert held.wait(10)
            assert asyncio.run(read_while_held()) is False
        finally:
            given_back.set()
            holder.join(10)

"""Where a request's work runs and for how long. A read on SQLite runs on the event loop, waiting for no lock: a
local file cannot hang on a network, and a worker thread's hand-off would cost more than the read. Only another
process holding the file locked (or recovering it after a crash) makes such a read wait; then it runs again in a
worker thread, as everything else does: PostgreSQL work and every write, within the request's deadline,
retried on a PostgreSQL deadlock. Used by the handlers (unit_of_work), the key look-ups of onboards.auth and the
health check alike. The deadline in force is the serving app's (onboards.runtime sets it for each request)."""

import functools
import sqlite3
import threading
from collections.abc import Callable, Coroutine
from contextvars import ContextVar, Token
from typing import Any, ParamSpec, TypeVar

import anyio
import peewee
from anyio import to_thread
from starlette.responses import Response

from models import idempotency
from models.base import Unavailable, connected_at_once, db, is_postgres, transaction

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL's deadlock and serialization failures: it undid the whole transaction, so running the
# handler again is safe and usually succeeds.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
ATTEMPTS = 3
_deadline: ContextVar[float] = ContextVar("deadline", default=8.0)
# A deadline: the limit's name and what its refusal says.
REQUEST_DEADLINE = ("request-deadline",
                    "the database did not answer within the request's {:g} seconds (REQUEST_TIMEOUT_SECONDS)")


def use_deadline(seconds: float) -> Token[float]:
    """How long a request's work may take before the request gets a 503, in this context."""
    return _deadline.set(seconds)


def deadline() -> float:
    """The seconds a request's work may take, in this context."""
    return _deadline.get()


async def bounded(work: Callable[[threading.Event], R], *, seconds: float | None = None,
                  limiter: anyio.CapacityLimiter | None = None, limit: tuple[str, str] = REQUEST_DEADLINE) -> R:
    """`work(abandoned)` in a worker thread (of `limiter`'s, else starlette's pool), within `seconds` (else
    the deadline in force): past it the request gets Unavailable (a 503) of `limit`, and `abandoned` is set so
    the work, when the database answers again, undoes itself instead of committing."""
    abandoned = threading.Event()
    allowed = _deadline.get() if seconds is None else seconds
    try:
        with anyio.fail_after(allowed):
            return await to_thread.run_sync(work, abandoned, abandon_on_cancel=True, limiter=limiter)
    except TimeoutError:
        abandoned.set()
        name, reached = limit
        raise Unavailable(name, reached.format(allowed), 1) from None


class _Abandoned(Exception):
    """The request gave up on this unit of work: it must not commit."""


def _in_transaction(handler: Callable[..., R], write: bool, args: tuple, kwargs: dict,
                    abandoned: threading.Event | None) -> R:
    attempt = 1
    while True:
        try:
            with transaction(write):
                result = handler(*args, **kwargs)
                if write and isinstance(result, Response):  # kept with the work it answers (Idempotency-Key)
                    idempotency.settle(result.status_code, result.headers, bytes(result.body))
                if abandoned is not None and abandoned.is_set():  # answered 503 already: what it did must not stay
                    raise _Abandoned
                return result
        except peewee.OperationalError as error:
            driver_error = getattr(error, "orig", None)  # what psycopg raised
            if attempt == ATTEMPTS or getattr(driver_error, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                raise
            attempt += 1


async def read(work: Callable[[threading.Event | None], R]) -> R:
    """`work(abandoned)`, a read that opens its own transaction. On SQLite it runs here, on the event loop, with the
    busy timeout of its connection at 0, waiting for no lock; only when another process holds the file locked
    does SQLite refuse it at once, and (a read changes nothing) it runs again `bounded`, as it does on
    PostgreSQL; so does a read that finds no free connection in the pool (worker threads hold them all), which
    would wait for one. The one wait left on the loop is the pool opening a connection (its pragmas wait out
    the busy timeout): at start, and once per connection and stale timeout."""
    if not is_postgres() and connected_at_once():
        with db.connection_context():  # closes the connection connected_at_once took
            connection = db.connection()
            waits = connection.execute("PRAGMA busy_timeout").fetchone()[0]
            connection.execute("PRAGMA busy_timeout = 0")
            try:
                return work(None)
            except peewee.OperationalError as error:
                if getattr(getattr(error, "orig", None), "sqlite_errorcode", 0) & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
            finally:
                connection.execute(f"PRAGMA busy_timeout = {int(waits)}")
    return await bounded(work)


def unit_of_work(write: bool = True) -> Callable[[Callable[P, R]], Callable[P, Coroutine[Any, Any, R]]]:
    """Runs the handler in one database transaction: a read (`write=False`) where `read` runs it, a write
    `bounded`: a database that stops answering gets the request a 503, and the
    unit of work, when the database answers again, is rolled back."""

    def decorate(handler: Callable[P, R]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(handler)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            work = functools.partial(_in_transaction, handler, write, args, kwargs)
            return await (bounded(work) if write else read(work))

        return run

    return decorate

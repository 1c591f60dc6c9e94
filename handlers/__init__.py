"""One module per tag of openapi.yaml, one function per operation; helpers they share."""

import functools
import re
import typing as t
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import orjson
import peewee
from connexion import request
from connexion.context import scope
from starlette.responses import Response

from models.base import Members, is_postgres, page, transaction

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL's deadlock and serialization failures: it undid the whole transaction, so running the
# handler again is safe and usually succeeds.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
ATTEMPTS = 3


def unit_of_work(write: bool = True) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Runs the handler in one database transaction on a connection of the thread it runs on: a worker
    thread's, or for a read on SQLite the event loop's (runs_on_loop)."""

    def decorate(handler: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(handler)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            attempt = 1
            while True:
                try:
                    with transaction(write):
                        return handler(*args, **kwargs)
                except peewee.OperationalError as error:
                    driver_error = getattr(error, "orig", None)  # what psycopg raised
                    if attempt == ATTEMPTS or getattr(driver_error, "sqlstate", None) not in RETRYABLE_SQLSTATES:
                        raise
                    attempt += 1

        run.writes = write  # type: ignore[attr-defined]  # read by runs_on_loop's callers
        return run

    return decorate


def runs_on_loop(write: bool) -> bool:
    """Whether a unit of work runs on the event loop itself rather than in a worker thread: a read on
    SQLite does. It is a few B-tree seeks in this process that never wait on a writer (the write-ahead
    log lets readers run beside one), and handing it to a worker thread and back cost more than the
    read: at 64 clients a GET's CPU went from 0.70-0.77 to 0.41-0.48 ms, a 100-row list's from 1.10-1.14
    to 0.69-0.71. Writes keep their thread: one may wait on another process's lock for the busy
    timeout, and the loop must not. On PostgreSQL every statement is a round trip to the server, so
    every unit of work keeps its thread. (The loop is then asyncio's: Settings.event_loop.)"""
    return not write and not is_postgres()


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # A finished response: connexion passes it on as it is, where for a (body, status, headers) tuple it
    # would work out the media type and serializer again on every request. orjson writes a 100-row page
    # in a fifteenth of json's time.
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def etag(version: int) -> str:
    return f'"v{version}"'


def if_match() -> set[int] | None:
    """The versions an If-Match header accepts; None when absent or `*` (then any version does).
    A value that is no ETag of ours accepts none."""
    # The first If-Match, as starlette's headers read it, straight from the scope (ASGI names are
    # lowercase): a request object and its headers cost a PUT some 5 % of its time.
    header = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"if-match"), None)
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip().removeprefix("W/") for tag in header.split(","))
    return {int(tag[2:-1]) for tag in tags if re.fullmatch(r'"v\d{1,9}"', tag)}


def paged(source: Callable[..., "peewee.ModelSelect[Any]"], account_id: str, model: type,
          render: Callable[[Any], dict] | Members, *, limit: int, after_id: str | None = None,
          before_id: str | None = None, sort: str = "asc", **shape: Any) -> Response:
    """A list response: one page of `source(account_id, **shape)` (models.base.page) as a plain array,
    with a Link to the next page while more remain. Each row is `render`ed, or, when `render` is the
    model's Members, written from its columns (Members.array)."""
    members = render if isinstance(render, Members) else None
    found = page(source, account_id, model, limit=limit, after_id=after_id, before_id=before_id, sort=sort,
                 members=members, **shape)
    headers = {}
    if found.more and found.last_id:
        cursor = {"before_id" if sort == "desc" else "after_id": found.last_id}
        headers["Link"] = f'<{request.url.include_query_params(**cursor)}>; rel="next"'
    if members:
        return respond(found.items, headers=headers)
    return respond([t.cast(Callable[[Any], dict], render)(row) for row in found.items], headers=headers)


"""One module per tag of openapi.yaml, one function per operation; helpers they share."""

import functools
import re
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import orjson
import peewee
from connexion import request
from connexion.context import scope
from starlette.responses import Response

from models.base import page, transaction

P = ParamSpec("P")
R = TypeVar("R")

# PostgreSQL's deadlock and serialization failures: it undid the whole transaction, so running the
# handler again is safe and usually succeeds.
RETRYABLE_SQLSTATES = {"40P01", "40001"}
ATTEMPTS = 3


def unit_of_work(write: bool = True) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Runs the handler in one database transaction on a connection of the worker thread it runs in."""

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

        return run

    return decorate


def respond(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    # A finished response, so that connexion passes it on as it is; with problem+json documented beside
    # JSON, connexion could not choose the media type itself.
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def etag(version: int) -> str:
    return f'"v{version}"'


def if_match() -> set[int] | None:
    """The versions an If-Match header accepts; None when absent or `*` (then any version does).
    A value that is no ETag of ours accepts none."""
    header = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"if-match"), None)
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip().removeprefix("W/") for tag in header.split(","))
    return {int(tag[2:-1]) for tag in tags if re.fullmatch(r'"v\d{1,9}"', tag)}


def paged(query: "peewee.ModelSelect[Any]", render: Callable[[Any], dict], *, limit: int, after_id: str | None = None,
          before_id: str | None = None, sort: str = "asc") -> Response:
    """A list response: one page of `query` (models.base.page) as a plain array, each row `render`ed, with
    a Link to the next page while more remain."""
    found = page(query,
                 limit=limit, after_id=after_id, before_id=before_id, sort=sort)
    headers = {}
    if found.more and found.last_id:
        cursor = {"before_id" if sort == "desc" else "after_id": found.last_id}
        headers["Link"] = f'<{request.url.include_query_params(**cursor)}>; rel="next"'
    return respond([render(row) for row in found.items], headers=headers)

"""The floor: the four benchmarked operations as a minimal hand-written Starlette app.

It does the work the service must do per request, with the service's own code wherever that work is not
connexion's: HTTP Basic by `onboards.auth.basic_auth` (the same key rule and cache), the spec's request rules
for these routes checked by hand, the handlers' models and queries in one unit of work
(`handlers.unit_of_work`), the same JSON encoder and ETags, outbox sender, logging, uvicorn options and worker
threads. It leaves out the machinery: connexion's routing, validation and middleware stack, and the service's
own middleware (request ids, metrics, header guards); service / floor is the price of that. Not a product.

Run: DATABASE_URL=... HOST=... PORT=... python -m bench.floor
"""

import base64
import binascii
import contextlib
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from http import HTTPStatus
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import URL, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from handlers import etag, respond, unit_of_work
from models.base import DomainError, bind, page
from models.onboards import Onboard
from onboards import auth
from onboards.config import Settings
from onboards.observe import configure_logging
from onboards.problems import answer_for
from onboards.runtime import Runtime, Serving
from onboards.serving import freeze_heap, set_worker_threads, thaw_heap, uvicorn_options

OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
STATUSES = ("created", "in_progress", "completed", "completed_flows_sync", "failed")
# The spec's OnboardCreate and OnboardUpdate members: (an ObjectId, nullable, longest string). PUT takes what
# GET gives: the read-only members are accepted, and ignored by the model.
ID, TEXT = (True, False, 24), (False, False, 24)
CREATE = {"invitation_id": ID, "flow_id": ID}
UPDATE = {"invitation_id": ID, "account_id": ID, "connection_id": ID, "flow_id": (True, True, 24), "status": TEXT,
          "id": TEXT, "reason": (False, True, 500), "created_at": (False, False, 40), "updated_at": (False, False, 40)}
QUERY = ("limit", "after_id", "before_id", "sort")
settings = Settings.from_env()
RUNTIME = Runtime(settings)


class Problem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail,
            "error": detail}
    return JSONResponse(body, status, headers=headers, media_type="application/problem+json")


def api_key(request: Request) -> str | None:
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        _user, colon, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password if colon else None


def object_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not OBJECT_ID.fullmatch(value):
        raise Problem(400, f"{where} is not a 24-hex id")
    return value


async def json_body(request: Request, members: dict[str, tuple[bool, bool, int]]) -> dict:
    """The spec's OnboardCreate / OnboardUpdate rules: an object of known members, strings (ids, the status
    enum, bounded lengths) or null where nullable, invitation_id required."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Problem(415, "request body must be application/json")
    if int(request.headers.get("content-length") or 0) > settings.max_body_bytes:
        raise Problem(413, f"request body over {settings.max_body_bytes} bytes")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "request body must be an object")
    if unknown := body.keys() - members.keys():
        raise Problem(400, f"unknown member {sorted(unknown)[0]!r}")
    for name, value in body.items():
        is_id, nullable, longest = members[name]
        if value is None and nullable:
            continue
        if not isinstance(value, str) or len(value) > longest:
            raise Problem(400, f"{name} is not a string of at most {longest} characters")
        if is_id:
            object_id(value, name)
    if "invitation_id" not in body:
        raise Problem(400, "'invitation_id' is a required property")
    if "status" in body and body["status"] not in STATUSES:
        raise Problem(400, "status is not one of the onboard statuses")
    return body


def known_query(query: QueryParams) -> None:
    """connexion's strict validation: the spec's query parameters only, each given once."""
    if unknown := query.keys() - set(QUERY):
        raise Problem(400, f"unknown query parameter {sorted(unknown)[0]!r}")
    if twice := next((name for name in QUERY if len(query.getlist(name)) > 1), None):
        raise Problem(400, f"{twice} is given more than once")


async def call(request: Request, checks: Callable[[], Awaitable[Any]], operation: Callable[..., Any]) -> Response:
    """In connexion's order: authenticates, validates, then awaits `operation(account_id, checked)`, a unit of
    work as the handlers are (a worker thread, one transaction, the request's time limit)."""
    key = api_key(request)
    try:
        # basic_auth reads only the request's scope, which a Starlette request has as connexion's does.
        token = await auth.basic_auth("", key, request) if key is not None else None
        if token is None:
            return problem(401, "authentication failed", {"WWW-Authenticate": 'Basic realm="onboards"'})
        return await operation(token["account_id"], await checks())
    except Problem as failed:
        return problem(failed.status, failed.detail)
    except DomainError as failed:
        return problem(answer_for(failed)[0], str(failed))


def if_match(request: Request) -> set[int] | None:
    """handlers.if_match's rule."""
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip() for tag in header.split(","))
    return {int(tag[2:-1]) for tag in tags if re.fullmatch(r'"v\d{1,9}"', tag)}


def one(onboard: Onboard, status: int = 200, if_none_match: str | None = None) -> Response:
    """handlers.resource's rule: a strong ETag, and 304 for a GET whose If-None-Match names it."""
    tag = etag(onboard.version)
    if if_none_match is not None and (if_none_match.strip() == "*" or tag in (
            t.strip().removeprefix("W/") for t in if_none_match.split(","))):
        return Response(status_code=304, headers={"ETag": tag})
    return respond(onboard.as_json(), status, {"ETag": tag})


@unit_of_work(write=False)
def list_page(account_id: str, args: dict) -> Response:
    found = page(Onboard.for_account(account_id), limit=args["limit"], after_id=args.get("after_id"),
                 before_id=args.get("before_id"), sort=args["sort"])
    headers = {}
    if found.more and found.last_id:
        cursor = {"before_id" if args["sort"] == "desc" else "after_id": found.last_id}
        following = args["url"].include_query_params(**cursor)
        headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return respond([onboard.as_json() for onboard in found.items], headers=headers)


@unit_of_work()
def create(account_id: str, body: dict) -> Response:
    onboard, created = Onboard.create_from_invitation(account_id, body["invitation_id"], body.get("flow_id"))
    return one(onboard, 201 if created else 200)


@unit_of_work(write=False)
def fetch(account_id: str, args: tuple[str, str | None]) -> Response:
    onboard_id, if_none_match = args
    return one(Onboard.get_for_account(account_id, onboard_id), if_none_match=if_none_match)


@unit_of_work()
def change(account_id: str, args: tuple[str, dict, set[int] | None]) -> Response:
    onboard_id, body, versions = args
    return one(Onboard.get_for_account(account_id, onboard_id).update_from(body, versions))


def list_args(url: URL, limit: int, sort: str, after_id: str | None, before_id: str | None) -> dict:
    cursors = {name: value for name, value in (("after_id", after_id), ("before_id", before_id)) if value}
    return {"limit": limit, "sort": sort, "url": url, **cursors}


async def list_onboards(request: Request) -> Response:
    async def checks() -> dict:
        query = request.query_params
        known_query(query)
        limit = query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise Problem(400, "limit is not an integer from 1 to 1000")
        if query.get("sort", "asc") not in ("asc", "desc"):
            raise Problem(400, "sort is not asc or desc")
        cursors = [object_id(query[name], name) if name in query else None for name in ("after_id", "before_id")]
        return list_args(request.url, int(limit), query.get("sort", "asc"), *cursors)

    return await call(request, checks, list_page)


async def create_onboard(request: Request) -> Response:
    return await call(request, lambda: json_body(request, CREATE), create)


async def get_onboard(request: Request) -> Response:
    async def checks() -> tuple[str, str | None]:
        return object_id(request.path_params["id"], "id"), request.headers.get("if-none-match")

    return await call(request, checks, fetch)


async def update_onboard(request: Request) -> Response:
    async def checks() -> tuple[str, dict, set[int] | None]:
        return object_id(request.path_params["id"], "id"), await json_body(request, UPDATE), if_match(request)

    return await call(request, checks, change)


async def health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def setup() -> Callable[[Any], contextlib.AbstractAsyncContextManager[None]]:
    """The service's start-up (onboards.app.create_app) for a reference app: logging, the database, the key
    cache, time and abuse limits; its lifespan: worker threads, the outbox sender, the heap frozen."""
    configure_logging(settings.log_format, settings.log_level.upper())
    bind(settings.database_url, max_connections=settings.db_max_connections,
         statement_timeout=settings.db_statement_timeout_seconds)
    sender = RUNTIME.sender
    assert sender is not None

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        set_worker_threads(settings.handler_threads)
        sender.start()
        freeze_heap()
        try:
            yield
        finally:
            thaw_heap()
            sender.stop()

    return lifespan


def create_app() -> Starlette:
    return Starlette(lifespan=setup(), routes=[
        Route("/onboards", list_onboards, methods=["GET"]),
        Route("/onboards", create_onboard, methods=["POST"]),
        Route("/onboards/{id}", get_onboard, methods=["GET"]),
        Route("/onboards/{id}", update_onboard, methods=["PUT"]),
        Route("/health", health, methods=["GET"]),
    ])


def serve(app: Any) -> None:
    # The service's runtime in every request's state (auth.basic_auth reads its keys there).
    uvicorn.run(Serving(app, RUNTIME), **uvicorn_options(settings))


if __name__ == "__main__":
    serve(create_app())

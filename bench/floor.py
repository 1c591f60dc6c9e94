"""The floor: the four benchmarked operations as a minimal hand-written Starlette app.

It does the same work per request as the service: HTTP Basic with the same API-key rule (digest
lookup, a verified key kept AUTH_CACHE_SECONDS), the spec's request rules for these routes checked
by hand, the same peewee models, queries and transactions, the same JSON encoder (the service's
`handlers.respond`, orjson), the same outbox sender, the same logging, uvicorn settings
(onboards.serving: the event loop, the heap frozen after start-up), handler thread pool (WORKER_THREADS)
and choice of what runs on the loop (handlers.runs_on_loop). What it leaves out is the machinery:
connexion's routing, JSON-schema validation and middleware stack, the service's own middleware
(request ids, metrics, guards), and a second worker-thread hop when the key must be looked up (here
lookup and operation share one).
A reference for `make bench`, not a product.

Run: DATABASE_URL=... HOST=... PORT=... python -m bench.floor
"""

import asyncio
import base64
import binascii
import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from http import HTTPStatus
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from handlers import respond, runs_on_loop
from models.accounts import ApiKey, Principal
from models.base import DomainError, bind, db, page, transaction
from models.onboards import MEMBERS, Onboard
from onboards.config import Settings
from onboards.mailer import OutboxSender
from onboards.serving import freeze_heap, start_worker_threads, thaw_heap, uvicorn_options

OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
STATUSES = ("created", "in_progress", "completed", "completed_flows_sync", "failed")
CREATE = {"invitation_id", "flow_id"}
UPDATE = {"invitation_id", "account_id", "connection_id", "flow_id", "status"}
settings = Settings.from_env()
AUTH_CACHE_SECONDS = float(getattr(settings, "auth_cache_seconds", 0) or 0)
principals: dict[str, tuple[float, Principal]] = {}  # digest → (expiry, principal); event loop only


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
    return password if colon and 0 < len(password) <= 200 else None


def object_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not OBJECT_ID.fullmatch(value):
        raise Problem(400, f"{where} is not a 24-hex id")
    return value


async def json_body(request: Request, allowed: set[str]) -> dict:
    """The spec's OnboardCreate / OnboardUpdate rules: an object, no unknown members, ids, status enum."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        raise Problem(415, "request body must be application/json")
    if int(request.headers.get("content-length") or 0) > settings.max_body_bytes:
        raise Problem(413, f"request body over {settings.max_body_bytes} bytes")
    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise Problem(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise Problem(400, "request body must be an object")
    if unknown := body.keys() - allowed:
        raise Problem(400, f"unknown member {sorted(unknown)[0]!r}")
    for name in body.keys() - {"status"}:
        object_id(body[name], name)
    if "invitation_id" not in body:
        raise Problem(400, "'invitation_id' is a required property")
    if "status" in body and body["status"] not in STATUSES:
        raise Problem(400, "status is not one of the onboard statuses")
    return body


def remembered(digest: str) -> Principal | None:
    """The service's rule (onboards.auth): a verified key's principal is kept AUTH_CACHE_SECONDS."""
    hit = principals.get(digest)
    return hit[1] if hit and hit[0] > time.monotonic() else None


async def call(request: Request, write: bool, checks: Callable[[], Any],
               operation: Callable[..., Response]) -> Response:
    """Authenticates, then (as connexion orders it) validates, then runs `operation(account_id, checked)`
    in one transaction; the key lookup, when needed, shares the operation's thread (a worker's, or the loop)
    and connection."""
    key = api_key(request)
    digest = ApiKey.digest_of(key) if key else ""
    known = remembered(digest) if key else None
    checked: Any = None
    invalid: Problem | None = None
    try:
        checked = await checks()
    except Problem as found:
        invalid = found

    def work() -> tuple[Principal | None, Response | None]:
        with db.connection_context():
            principal = known or (ApiKey.authenticate(key) if key else None)
            if principal is None:
                return None, None
            if invalid:
                raise invalid
            with transaction(write):
                return principal, operation(principal.account_id, checked)

    try:
        principal, response = work() if runs_on_loop(write) else await asyncio.to_thread(work)
    except Problem as failed:
        return problem(failed.status, failed.detail)
    except DomainError as failed:
        return problem(failed.status, str(failed))
    if principal is None or response is None:
        return problem(401, "authentication failed", {"WWW-Authenticate": 'Basic realm="onboards"'})
    if known is None and AUTH_CACHE_SECONDS > 0:
        if len(principals) >= 10_000:
            principals.clear()
        principals[digest] = (time.monotonic() + AUTH_CACHE_SECONDS, principal)
    return response


def known_query(query: Mapping[str, str]) -> None:
    """The list's query parameters are the spec's only (connexion's strict validation)."""
    if unknown := query.keys() - {"limit", "after_id", "before_id", "sort"}:
        raise Problem(400, f"unknown query parameter {sorted(unknown)[0]!r}")


def list_page(request: Request) -> Callable[[str, dict], Response]:
    def operation(account_id: str, args: dict) -> Response:
        found = page(Onboard.for_account, account_id, Onboard, after_id=args.get("after_id"),
                     before_id=args.get("before_id"), limit=args["limit"], sort=args["sort"], members=MEMBERS)
        headers = {}
        if found.more and found.last_id:
            cursor = {"before_id" if args["sort"] == "desc" else "after_id": found.last_id}
            headers["Link"] = f'<{request.url.include_query_params(**cursor)}>; rel="next"'
        return respond(found.items, headers=headers)

    return operation


def create(account_id: str, body: dict) -> Response:
    onboard, created = Onboard.create_from_invitation(account_id, body["invitation_id"], body.get("flow_id"))
    return respond(onboard.as_json(), 201 if created else 200)


def fetch(account_id: str, onboard_id: str) -> Response:
    return respond(Onboard.get_for_account(account_id, onboard_id).as_json())


def change(account_id: str, args: tuple[str, dict]) -> Response:
    onboard_id, body = args
    return respond(Onboard.get_for_account(account_id, onboard_id).update_from(body).as_json())


async def list_onboards(request: Request) -> Response:
    async def checks() -> dict:
        query = request.query_params
        known_query(query)
        limit = query.get("limit", "100")
        if not limit.isdigit() or not 1 <= int(limit) <= 1000:
            raise Problem(400, "limit is not an integer from 1 to 1000")
        if query.get("sort", "asc") not in ("asc", "desc"):
            raise Problem(400, "sort is not asc or desc")
        cursors = {name: object_id(query[name], name) for name in ("after_id", "before_id") if name in query}
        return {"limit": int(limit), "sort": query.get("sort", "asc"), **cursors}

    return await call(request, False, checks, list_page(request))


async def create_onboard(request: Request) -> Response:
    async def checks() -> dict:
        return await json_body(request, CREATE)

    return await call(request, True, checks, create)


async def get_onboard(request: Request) -> Response:
    async def checks() -> str:
        return object_id(request.path_params["id"], "id")

    return await call(request, False, checks, fetch)


async def update_onboard(request: Request) -> Response:
    async def checks() -> tuple[str, dict]:
        return object_id(request.path_params["id"], "id"), await json_body(request, UPDATE)

    return await call(request, True, checks, change)


async def health(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def connect() -> None:
    bind(settings.database_url, max_connections=settings.db_max_connections)


def create_app() -> Starlette:
    connect()
    sender = OutboxSender.from_settings(settings)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        start_worker_threads(settings.handler_threads)
        sender.start()
        freeze_heap()
        try:
            yield
        finally:
            thaw_heap()
            sender.stop()

    return Starlette(lifespan=lifespan, routes=[
        Route("/onboards", list_onboards, methods=["GET"]),
        Route("/onboards", create_onboard, methods=["POST"]),
        Route("/onboards/{id}", get_onboard, methods=["GET"]),
        Route("/onboards/{id}", update_onboard, methods=["PUT"]),
        Route("/health", health, methods=["GET"]),
    ])


def main() -> None:
    # The service's logging and uvicorn options (`onboards serve`): the e-mail log lines cost the same.
    try:
        from onboards.observe import configure_logging

        configure_logging(settings.log_format, settings.log_level.upper())
    except ImportError:
        import logging

        logging.basicConfig(level=logging.INFO)
    uvicorn.run(create_app(), **uvicorn_options(settings))


if __name__ == "__main__":
    main()

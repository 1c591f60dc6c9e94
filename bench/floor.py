"""The floor: the four benchmarked operations as a minimal hand-written Starlette app, the yardstick the service
is measured against. It shares no code with the service (tests/test_bench_isolation.py checks it): Starlette,
the database driver (`sqlite3`, `psycopg`) with hand-written SQL over the tables the service's migrations make,
`orjson`, a dict as the key cache (keys by their SHA-256 digest, as the service stores them), uvicorn with the
service's options. SQLite work runs on the event loop (a local file cannot hang on a network, and one connection
used by one thread needs no lock); PostgreSQL work runs in a worker thread with a deadline, a unit of work that
misses it rolled back. It answers the benchmarked requests as the service does (bench/run.py checks that), and
leaves out what they do not need (failed-login throttling, a PUT completing an onboard: 409). Not a product.

Run: DATABASE_URL=... HOST=... PORT=... python -m bench.floor
"""

import asyncio
import base64
import binascii
import concurrent.futures
import contextlib
import hashlib
import logging
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import orjson
import psycopg
import uvicorn
from starlette.applications import Starlette
from starlette.datastructures import URL, QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

log = logging.getLogger("floor")


def env_number(name: str, default: float) -> float:
    return float(os.environ.get(name) or default)


DATABASE_URL = os.environ.get("DATABASE_URL", "sqlite:///data/onboards.db")
ON_SQLITE = DATABASE_URL.startswith("sqlite")
MAX_BODY_BYTES = int(env_number("MAX_BODY_BYTES", 1024 * 1024))
REQUEST_SECONDS = env_number("REQUEST_TIMEOUT_SECONDS", 8)
STATEMENT_SECONDS = env_number("DB_STATEMENT_TIMEOUT_SECONDS", 5)
AUTH_CACHE_SECONDS = env_number("AUTH_CACHE_SECONDS", 5)
OUTBOX_POLL_SECONDS = env_number("OUTBOX_POLL_SECONDS", 0.5)
THREADS = int(env_number("WORKER_THREADS", 0)) or 4  # the service's default on PostgreSQL

OBJECT_ID = re.compile(r"[0-9a-fA-F]{24}")
BASIC = re.compile(r"basic +(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", re.IGNORECASE)
STATUSES = ("created", "in_progress", "completed", "completed_flows_sync", "failed")
COMPLETING = ("completed", "completed_flows_sync")
TRANSITIONS = {"created": {"in_progress", "completed", "failed"},
               "in_progress": {"completed", "completed_flows_sync", "failed"}, "failed": {"in_progress"}}
# The spec's OnboardCreate and OnboardUpdate members: (an ObjectId, nullable, longest string). PUT takes what
# GET gives: the read-only members are accepted, and ignored.
ID, TEXT = (True, False, 24), (False, False, 24)
CREATE = {"invitation_id": ID, "flow_id": ID}
UPDATE = {"invitation_id": ID, "account_id": ID, "connection_id": ID, "flow_id": (True, True, 24), "status": TEXT,
          "id": TEXT, "reason": (False, True, 500), "created_at": (False, False, 40), "updated_at": (False, False, 40)}
FIXED = ("invitation_id", "account_id", "connection_id")
QUERY = ("limit", "after_id", "before_id", "sort")

# An onboard as the API shows it, in the service's member order, then its version (the ETag).
MEMBERS = ("invitation_id", "id", "account_id", "connection_id", "flow_id", "status", "reason", "created_at",
           "updated_at")
ONBOARD = "SELECT " + ", ".join(f'"{m}"' for m in MEMBERS) + ', "version" FROM "onboard"'
GET = ONBOARD + ' WHERE "account_id" = ? AND "id" = ?'
PAGE = {(sort, after, before): ONBOARD + ' WHERE "account_id" = ?' + (' AND "id" > ?' if after else "")
        + (' AND "id" < ?' if before else "") + f' ORDER BY "id" {sort.upper()} LIMIT ?'
        for sort in ("asc", "desc") for after in (False, True) for before in (False, True)}
ADVANCE = ('UPDATE "onboard" SET "status" = ?, "flow_id" = ?, "reason" = ?, "version" = "version" + 1, '
           '"updated_at" = ? WHERE "id" = ? AND "version" = ?')
TOTAL = 'SELECT COUNT(*) FROM "onboard" WHERE "account_id" = ?'
KEY = ('SELECT "user"."account_id" FROM "api_key" JOIN "user" ON "user"."id" = "api_key"."user_id" '
       'WHERE "api_key"."digest" = ? AND "api_key"."revoked_at" IS NULL')
INVITATION = ('SELECT "id", "kind", "account_id", "email", "expires_at", "accepted_at", "accepted_by_id", '
              '"entity_id", "connection_id" FROM "invitation" WHERE "id" = ? AND ("account_id" = ? OR "email" IN '
              '(SELECT "email" FROM "user" WHERE "account_id" = ?) OR "accepted_by_id" = ?)')
OUTBOX_DUE = ('SELECT "id", "to", "subject" FROM "outbox_message" WHERE "sent_at" IS NULL AND "failed_at" IS NULL '
              'AND "suppressed_at" IS NULL AND "next_attempt_at" <= ? ORDER BY "attempts", "next_attempt_at", "id" '
              'LIMIT 50')


class Problem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        self.status, self.detail = status, detail


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    body = {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status, "detail": detail,
            "error": detail}
    return Response(orjson.dumps(body), status, headers, media_type="application/problem+json")


def new_id() -> str:
    """Time-ordered 24-hex ids, as the service makes them (4 bytes of seconds first)."""
    return f"{int(time.time()):08x}{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


# --- the database ---------------------------------------------------------------------------------------------

class Tx:
    """One unit of work's statements on one connection (`?` placeholders)."""

    def __init__(self, cursor: Any, postgres: bool) -> None:
        self.cursor, self.postgres = cursor, postgres

    def rows(self, sql: str, *args: Any) -> list[tuple]:
        return self.cursor.execute(sql.replace("?", "%s") if self.postgres else sql, args).fetchall()

    def row(self, sql: str, *args: Any) -> tuple | None:
        return self.cursor.execute(sql.replace("?", "%s") if self.postgres else sql, args).fetchone()

    def change(self, sql: str, *args: Any) -> int:
        return self.cursor.execute(sql.replace("?", "%s") if self.postgres else sql, args).rowcount

    def now(self) -> Any:
        """Now as the service stores it: a naive UTC time, as text on SQLite."""
        now = utcnow()
        return now if self.postgres else now.isoformat(" ")

    def stamp(self, value: Any) -> str | None:
        """A stored time as RFC 3339 to the second."""
        if value is None:
            return None
        text = value.isoformat(" ") if isinstance(value, datetime) else value
        return f"{text[:10]}T{text[11:19]}Z"


class Unavailable(Exception):
    pass


class SqliteStore:
    """One connection, used on the event loop only: a unit of work runs between two awaits, so it is alone."""

    def __init__(self, path: str) -> None:
        self.connection = sqlite3.connect(path, isolation_level=None, timeout=STATEMENT_SECONDS)
        for pragma in ("journal_mode = wal", f"busy_timeout = {int(STATEMENT_SECONDS * 1000)}", "foreign_keys = 1",
                       "synchronous = normal"):
            self.connection.execute(f"PRAGMA {pragma}")

    async def run(self, work: Callable[..., Any], *args: Any, write: bool = False) -> Any:
        cursor = self.connection.cursor()
        if not write:
            return work(Tx(cursor, False), *args)
        cursor.execute("BEGIN IMMEDIATE")
        try:
            result = work(Tx(cursor, False), *args)
        except BaseException:
            cursor.execute("ROLLBACK")
            raise
        cursor.execute("COMMIT")
        return result

    def close(self) -> None:
        self.connection.close()


class PostgresStore:
    """A connection per worker thread; each unit of work within REQUEST_SECONDS, else the request gets a 503 and
    the work, when the database answers again, is rolled back instead of committed."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.pool = concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="floor-db")
        self.local = threading.local()
        self.connections: list[psycopg.Connection] = []

    def _connection(self) -> psycopg.Connection:
        connection = getattr(self.local, "connection", None)
        if connection is None or connection.closed:
            connection = self.local.connection = psycopg.connect(
                self.url, autocommit=True, connect_timeout=max(2, int(STATEMENT_SECONDS)),
                options=f"-c statement_timeout={int(STATEMENT_SECONDS * 1000)}")
            self.connections.append(connection)
        return connection

    def _work(self, work: Callable[..., Any], args: tuple, write: bool, abandoned: threading.Event) -> Any:
        connection = self._connection()
        if not write:
            return work(Tx(connection.cursor(), True), *args)
        with connection.transaction():
            result = work(Tx(connection.cursor(), True), *args)
            if abandoned.is_set():
                raise Unavailable
            return result

    async def run(self, work: Callable[..., Any], *args: Any, write: bool = False) -> Any:
        abandoned = threading.Event()
        job = asyncio.get_running_loop().run_in_executor(self.pool, self._work, work, args, write, abandoned)
        try:
            async with asyncio.timeout(REQUEST_SECONDS):
                return await job
        except TimeoutError:
            abandoned.set()
            raise Unavailable from None
        except psycopg.OperationalError:
            raise Unavailable from None

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        for connection in self.connections:
            connection.close()


def open_store() -> SqliteStore | PostgresStore:
    if ON_SQLITE:
        return SqliteStore(DATABASE_URL.removeprefix("sqlite:///"))
    parts = urlsplit(DATABASE_URL)
    return PostgresStore(parts._replace(scheme="postgresql").geturl())


store: SqliteStore | PostgresStore


# --- the operations' SQL --------------------------------------------------------------------------------------

def render(tx: Tx, row: tuple) -> dict:
    found = dict(zip(MEMBERS, row, strict=False))
    found["created_at"], found["updated_at"] = tx.stamp(found["created_at"]), tx.stamp(found["updated_at"])
    return found


def account_of(tx: Tx, digest: str) -> str | None:
    found = tx.row(KEY, digest)
    return found[0] if found else None


def fetch(tx: Tx, account_id: str, onboard_id: str) -> tuple[dict, int]:
    found = tx.row(GET, account_id, onboard_id.lower())
    if found is None:
        raise Problem(404, "onboard not found")
    return render(tx, found), found[-1]


def list_page(tx: Tx, account_id: str, limit: int, sort: str, after_id: str | None, before_id: str | None
              ) -> tuple[list[dict], int]:
    """Up to `limit` + 1 onboards (one more tells whether more follow), and the account's total (X-Total-Count)."""
    cursors = [c.lower() for c in (after_id, before_id) if c]
    items = [render(tx, row) for row in tx.rows(PAGE[sort, bool(after_id), bool(before_id)], account_id, *cursors,
                                                limit + 1)]
    return items, tx.rows(TOTAL, account_id)[0][0]


def change(tx: Tx, account_id: str, onboard_id: str, body: dict, versions: set[int] | None) -> tuple[dict, int]:
    """The service's update rules, for a change of status or flow that completes nothing."""
    while True:
        onboard, version = fetch(tx, account_id, onboard_id)
        if versions is not None and version not in versions:
            raise Problem(412, "onboard has changed since it was read (If-Match)")
        for name in FIXED:
            if name in body and body[name].lower() != onboard[name]:
                raise Problem(409, f"{name} cannot change")
        status, flow_id = body.get("status", onboard["status"]), onboard["flow_id"]
        if "flow_id" in body:
            flow_id = body["flow_id"] and body["flow_id"].lower()
        if status == onboard["status"] and flow_id == onboard["flow_id"]:
            return onboard, version
        if onboard["status"] in COMPLETING:
            raise Problem(409, f"onboard is {onboard['status']}: it cannot change any more")
        if status != onboard["status"] and status not in TRANSITIONS[onboard["status"]]:
            raise Problem(409, f"cannot change status from {onboard['status']} to {status}")
        if status in COMPLETING:
            raise Problem(409, "the floor does not set up delivery")
        if flow_id is not None and flow_id != onboard["flow_id"]:
            owned_flow(tx, account_id, flow_id)
        reason = onboard["reason"] if status == onboard["status"] else None
        if tx.change(ADVANCE, status, flow_id, reason, tx.now(), onboard["id"], version):
            return fetch(tx, account_id, onboard_id)


def owned_flow(tx: Tx, account_id: str, flow_id: str) -> None:
    if tx.row('SELECT 1 FROM "flow" WHERE "id" = ? AND "account_id" = ?', flow_id.lower(), account_id) is None:
        raise Problem(404, "flow not found")


def create(tx: Tx, account_id: str, invitation_id: str, flow_id: str | None) -> tuple[dict, int, int]:
    """The buyer's onboard for an invitation (accepting it when the buyer is its invitee), with the inviter's
    e-mail queued: (onboard, version, 201 or 200 when it existed)."""
    invitation = tx.row(INVITATION, invitation_id.lower(), account_id, account_id, account_id)
    if invitation is None:
        raise Problem(404, "invitation not found")
    iid, kind, inviter, _email, _expires_at, accepted_at, accepted_by, _entity_id, connection_id = invitation
    existing = tx.row(ONBOARD + ' WHERE "invitation_id" = ? AND "account_id" = ?', iid, account_id)
    if existing is not None:
        return render(tx, existing), existing[-1], 200
    if kind == "recipient":
        if inviter == account_id:
            raise Problem(409, "the invited buyer onboards, not the inviting seller")
        if accepted_by != account_id:
            accept(tx, account_id, invitation)
    elif inviter != account_id:
        raise Problem(409, "a source invitation is onboarded by the buyer that sent it")
    elif accepted_at is None:
        raise Problem(409, "the invited seller has not accepted the invitation yet")
    if flow_id:
        owned_flow(tx, account_id, flow_id)
    onboard_id, now = new_id(), tx.now()
    tx.change('INSERT INTO "onboard" ("id", "account_id", "invitation_id", "connection_id", "flow_id", "status", '
              '"reason", "version", "created_at", "updated_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
              onboard_id, account_id, iid, connection_id, flow_id and flow_id.lower(), "created", None, 1, now, now)
    onboard, version = fetch(tx, account_id, onboard_id)
    return onboard, version, 201


def accept(tx: Tx, account_id: str, invitation: tuple) -> None:
    iid, _kind, inviter, email, expires_at, accepted_at, _by, entity_id, connection_id = invitation
    if tx.row('SELECT 1 FROM "user" WHERE "account_id" = ? AND "email" = ?', account_id, email) is None:
        raise Problem(409, "only the invited account can accept this invitation")
    now = tx.now()
    if accepted_at is not None:
        raise Problem(409, "invitation already accepted by another account")
    if str(expires_at) <= str(now):
        raise Problem(410, "invitation expired")
    if not tx.change('UPDATE "invitation" SET "accepted_at" = ?, "accepted_by_id" = ? WHERE "id" = ? AND '
                     '"accepted_at" IS NULL', now, account_id, iid):
        raise Problem(409, "invitation already accepted by another account")
    names = dict(tx.rows('SELECT "id", "name" FROM "account" WHERE "id" IN (?, ?)', inviter, account_id))
    tx.change('UPDATE "entity" SET "pending" = ?, "name" = ?, "connected_account_id" = ?, "updated_at" = ? '
              'WHERE "id" = ?', False, names[account_id], account_id, now, entity_id)
    mirror = new_id()
    tx.change('INSERT INTO "entity" ("id", "account_id", "name", "source", "recipient", "is_account", "pending", '
              '"connected_account_id", "invitation_id", "module_ids", "deprecated", "trustedform_certified_vendor", '
              '"created_at", "updated_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
              mirror, account_id, names[inviter], "seller", None, True, False, inviter, iid, "[]", False, False,
              now, now)
    tx.change('UPDATE "connection" SET "buyer_id" = ?, "seller_entity_id" = ?, "updated_at" = ? WHERE "id" = ?',
              account_id, mirror, now, connection_id)
    subject = f"{names[account_id]} accepted your invitation"
    body = f"{names[account_id]} accepted your invitation sent to {email}.\nConnection id: {connection_id}\n"
    for (address,) in tx.rows('SELECT "email" FROM "user" WHERE "account_id" = ? ORDER BY "id"', inviter):
        tx.change('INSERT INTO "outbox_message" ("id", "kind", "to", "subject", "body", "created_at", "attempts", '
                  '"next_attempt_at") VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
                  new_id(), "invitation_accepted", address, subject, body, now, 0, now)


def send_due(tx: Tx) -> int:
    """The outbox's due messages 'sent' as the service sends them without SMTP_URL: logged."""
    due = tx.rows(OUTBOX_DUE, tx.now())
    for message_id, to, subject in due:
        log.info("e-mail to %s: %s", to, subject)
        tx.change('UPDATE "outbox_message" SET "sent_at" = ?, "attempts" = "attempts" + 1 WHERE "id" = ?',
                  tx.now(), message_id)
    return len(due)


# --- HTTP -----------------------------------------------------------------------------------------------------

# digest → (account id, until when): a verified key's account, for AUTH_CACHE_SECONDS.
keys: dict[str, tuple[str, float]] = {}


async def authenticated(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if not BASIC.fullmatch(header):
        return None
    try:
        _user, colon, password = base64.b64decode(header.partition(" ")[2].strip(), validate=True).decode(
            ).partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    if not colon or not password or len(password) > 200:
        return None
    digest = hashlib.sha256(password.encode("utf-8", "surrogatepass")).hexdigest()
    cached = keys.get(digest)
    if cached is not None and cached[1] > time.monotonic():
        return cached[0]
    account_id = await store.run(account_of, digest)
    if account_id is not None and AUTH_CACHE_SECONDS > 0:
        keys[digest] = (account_id, time.monotonic() + AUTH_CACHE_SECONDS)
    return account_id


def object_id(value: Any, where: str) -> str:
    if not isinstance(value, str) or not OBJECT_ID.fullmatch(value):
        raise Problem(400, f"{where} is not a 24-hex id")
    return value


async def json_body(request: Request, members: dict[str, tuple[bool, bool, int]]) -> dict:
    """The spec's OnboardCreate / OnboardUpdate rules: an object of known members, strings (ids, the status
    enum, bounded lengths) or null where nullable, invitation_id required."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
        raise Problem(415, "request body must be application/json")
    if int(request.headers.get("content-length") or 0) > MAX_BODY_BYTES:
        raise Problem(413, f"request body over {MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
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


def if_match(request: Request) -> set[int] | None:
    header = request.headers.get("if-match")
    if header is None or header.strip() == "*":
        return None
    tags = (tag.strip() for tag in header.split(","))
    return {int(tag[2:-1]) for tag in tags if re.fullmatch(r'"v\d{1,9}"', tag)}


def one(onboard: dict, version: int, status: int = 200, if_none_match: str | None = None) -> Response:
    """A strong ETag, and 304 for a GET whose If-None-Match names it."""
    tag = f'"v{version}"'
    if if_none_match is not None and (if_none_match.strip() == "*" or tag in (
            t.strip().removeprefix("W/") for t in if_none_match.split(","))):
        return Response(status_code=304, headers={"ETag": tag})
    return Response(orjson.dumps(onboard), status, {"ETag": tag}, media_type="application/json")


async def call(request: Request, checks: Callable[[], Awaitable[Any]], operation: Callable[[str, Any], Awaitable[Any]]
               ) -> Response:
    """In connexion's order: authenticates, validates, then answers `operation(account_id, checked)`."""
    try:
        account_id = await authenticated(request)
        if account_id is None:
            return problem(401, "authentication failed", {"WWW-Authenticate": 'Basic realm="onboards"'})
        return await operation(account_id, await checks())
    except Problem as failed:
        return problem(failed.status, failed.detail)
    except Unavailable:
        return problem(503, "the database did not answer in time", {"Retry-After": "1"})


def list_args(url: URL, limit: int, sort: str, after_id: str | None, before_id: str | None) -> dict:
    return {"url": url, "limit": limit, "sort": sort, "after_id": after_id, "before_id": before_id}


async def answer_list(account_id: str, args: dict) -> Response:
    items, total = await store.run(list_page, account_id, args["limit"], args["sort"], args["after_id"],
                                   args["before_id"])
    headers = {"X-Total-Count": str(total)}
    if len(items) > args["limit"]:
        items = items[:args["limit"]]
        cursor = {"before_id" if args["sort"] == "desc" else "after_id": items[-1]["id"]}
        following = args["url"].include_query_params(**cursor)
        headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return Response(orjson.dumps(items), 200, headers, media_type="application/json")


async def answer_get(account_id: str, args: tuple[str, str | None]) -> Response:
    onboard_id, if_none_match = args
    onboard, version = await store.run(fetch, account_id, onboard_id)
    return one(onboard, version, if_none_match=if_none_match)


async def answer_put(account_id: str, args: tuple[str, dict, set[int] | None]) -> Response:
    return one(*await store.run(change, account_id, *args, write=True))


async def answer_post(account_id: str, body: dict) -> Response:
    onboard, version, status = await store.run(create, account_id, body["invitation_id"], body.get("flow_id"),
                                               write=True)
    return one(onboard, version, status)


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

    return await call(request, checks, answer_list)


async def create_onboard(request: Request) -> Response:
    return await call(request, lambda: json_body(request, CREATE), answer_post)


async def get_onboard(request: Request) -> Response:
    async def checks() -> tuple[str, str | None]:
        return object_id(request.path_params["id"], "id"), request.headers.get("if-none-match")

    return await call(request, checks, answer_get)


async def update_onboard(request: Request) -> Response:
    async def checks() -> tuple[str, dict, set[int] | None]:
        return object_id(request.path_params["id"], "id"), await json_body(request, UPDATE), if_match(request)

    return await call(request, checks, answer_put)


async def health(_request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def outbox_sender() -> None:
    while True:
        with contextlib.suppress(Unavailable, sqlite3.OperationalError):
            while await store.run(send_due, write=True):
                pass
        await asyncio.sleep(OUTBOX_POLL_SECONDS)


@contextlib.asynccontextmanager
async def lifespan(_app: Any) -> AsyncIterator[None]:
    global store
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    store = open_store()
    sender = asyncio.ensure_future(outbox_sender())
    try:
        yield
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        store.close()


def create_app() -> Starlette:
    return Starlette(lifespan=lifespan, routes=[
        Route("/onboards", list_onboards, methods=["GET"]),
        Route("/onboards", create_onboard, methods=["POST"]),
        Route("/onboards/{id}", get_onboard, methods=["GET"]),
        Route("/onboards/{id}", update_onboard, methods=["PUT"]),
        Route("/health", health, methods=["GET"]),
    ])


def serve(app: Any) -> None:
    """uvicorn with the service's options (onboards.serving.uvicorn_options), its own HTTP protocol class aside:
    httptools, no log config nor access log, the same keep-alive, graceful shutdown and connection limit."""
    uvicorn.run(app, host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "8000")),
                log_config=None, access_log=False, timeout_graceful_shutdown=30, http="httptools",
                timeout_keep_alive=int(env_number("KEEP_ALIVE_SECONDS", 5)),
                limit_concurrency=int(env_number("MAX_CONNECTIONS", 1000)))


if __name__ == "__main__":
    serve(create_app())

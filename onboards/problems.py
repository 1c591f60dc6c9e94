"""RFC 9457 problem responses: every `application/problem+json` body is built by `render`, whoever answers
(connexion's error handlers, the middlewares, the HTTP protocol's own refusals). Each cause has a stable
`type`, a relative URI into the served docs: `/docs/problems#<name>`; TYPES maps each domain error class
of models/ to its status and name, BY_STATUS names the causes the HTTP layers find themselves."""

import logging
import re
from http import HTTPStatus
from typing import Any

import orjson
import peewee
from connexion import AsyncApp
from connexion.exceptions import ProblemException
from connexion.lifecycle import ConnexionRequest, ConnexionResponse
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope, Send

from models.accounts import ClockLimit, SettingsExist, UserExists
from models.base import (
    DATABASE_UNAVAILABLE,
    DomainError,
    Gone,
    InvalidValue,
    NotFound,
    Refused,
    Unavailable,
    VersionChanged,
)
from models.entities import AccountEntityFixed, EntityInUse
from models.idempotency import KeyInProgress, KeyReused
from models.invitations import AlreadyAccepted, NotAccepted, OwnAccount, WrongParty
from models.limits import Throttled
from models.onboards import DifferentConnections, FixedMember, IllegalTransition, OnboardExists
from models.setup import AlreadySetUp, FlowFull

log = logging.getLogger("onboards")

TYPE_BASE = "/docs/problems#"  # served by onboards.app: the spec's Problem.type description, as a page
MAX_DETAIL = 300
_QUOTED = re.compile(r"'([^']{40})[^']+'")
SURROGATE = re.compile("[\ud800-\udfff]")

# Each domain error class: the status it is answered with and the name of its cause. A class not listed
# is answered as its nearest listed base class is.
TYPES: dict[type[DomainError], tuple[int, str]] = {
    DomainError: (409, "conflict"),
    NotFound: (404, "not-found"),
    Gone: (410, "gone"),
    VersionChanged: (412, "version-changed"),
    Throttled: (429, "throttled"),
    Unavailable: (503, "unavailable"),
    InvalidValue: (409, "invalid-value"),
    ClockLimit: (409, "clock-limit"),
    UserExists: (409, "user-exists"),
    SettingsExist: (409, "settings-exist"),
    AccountEntityFixed: (409, "account-entity"),
    EntityInUse: (409, "entity-in-use"),
    OwnAccount: (409, "own-account"),
    AlreadyAccepted: (409, "already-accepted"),
    WrongParty: (409, "wrong-party"),
    NotAccepted: (409, "not-accepted"),
    OnboardExists: (409, "onboard-exists"),
    FixedMember: (409, "fixed-member"),
    IllegalTransition: (409, "illegal-transition"),
    DifferentConnections: (409, "different-connections"),
    AlreadySetUp: (409, "already-set-up"),
    FlowFull: (409, "flow-full"),
    KeyInProgress: (409, "idempotency-key-in-use"),
    KeyReused: (422, "idempotency-key-reused"),
}
# The causes the HTTP layers find (the parser, the middlewares, connexion's routing, security and
# validation), one per status.
BY_STATUS = {400: "invalid-request", 401: "unauthenticated", 403: "forbidden", 404: "not-found",
             405: "method-not-allowed", 406: "not-acceptable", 408: "request-timeout", 413: "body-too-large",
             415: "unsupported-media-type", 431: "head-too-large", 500: "internal-error",
             501: "transfer-coding", 503: "unavailable"}
# Causes the error handlers below tell apart from others of their status.
CONCURRENT_CHANGE, UNSTORABLE, BUSY = "concurrent-change", "unstorable-value", "server-busy"
# Causes of the refusals a server limit makes (onboards.runtime.Runtime.refusal).
PER_CLIENT, BODY_MEMORY = "connections-per-client", "body-memory"


def all_types() -> set[str]:
    """Every cause's name this server can answer with."""
    return ({name for _status, name in TYPES.values()} | set(BY_STATUS.values())
            | {CONCURRENT_CHANGE, UNSTORABLE, BUSY, PER_CLIENT, BODY_MEMORY})


def shorten(text: str) -> str:
    """A message safe to send back: quoted input cut to 40 characters, the whole to MAX_DETAIL, and no lone
    surrogate (which no JSON writer writes as Unicode)."""
    text = SURROGATE.sub("\ufffd", _QUOTED.sub(lambda m: f"'{m.group(1)}…'", str(text)))
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 1] + "…"


def render(status: int, detail: str, *, cause: str | None = None, errors: list[dict] | None = None) -> bytes:
    """The problem+json body: `cause` names its type (by default the status's), `error` repeats `detail` for
    clients written for LeadConduit's `{"error": "…"}`, `errors` lists validation findings."""
    detail = shorten(detail)
    name = cause or BY_STATUS.get(status)
    body: dict[str, Any] = {"type": TYPE_BASE + name if name else "about:blank", "title": HTTPStatus(status).phrase,
                            "detail": detail, "status": status, "error": detail}
    if errors:
        body["errors"] = errors
    return orjson.dumps(body)


def problem_response(status: int, detail: str, *, cause: str | None = None, headers: dict | None = None,
                     errors: list[dict] | None = None) -> ConnexionResponse:
    return ConnexionResponse(status, "application/problem+json", "application/problem+json",
                             body=render(status, detail, cause=cause, errors=errors), headers=dict(headers or {}))


async def send_problem(send: Send, status: int, detail: str, headers: list | None = None, *,
                       cause: str | None = None, errors: list[dict] | None = None) -> None:
    """The problem as plain ASGI messages, for middleware that answers before connexion does."""
    body = render(status, detail, cause=cause, errors=errors)
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def answer_for(error: DomainError) -> tuple[int, str]:
    """The status and cause TYPES gives the error's class, or its nearest listed base class."""
    return next(TYPES[kind] for kind in type(error).__mro__ if kind in TYPES)


def refusal_headers(scope: Scope, error: DomainError) -> dict[str, str]:
    """For a limit's refusal (models.base.Refused: Throttled, Unavailable): counted in the serving app's
    metrics, and its Retry-After; else nothing."""
    if not isinstance(error, Refused):
        return {}
    scope["state"]["runtime"].metrics.refused(error.limit)
    return {"Retry-After": str(error.retry_after)}


def install(app: AsyncApp) -> None:
    """The error handlers (connexion's `add_error_handler`): every exception a request raises is a problem."""

    async def on_http_error(request: ConnexionRequest, exc: HTTPException) -> ConnexionResponse:
        headers = dict(exc.headers or {})
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail else HTTPStatus(exc.status_code).phrase
        if exc.status_code == 401:
            sandbox = request.scope["path"].startswith("/sandbox/")
            headers["WWW-Authenticate"] = 'SandboxToken realm="sandbox"' if sandbox else 'Basic realm="onboards"'
            detail = "authentication failed"
        errors = (exc.ext or {}).get("errors") if isinstance(exc, ProblemException) else None
        # jsonschema appends the whole schema and value after a blank line: keep the first part.
        return problem_response(exc.status_code, detail.split("\n\n", 1)[0], headers=headers, errors=errors)

    async def on_domain_error(request: ConnexionRequest, exc: DomainError) -> ConnexionResponse:
        status, cause = answer_for(exc)
        return problem_response(status, str(exc), cause=cause, headers=refusal_headers(request.scope, exc))

    async def on_database_error(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.error("database unavailable: %r", exc)
        return problem_response(503, "the database is unavailable: retry after 1 second",
                                headers={"Retry-After": "1"})

    async def on_constraint(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        # Domain rules answer conflicts themselves; this is a race they did not foresee, which the
        # database's constraint settled (the transaction is rolled back): never a 500.
        log.warning("constraint violation answered as 409: %r", exc)
        return problem_response(409, "the request conflicts with a concurrent change: read again and retry",
                                cause=CONCURRENT_CHANGE)

    async def on_unstorable(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.warning("value the database cannot store answered as 400: %r", exc)
        return problem_response(400, "the request holds a value the database cannot store", cause=UNSTORABLE)

    async def on_client_gone(_request: ConnexionRequest, _exc: Exception) -> ConnexionResponse:
        # The client closed the connection before its body arrived: nobody reads this answer.
        return problem_response(400, "the client closed the connection before the request body arrived")

    async def on_unexpected(_request: ConnexionRequest, exc: Exception) -> ConnexionResponse:
        log.exception("unexpected error", exc_info=exc)
        return problem_response(500, "internal error")

    app.add_error_handler(HTTPException, on_http_error)
    app.add_error_handler(ProblemException, on_http_error)
    app.add_error_handler(DomainError, on_domain_error)
    for unavailable in DATABASE_UNAVAILABLE:
        app.add_error_handler(unavailable, on_database_error)
    app.add_error_handler(peewee.IntegrityError, on_constraint)
    app.add_error_handler(peewee.DataError, on_unstorable)
    app.add_error_handler(ClientDisconnect, on_client_gone)
    app.add_error_handler(Exception, on_unexpected)

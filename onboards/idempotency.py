"""The `Idempotency-Key` of a POST (models/idempotency.py has the rules): placed after connexion's security
and validation, so the key is the spec's and the account is known; the request's unit of work keeps the
answer (handlers.unit_of_work), this middleware claims the key first and replays a kept answer."""

import logging
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import anyio
import orjson
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from handlers.lifecycle import bounded, deadline
from models import idempotency
from models.base import DomainError, transaction
from onboards.middleware import replay
from onboards.problems import answer_for, refusal_headers, send_problem

T = TypeVar("T")
log = logging.getLogger("onboards.idempotency")


class Idempotency:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key = Headers(scope=scope).get("idempotency-key") if scope["type"] == "http" else None
        context = scope.get("extensions", {}).get("connexion_context", {})
        account_id = (context.get("token_info") or {}).get("account_id")
        if key is None or account_id is None or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        fingerprint = idempotency.digest(scope["method"].encode(), scope["path"].encode(),
                                         scope.get("query_string", b""), bytes(body))
        try:
            begun = await _in_database(idempotency.begin, account_id, key, fingerprint, _claim())
        except DomainError as refused:
            status, cause = answer_for(refused)
            headers = [(name.lower().encode(), value.encode())
                       for name, value in refusal_headers(scope, refused).items()]
            return await send_problem(send, status, str(refused), headers, cause=cause)
        if begun.answer is not None:
            return await _replay(begun.answer, send)
        assert begun.claim is not None
        token = idempotency.current.set(begun.claim)
        try:
            await self.app(scope, replay({"type": "http.request", "body": bytes(body), "more_body": False}, receive),
                           send)
        finally:
            idempotency.current.reset(token)
            # A claim whose answer was kept is not freed; one whose work was undone is. The database away:
            # the claim lapses by itself (_claim).
            with anyio.CancelScope(shield=True):
                try:
                    await _in_database(idempotency.release, begun.claim)
                except Exception:  # the answer is sent already, and the claim lapses by itself
                    log.warning("an Idempotency-Key claim could not be freed", exc_info=True)


def _claim() -> timedelta:
    """How long a request holds its key: its unit of work is answered 503 and undone after
    REQUEST_TIMEOUT_SECONDS, its claim is freed after that, and twice the time leaves the commit room to
    finish."""
    return timedelta(seconds=2 * deadline())


async def _in_database(function: Callable[..., T], *args: object) -> T:
    """`function(*args)` in a transaction in a worker thread, within the time a request may take (else
    Unavailable)."""

    def run(_abandoned: object) -> T:
        with transaction():
            return function(*args)

    return await bounded(run)


async def _replay(answer: idempotency.IdempotencyKey, send: Send) -> None:
    body = bytes(answer.body or b"")
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in orjson.loads(answer.headers or "[]")
               if name.lower() != "content-length"]
    start: Message = {"type": "http.response.start", "status": answer.status,
                      "headers": [*headers, (b"content-length", str(len(body)).encode())]}
    await send(start)
    await send({"type": "http.response.body", "body": body})

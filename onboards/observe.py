"""Request ids, structured logs, and the counts of onboards.metrics."""

import logging
import re
import secrets
import sys
import time
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onboards.metrics import Metrics

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
JOIN_LINK = re.compile(r"^/join/[^/]*")  # the secret of an invitation's join link: never logged
request_id: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("onboards.access")

class RequestIdFilter(logging.Filter):
    """Stamps every record with the id of the request it was logged for ("-" outside requests)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        record.__dict__.pop("color_message", None)  # uvicorn's copy of the message with terminal colours
        return True


def configure_logging(log_format: str, level: str) -> None:
    """JSON lines (`json`) for machines, or plain lines (`text`) for people, on stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RequestIdFilter())
    if log_format == "json":
        handler.setFormatter(JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s",
                                           rename_fields={"asctime": "ts", "levelname": "level"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    root = logging.getLogger()
    # Replace only the handler this function installed before (tests build many apps).
    root.handlers[:] = [h for h in root.handlers if not getattr(h, "onboards", False)] + [handler]
    handler.onboards = True  # type: ignore[attr-defined]
    root.setLevel(level)
    # connexion logs every problem it raises; our access log already says which request failed how.
    logging.getLogger("connexion").setLevel(max(logging.getLevelName(level), logging.ERROR))


class Observe:
    """Outermost middleware: gives each request an id (the client's X-Request-ID when sane), echoes
    it in the response, counts and times the request by operationId and status, and writes the access log.
    A request whose client left before it was answered counts as 499."""

    def __init__(self, app: ASGIApp, metrics: Metrics, *, access_log: bool) -> None:
        self.app, self.metrics, self.log_access = app, metrics, access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        offered = Headers(scope=scope).get("x-request-id", "")
        rid = offered if SANE_REQUEST_ID.fullmatch(offered) else secrets.token_hex(16)
        token = request_id.set(rid)
        # connexion fills these in place: the routed operationId and the authenticated account.
        extensions = scope.setdefault("extensions", {})
        started, status, gone = time.perf_counter(), 0, False

        async def receive_noting_departure() -> Message:
            nonlocal gone
            message = await receive()
            gone = gone or (message["type"] == "http.disconnect" and not status)
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive_noting_departure, send_with_id)
        finally:
            # A client gone before any answer is nginx's 499 (whatever the app sends then reaches nobody);
            # an app that ends without answering a client still there is a 500 (uvicorn sends one).
            status = 499 if gone else status or 500
            duration = time.perf_counter() - started
            # The spec's operationId, without the controller connexion prefixes it with.
            operation = (extensions.get("connexion_routing", {}).get("operation_id") or "-").rpartition(".")[2]
            self.metrics.count(operation, status, duration)
            if self.log_access:
                token_info = extensions.get("connexion_context", {}).get("token_info") or {}
                duration_ms = round(duration * 1000, 2)
                # A decoded %0A in a path would start a forged line of its own in a text log.
                shown = JOIN_LINK.sub("/join/…", scope["path"])
                path = shown if shown.isprintable() else shown.encode("unicode_escape").decode()
                access_log.info("%s %s %s %.2fms", scope["method"], path, status, duration_ms, extra={
                    "method": scope["method"], "path": shown, "operation_id": operation,
                    "account_id": token_info.get("account_id"), "status": status, "duration_ms": duration_ms})
            request_id.reset(token)

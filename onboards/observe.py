"""Request ids, structured logs and Prometheus metrics."""

import itertools
import logging
import os
import re
import secrets
import sys
import time
import typing as t
from collections.abc import Iterator
from contextvars import ContextVar

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from models.base import db
from models.outbox import OutboxMessage

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:/+=-]{1,128}")
request_id: ContextVar[str] = ContextVar("request_id", default="-")
access_log = logging.getLogger("onboards.access")

# A made request id is this process's random prefix and its count of requests: unique across processes
# and hosts without the system call `secrets.token_hex` makes for each (request ids are for finding a
# request's log lines, not secrets). A forked child takes a prefix of its own.
_id_prefix = secrets.token_hex(8)
_id_count = itertools.count()


def _new_id_prefix() -> None:
    global _id_prefix
    _id_prefix = secrets.token_hex(8)


os.register_at_fork(after_in_child=_new_id_prefix)


def new_request_id() -> str:
    return f"{_id_prefix}{next(_id_count):016x}"

REQUESTS = Counter("onboards_requests_total", "HTTP requests answered", ["operation", "status"])
LATENCY = Histogram("onboards_request_duration_seconds", "Time from request to the end of the response",
                    ["operation"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))


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
    it in the response, counts and times the request by operationId, and writes the access log."""

    def __init__(self, app: ASGIApp, *, access_log: bool) -> None:
        self.app, self.log_access = app, access_log
        # Each (operation, status)'s metric children, kept: prometheus-client's labels() checks and
        # locks on every call. Operations come from the spec and statuses from the service: few.
        self.children: dict[tuple[str, int], tuple[t.Any, t.Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        offered = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = offered if SANE_REQUEST_ID.fullmatch(offered) else new_request_id()
        token = request_id.set(rid)
        # connexion fills these in place: the routed operationId and the authenticated account.
        extensions = scope.setdefault("extensions", {})
        started, status = time.perf_counter(), 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            duration = time.perf_counter() - started
            operation = extensions.get("connexion_routing", {}).get("operation_id") or "-"
            children = self.children.get((operation, status))
            if children is None:
                children = self.children[operation, status] = (REQUESTS.labels(operation, str(status)),
                                                               LATENCY.labels(operation))
            children[0].inc()
            children[1].observe(duration)
            if self.log_access:
                token_info = extensions.get("connexion_context", {}).get("token_info") or {}
                access_log.info("request", extra={
                    "method": scope["method"], "path": scope["path"], "operation_id": operation,
                    "account_id": token_info.get("account_id"), "status": status,
                    "duration_ms": round(duration * 1000, 2)})
            request_id.reset(token)


class OutboxBacklog(Collector):
    """The number of notification e-mails not sent yet, read from the database at scrape time."""

    NAME, HELP = "onboards_outbox_backlog", "Notification e-mails not sent yet"

    def describe(self) -> Iterator[Metric]:
        # Lets the registry learn the name without a database query at import time.
        yield GaugeMetricFamily(self.NAME, self.HELP)

    def collect(self) -> Iterator[Metric]:
        with db.connection_context():
            backlog = OutboxMessage.backlog()
        yield GaugeMetricFamily(self.NAME, self.HELP, value=backlog)


REGISTRY.register(OutboxBacklog())


def exposition() -> bytes:
    """The metrics in Prometheus's text format, served as plain `text/plain` (Prometheus reads that
    as the text format; connexion compares media types without their parameters). With several
    worker processes (PROMETHEUS_MULTIPROC_DIR set), every process's counts are summed."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(OutboxBacklog())
    return generate_latest(registry)

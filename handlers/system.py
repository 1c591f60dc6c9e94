"""Operational endpoints: health, and the metrics the service keeps (counted by onboards.observe)."""

import os
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from handlers import respond
from models.base import db
from models.outbox import OutboxMessage

REQUESTS = Counter("onboards_requests_total", "HTTP requests answered", ["operation", "status"])
LATENCY = Histogram("onboards_request_duration_seconds", "Time from request to the end of the response",
                    ["operation"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))


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


def health() -> Response:
    # A database that does not answer raises here; the error handler turns that into a 503.
    with db.connection_context():
        db.execute_sql("SELECT 1")
    return respond({"status": "ok"})


def metrics() -> Response:
    """The metrics in Prometheus's text format, served as plain `text/plain` (Prometheus reads that as the
    text format). With several worker processes (PROMETHEUS_MULTIPROC_DIR set), every process's counts
    are summed."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(OutboxBacklog())
    return Response(generate_latest(registry), media_type="text/plain")

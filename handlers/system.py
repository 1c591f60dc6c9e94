"""Operational endpoints: health, and the metrics the service keeps (counted by onboards.observe)."""

import asyncio
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.responses import Response

from handlers import respond
from models.base import Unavailable, db
from models.outbox import OutboxMessage

REQUESTS = Counter("onboards_requests_total", "HTTP requests answered", ["operation", "status"])
LATENCY = Histogram("onboards_request_duration_seconds", "Time from request to the end of the response",
                    ["operation"], buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))


class OutboxBacklog(Collector):
    """The notification e-mails waiting to be sent, and those parked as failed, read at scrape time."""

    BACKLOG = "onboards_outbox_backlog", "Notification e-mails not sent yet"
    PARKED = "onboards_outbox_failed", "Notification e-mails parked as failed (onboards outbox --retry-failed)"

    def describe(self) -> Iterator[Metric]:
        # Lets the registry learn the names without a database query at import time.
        yield GaugeMetricFamily(*self.BACKLOG)
        yield GaugeMetricFamily(*self.PARKED)

    def collect(self) -> Iterator[Metric]:
        with db.connection_context():
            backlog, parked = OutboxMessage.backlog(), OutboxMessage.parked()
        yield GaugeMetricFamily(*self.BACKLOG, value=backlog)
        yield GaugeMetricFamily(*self.PARKED, value=parked)


REGISTRY.register(OutboxBacklog())


HEALTH_SECONDS = 2.0
# Threads of its own, so that a health check never waits behind handlers stuck on a database that stopped
# answering: then the check itself times out, and says so.
_health_threads = ThreadPoolExecutor(2, thread_name_prefix="health")


def _ping() -> None:
    with db.connection_context():
        db.execute_sql("SELECT 1")


async def get_health() -> Response:
    try:
        await asyncio.wait_for(asyncio.get_running_loop().run_in_executor(_health_threads, _ping), HEALTH_SECONDS)
    except TimeoutError:
        raise Unavailable("the database did not answer in time") from None
    return respond({"status": "ok"})


def get_metrics() -> Response:
    """The metrics in Prometheus's text format, served as plain `text/plain` (Prometheus reads that as the
    text format). With several worker processes (PROMETHEUS_MULTIPROC_DIR set), every process's counts
    are summed."""
    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        registry.register(OutboxBacklog())
    return Response(generate_latest(registry), media_type="text/plain")

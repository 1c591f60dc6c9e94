"""The Prometheus metrics an app keeps: requests by operationId and status, their latency (counted by
onboards.observe), the refusals of each limit (counted where each is answered), and the outbox's backlog,
read at scrape time. Each app has a registry of its own."""

import os
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from models.base import db
from models.outbox import OutboxMessage


class OutboxBacklog(Collector):
    """The notification e-mails waiting to be sent, and those parked as failed, read at scrape time."""

    BACKLOG = "onboards_outbox_backlog", "Notification e-mails not sent yet"
    PARKED = "onboards_outbox_failed", "Notification e-mails parked as failed (onboards outbox --retry-failed)"

    def describe(self) -> Iterator[Metric]:
        # Lets the registry learn the names without a database query when the collector is registered.
        yield GaugeMetricFamily(*self.BACKLOG)
        yield GaugeMetricFamily(*self.PARKED)

    def collect(self) -> Iterator[Metric]:
        with db.connection_context():
            backlog, parked = OutboxMessage.backlog(), OutboxMessage.parked()
        yield GaugeMetricFamily(*self.BACKLOG, value=backlog)
        yield GaugeMetricFamily(*self.PARKED, value=parked)


class Metrics:
    """One app's metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("onboards_requests_total", "HTTP requests answered", ["operation", "status"],
                                registry=self.registry)
        self.latency = Histogram("onboards_request_duration_seconds", "Time from request to the end of the response",
                                 ["operation"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10))
        self.refusals = Counter("onboards_limit_refusals_total", "Requests refused by a limit, by the limit's name",
                                ["limit"], registry=self.registry)
        self.registry.register(OutboxBacklog())

    def refused(self, limit: str) -> None:
        """One request refused by `limit` (a stable name: docs/hostile.md lists them)."""
        self.refusals.labels(limit).inc()

    def count(self, operation: str, status: int, seconds: float) -> None:
        self.requests.labels(operation, str(status)).inc()
        self.latency.labels(operation).observe(seconds)

    def exposition(self) -> bytes:
        """The metrics in Prometheus's text format. With several worker processes (PROMETHEUS_MULTIPROC_DIR
        set), every process's counts are summed."""
        registry = self.registry
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            registry.register(OutboxBacklog())
        return generate_latest(registry)

"""Operational endpoints: health, and the metrics the serving app keeps (onboards.metrics)."""

from typing import Any

from connexion.context import scope
from starlette.responses import Response

from handlers import respond
from handlers.lifecycle import bounded
from models.base import db

HEALTH_SECONDS = 2.0
HEALTH_DEADLINE = "health-deadline", "the database did not answer the health check within {:g} seconds"


def _runtime() -> Any:
    """The serving app's runtime (onboards.runtime), which its outermost middleware puts in the request's state."""
    return scope["state"]["runtime"]


def _ping(_abandoned: object) -> None:
    with db.connection_context():
        db.execute_sql("SELECT 1")


async def get_health() -> Response:
    # Threads of its own (a limiter apart from the handlers'), so that a health check never waits behind
    # handlers stuck on a database that stopped answering: then the check itself times out, and says so.
    await bounded(_ping, seconds=HEALTH_SECONDS, limiter=_runtime().health_limiter(), limit=HEALTH_DEADLINE)
    return respond({"status": "ok"})


def get_metrics() -> Response:
    """The metrics in Prometheus's text format, served as plain `text/plain` (Prometheus reads that as the
    text format)."""
    return Response(_runtime().metrics.exposition(), media_type="text/plain")

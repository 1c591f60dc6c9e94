"""Operational endpoints."""

from starlette.responses import Response

from handlers import respond
from models.base import db
from onboards.observe import exposition


def health() -> Response:
    # A database that does not answer raises here; the error handler turns that into a 503.
    with db.connection_context():
        db.execute_sql("SELECT 1")
    return respond({"status": "ok"})


def metrics() -> tuple:
    return exposition(), 200, {"Content-Type": "text/plain"}

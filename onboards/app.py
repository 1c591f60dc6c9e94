"""The ASGI application: connexion routing and validating by openapi.yaml, plus what it lacks."""

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import yaml
from connexion import AsyncApp
from connexion.options import SwaggerUIOptions
from starlette.types import ASGIApp

from models.base import bind
from onboards import problems
from onboards.config import Settings
from onboards.mailer import OutboxSender

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "openapi.yaml"


def load_spec() -> dict:
    with SPEC.open() as f:
        return yaml.safe_load(f)


def create_app(settings: Settings, *, send_outbox: bool = True) -> ASGIApp:
    """The service bound to `settings.database_url`; with `send_outbox`, the outbox sender runs
    while the app is being served (its ASGI lifespan)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    bind(settings.database_url, max_connections=settings.db_max_connections)
    sender = OutboxSender.from_settings(settings) if send_outbox else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: AsyncApp) -> AsyncIterator[None]:
        if sender:
            sender.start()
        try:
            yield
        finally:
            if sender:
                sender.stop()

    spec = load_spec()
    app = AsyncApp(__name__, lifespan=lifespan, validator_map=problems.VALIDATOR_MAP,
                   strict_validation=True, validate_responses=settings.validate_responses)
    app.add_api(spec, swagger_ui_options=SwaggerUIOptions(swagger_ui=True, spec_path="/openapi.json"))
    problems.install(app)
    return problems.Guard(app, spec, settings.max_body_bytes)

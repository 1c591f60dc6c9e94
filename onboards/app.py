"""The ASGI application: connexion's AsyncApp routing and validating every request by openapi.yaml."""

import contextlib
import importlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import fields

import inflection
import orjson
import yaml
from connexion import AsyncApp
from connexion.middleware import ConnexionMiddleware, MiddlewarePosition
from connexion.middleware.response_validation import ResponseValidationMiddleware
from connexion.options import SwaggerUIOptions
from connexion.resolver import Resolver
from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.types import ASGIApp

import handlers
from models import limits
from models.accounts import use_clocks
from models.base import bind
from onboards import auth, connexion_patches, problems, sandbox, specs
from onboards.config import Settings
from onboards.mailer import OutboxSender
from onboards.middleware import Methods, RequestLimits
from onboards.observe import Observe, configure_logging
from onboards.serving import freeze_heap, set_worker_threads, thaw_heap

SPEC = specs.path("openapi.yaml")
DOCS_PAGE = specs.path("docs/index.html")  # built from SPEC by `make docs`
SANDBOX_DOCS_PAGE = specs.path("docs/sandbox.html")  # built from sandbox.yaml by `make docs`


def load_spec() -> dict:
    return specs.load(SPEC)


def handler_of(operation_id: str) -> Callable:
    """connexion's function resolver: `<x-openapi-router-controller>.<operationId>` names the controller's
    function of that name in snake_case (`handlers.invitations.createInvitationRecipient` is
    `handlers.invitations.create_invitation_recipient`), so the spec keeps LeadConduit's operationIds."""
    module, _, name = operation_id.rpartition(".")
    return getattr(importlib.import_module(module), inflection.underscore(name))


def create_app(settings: Settings, *, send_outbox: bool = True) -> ASGIApp:
    """The service bound to `settings.database_url`; with `send_outbox`, the outbox sender runs
    while the app is being served (its ASGI lifespan)."""
    connexion_patches.apply()
    configure_logging(settings.log_format, settings.log_level.upper())
    bind(settings.database_url, max_connections=settings.db_max_connections,
         statement_timeout=settings.db_statement_timeout_seconds)
    if settings.sandbox:
        sandbox.refuse_other_databases()
    sandbox.configure(settings.sandbox_token if settings.sandbox else "")
    use_clocks(settings.sandbox)
    auth.configure(settings.auth_cache_seconds, request_seconds=settings.request_timeout_seconds)
    handlers.configure(settings.request_timeout_seconds)
    limits.configure(limits.Limits(**{f.name: getattr(settings, f.name) for f in fields(limits.Limits)}))
    sender = OutboxSender.from_settings(settings) if send_outbox else None

    @contextlib.asynccontextmanager
    async def lifespan(_app: AsyncApp) -> AsyncIterator[None]:
        set_worker_threads(settings.handler_threads)
        if sender:
            sender.start()
        freeze_heap()
        try:
            yield
        finally:
            thaw_heap()
            if sender:
                sender.stop()

    # Without response validation its middleware would only look each request's operation up again.
    middlewares = [m for m in ConnexionMiddleware.default_middlewares
                   if settings.validate_responses or m is not ResponseValidationMiddleware]
    spec = load_spec()
    app = AsyncApp(__name__, lifespan=lifespan, middlewares=middlewares, validator_map=problems.VALIDATOR_MAP,
                   strict_validation=True, validate_responses=settings.validate_responses)
    # The spec is served as written (its references kept) by serve_document, not connexion's resolved copy.
    app.add_api(spec, resolver=Resolver(function_resolver=handler_of), swagger_ui_options=SwaggerUIOptions(
        serve_spec=False, swagger_ui=True, swagger_ui_config={"url": "/openapi.json"}))
    serve_document(app, "", {**spec, "servers": [{"url": settings.base_url, "description": "This server."}]})
    paths = dict(spec["paths"])
    if settings.sandbox:  # otherwise none of it exists: not served, not routed, not in the documents
        sandbox_spec = sandbox.load_spec()
        app.add_api(sandbox_spec, resolver=Resolver(function_resolver=handler_of), swagger_ui_options=SwaggerUIOptions(
            serve_spec=False, swagger_ui=False))
        serve_document(app, "/sandbox", {**sandbox_spec, "servers": [
            {"url": f"{settings.base_url}/sandbox", "description": "This server, in sandbox mode."}]})
        paths.update((f"/sandbox{path}", item) for path, item in sandbox_spec["paths"].items())
        app.add_url_rule("/docs/sandbox/", "sandbox_docs", sandbox_docs_page, methods=["GET"])
    app.add_url_rule("/docs/", "docs", docs_page, methods=["GET"])
    app.add_url_rule("/docs", "docs_redirect", docs_redirect, methods=["GET"])
    app.add_middleware(RequestLimits, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       max_body_bytes=settings.max_body_bytes)
    app.add_middleware(Methods, position=MiddlewarePosition.BEFORE_EXCEPTION, paths=paths)
    problems.install(app)
    return Observe(app, access_log=settings.access_log)


def serve_document(app: AsyncApp, prefix: str, document: dict) -> None:
    """`document` as written (its references kept) at <prefix>/openapi.json and <prefix>/openapi.yaml."""
    for kind, body, media_type in (("json", orjson.dumps(document), "application/json"),
                                   ("yaml", yaml.safe_dump(document, sort_keys=False).encode(), "application/yaml")):
        app.add_url_rule(f"{prefix}/openapi.{kind}", f"openapi{prefix.replace('/', '_')}_{kind}",
                         _static(body, media_type), methods=["GET"])


def _static(body: bytes, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(_request: Request) -> Response:
        return Response(body, media_type=media_type)

    return serve


async def docs_page(_request: Request) -> Response:
    return FileResponse(DOCS_PAGE, media_type="text/html; charset=utf-8")


async def sandbox_docs_page(_request: Request) -> Response:
    return FileResponse(SANDBOX_DOCS_PAGE, media_type="text/html; charset=utf-8")


async def docs_redirect(_request: Request) -> Response:
    return RedirectResponse("/docs/", status_code=308)


def app_from_env() -> ASGIApp:
    """The app as uvicorn's worker processes build it (`onboards serve --workers N`)."""
    return create_app(Settings.from_env())

"""The ASGI application: connexion's AsyncApp routing and validating every request by openapi.yaml."""

import contextlib
import html
import importlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

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

from onboards import connexion_patches, join, problems, sandbox, specs, validation
from onboards.config import Settings
from onboards.idempotency import Idempotency
from onboards.middleware import Bodies, Methods, RequestLimits
from onboards.observe import Observe, configure_logging
from onboards.problems import TYPE_BASE as TYPE_PREFIX
from onboards.runtime import Runtime, Serving
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


def create_app(settings: Settings, *, send_outbox: bool = True) -> Serving:
    """The service on `settings.database_url`, with a Runtime of its own made from `settings`; with
    `send_outbox`, the outbox sender runs while the app is being served (its ASGI lifespan)."""
    connexion_patches.apply()
    configure_logging(settings.log_format, settings.log_level.upper())
    runtime = Runtime(settings, send_outbox=send_outbox)
    if settings.sandbox:
        try:
            with runtime.entered():
                sandbox.refuse_other_databases()
        finally:
            runtime.close()  # the check's connection is not kept open until the app is served, if ever
    sender = runtime.sender

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
            runtime.close()

    # Without response validation its middleware would only look each request's operation up again.
    middlewares = [m for m in ConnexionMiddleware.default_middlewares
                   if settings.validate_responses or m is not ResponseValidationMiddleware]
    spec = load_spec()
    app = AsyncApp(__name__, lifespan=lifespan, middlewares=middlewares, validator_map=validation.VALIDATOR_MAP,
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
    join.install(app, settings, spec)
    app.add_url_rule("/docs/", "docs", docs_page, methods=["GET"])
    app.add_url_rule("/docs/problems", "problem_types", _static(problems_page(spec), "text/html; charset=utf-8"),
                     methods=["GET"])
    app.add_url_rule("/docs", "docs_redirect", docs_redirect, methods=["GET"])
    app.add_middleware(RequestLimits, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       max_body_bytes=settings.max_body_bytes)
    app.add_middleware(Methods, position=MiddlewarePosition.BEFORE_EXCEPTION, paths=paths)
    app.add_middleware(Bodies, position=MiddlewarePosition.BEFORE_VALIDATION, max_body_bytes=settings.max_body_bytes,
                       memory=runtime.body_memory, refusal=runtime.refusal)
    app.add_middleware(Idempotency, position=MiddlewarePosition.BEFORE_CONTEXT)
    problems.install(app)
    return Serving(Observe(app, runtime.metrics, access_log=settings.access_log), runtime)


def serve_document(app: AsyncApp, prefix: str, document: dict) -> None:
    """`document` as written (its references kept) at <prefix>/openapi.json and <prefix>/openapi.yaml, without
    what only routes it to this implementation (`x-openapi-router-controller`)."""
    document = {**document, "paths": {path: {method: _public(operation) for method, operation in item.items()}
                                      for path, item in document["paths"].items()}}
    for kind, body, media_type in (("json", orjson.dumps(document), "application/json"),
                                   ("yaml", yaml.safe_dump(document, sort_keys=False).encode(), "application/yaml")):
        app.add_url_rule(f"{prefix}/openapi.{kind}", f"openapi{prefix.replace('/', '_')}_{kind}",
                         _static(body, media_type), methods=["GET"])


def _public(operation: Any) -> Any:
    return {k: v for k, v in operation.items() if k != "x-openapi-router-controller"} \
        if isinstance(operation, dict) else operation


# A row of the table of problem types in the spec's Problem.type description.
_PROBLEM_ROW = re.compile(r"^\| `/docs/problems#([a-z-]+)` \| (\d{3}) \| (.+) \|$", re.MULTILINE)


def problem_types(spec: dict) -> list[tuple[str, int, str]]:
    """(name, status, meaning) of each problem type the spec lists (components/schemas/Problem's `type`)."""
    text = spec["components"]["schemas"]["Problem"]["properties"]["type"]["description"]
    return [(name, int(status), meaning) for name, status, meaning in _PROBLEM_ROW.findall(text)]


def problems_page(spec: dict) -> bytes:
    """The page each problem `type` (`/docs/problems#<name>`) resolves to: the spec's table, one anchor a row."""
    rows = "".join(f'<tr id="{name}"><td><code>{TYPE_PREFIX}{name}</code></td><td>{status}</td>'
                   f"<td>{html.escape(meaning.replace('`', ''))}</td></tr>\n"
                   for name, status, meaning in problem_types(spec))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>onboards: problem types</title>'
            f'</head><body><h1>Problem types</h1><p>Every error is <code>application/problem+json</code> (RFC 9457); '
            f'its <code>type</code> names the cause. <a href="/docs/">API reference</a></p>\n'
            f"<table><tr><th>type</th><th>status</th><th>meaning</th></tr>\n{rows}</table></body></html>\n").encode()


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

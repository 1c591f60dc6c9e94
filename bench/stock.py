"""Stock connexion (BENCH_APPS=...,stock): the service's handlers and openapi.yaml on connexion's own
AsyncApp, as its documentation sets one up: connexion's default validators and middlewares, and none of
`onboards.connexion_patches`. The rest is the service's (onboards.app.create_app): strict validation,
start-up and lifespan (bench/floor.py's `setup`), error handlers, RequestLimits, Methods and Observe, so
that service / stock is what the patches, our validators and the dropped response-validation middleware
save. It runs in a process of its own, where nothing applies the patches.

Run: DATABASE_URL=... HOST=... PORT=... python -m bench.stock
"""

import functools

from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncOperation
from connexion.middleware import MiddlewarePosition
from starlette.types import ASGIApp

from bench import floor
from onboards import problems
from onboards.app import load_spec
from onboards.middleware import Methods, RequestLimits
from onboards.observe import Observe


def create_app() -> ASGIApp:
    if isinstance(vars(AsyncOperation).get("fn"), functools.cached_property):
        raise RuntimeError("onboards.connexion_patches were applied: this would not be stock connexion")
    spec = load_spec()
    app = AsyncApp(__name__, lifespan=floor.setup(), strict_validation=True,
                   validate_responses=floor.settings.validate_responses)
    app.add_api(spec)
    app.add_middleware(RequestLimits, position=MiddlewarePosition.BEFORE_EXCEPTION,
                       max_body_bytes=floor.settings.max_body_bytes)
    app.add_middleware(Methods, position=MiddlewarePosition.BEFORE_EXCEPTION, spec=spec)
    problems.install(app)
    return Observe(app, access_log=floor.settings.access_log)


if __name__ == "__main__":
    floor.serve(create_app())

"""Stock connexion (BENCH_APPS=...,stock): the service as `onboards.app.create_app` builds it, minus what we
changed in connexion: none of `onboards.connexion_patches`, and connexion's own default validators and
middlewares instead of ours (`validator_map`, the middleware list without response validation). All else is
the service's: openapi.yaml, handlers, resolver, strict validation, start-up and lifespan, error handlers,
RequestLimits, Methods and Observe; so service / stock is what the patches and our validators save. It runs
in a process of its own, where nothing applies the patches.

Run: DATABASE_URL=... HOST=... PORT=... python -m bench.stock
"""

import functools
import types
from typing import Any

import uvicorn
from connexion import AsyncApp
from connexion.apps.asynchronous import AsyncOperation
from playhouse.pool import PooledPostgresqlDatabase
from starlette.types import ASGIApp

from onboards import app as service
from onboards import runtime as service_runtime
from onboards.config import Settings
from onboards.connexion_patches import PostgresPool
from onboards.serving import uvicorn_options

settings = Settings.from_env()


class StockAsyncApp(AsyncApp):
    def __init__(self, import_name: str, *, validator_map: Any = None, middlewares: Any = None, **options: Any
                 ) -> None:
        super().__init__(import_name, **options)


def create_app() -> ASGIApp:
    service.AsyncApp = StockAsyncApp
    # peewee's own pool too: onboards.connexion_patches.PostgresPool is one of the patches. The app module
    # applies the patches, the runtime module makes the pool: each names the patch module of its own.
    stock = types.SimpleNamespace(apply=lambda: None, PostgresPool=PooledPostgresqlDatabase)
    service.connexion_patches = service_runtime.connexion_patches = stock  # type: ignore[assignment]
    app = service.create_app(settings)
    if isinstance(vars(AsyncOperation).get("fn"), functools.cached_property) or \
            isinstance(app.runtime.database, PostgresPool):
        raise RuntimeError("onboards.connexion_patches were applied: this would not be stock connexion")
    return app


if __name__ == "__main__":
    uvicorn.run(create_app(), **uvicorn_options(settings))

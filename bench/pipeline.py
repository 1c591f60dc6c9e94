"""The service's pipeline alone (BENCH_APPS=...,pipeline): the service exactly as `onboards.app.create_app` builds
it (connexion and its patches, our validators, security, middlewares, Observe), but the four benchmarked
operations answered by handlers that return one fixed onboard without touching the database. What it costs a
request is what every request of the service pays before its handler runs, so pipeline / floor is the least
service / floor can be within the one pipeline, and service - pipeline is the handler's and the database's
share. Its answers are not the service's (every id is found, nothing is written): `make bench` does not hold it
to the others' answers, and its POST writes no rows.

Run: DATABASE_URL=... HOST=... PORT=... python -m bench.pipeline
"""

from collections.abc import Callable
from typing import Any

import uvicorn
from starlette.responses import Response

from handlers import resource, respond
from onboards import app as service
from onboards.config import Settings
from onboards.serving import uvicorn_options

ONBOARD = {"invitation_id": "6b164bdffc62ca8785310437", "id": "6b164bdffc62ca8785310438",
           "account_id": "6b164bdffc62ca8785310439", "connection_id": "6b164bdffc62ca878531043a", "flow_id": None,
           "status": "created", "reason": None, "created_at": "2026-12-07T06:02:10Z",
           "updated_at": "2026-12-07T06:02:10Z"}


# Coroutines, as the service's SQLite reads run on the event loop: no worker thread's hand-off either.
async def list_onboards(limit: int, **_parameters: Any) -> Response:
    return respond([ONBOARD] * limit, headers={"X-Total-Count": "500"})


async def get_onboard(**_parameters: Any) -> Response:
    return resource(ONBOARD, 200, 1)


async def update_onboard(**_parameters: Any) -> Response:
    return resource(ONBOARD, 200, 2)


async def create_onboard(**_parameters: Any) -> Response:
    return resource(ONBOARD, 201, 1)


FIXED: dict[str, Callable[..., Any]] = {"listOnboards": list_onboards, "getOnboard": get_onboard,
                                        "updateOnboard": update_onboard, "createOnboard": create_onboard}


def create_app(settings: Settings) -> Any:
    resolve = service.handler_of

    def handler_of(operation_id: str) -> Callable[..., Any]:
        return FIXED.get(operation_id.rpartition(".")[2]) or resolve(operation_id)

    # create_app hands the resolver the function its module holds when it runs; put back after, so that
    # a service made later in this process resolves its own handlers.
    service.handler_of = handler_of
    try:
        return service.create_app(settings)
    finally:
        service.handler_of = resolve


if __name__ == "__main__":
    from_env = Settings.from_env()
    uvicorn.run(create_app(from_env), **uvicorn_options(from_env))

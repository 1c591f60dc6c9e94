"""FastAPI (BENCH_APPS=...,fastapi): the floor's four operations (bench/floor.py) with FastAPI routing and
validating them (pydantic models and annotated parameters); authentication, the database work (hand-written
SQL), the responses and the start-up are the floor's, none of them the service's, so FastAPI - floor is what
FastAPI does per request. Invalid requests get the
floor's 400 problem instead of FastAPI's 422. A reference for measuring, not a product.

Run: DATABASE_URL=... HOST=... PORT=... python -m bench.fastapi_ref
"""

from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, StringConstraints
from starlette.responses import Response

from bench import floor

ObjectId = Annotated[str, StringConstraints(pattern=floor.OBJECT_ID.pattern)]


def known_status(status: str) -> str:
    if status not in floor.STATUSES:
        raise ValueError("status is not one of the onboard statuses")
    return status


def not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("may be left out, not null")
    return value


# Optional members are not nullable in the spec: left out they default to None, sent as null they fail
# (a before-validator runs on what is sent only).
OptionalId = Annotated[ObjectId | None, BeforeValidator(not_null)]
OptionalStatus = Annotated[str | None, BeforeValidator(not_null), AfterValidator(known_status)]
PathId = Annotated[str, Path(pattern=floor.OBJECT_ID.pattern)]
QueryId = Annotated[str | None, Query(pattern=floor.OBJECT_ID.pattern)]


class OnboardCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    invitation_id: ObjectId
    flow_id: OptionalId = None


class OnboardUpdate(BaseModel):
    """What GET gives may be sent back: the read-only members are accepted, and ignored by the model."""

    model_config = ConfigDict(extra="forbid", strict=True)
    invitation_id: ObjectId
    account_id: OptionalId = None
    connection_id: OptionalId = None
    flow_id: ObjectId | None = None
    status: OptionalStatus = None
    id: Annotated[str | None, BeforeValidator(not_null), StringConstraints(max_length=24)] = None
    reason: Annotated[str | None, StringConstraints(max_length=500)] = None
    created_at: Annotated[str | None, BeforeValidator(not_null), StringConstraints(max_length=40)] = None
    updated_at: Annotated[str | None, BeforeValidator(not_null), StringConstraints(max_length=40)] = None


def checked(value: Any) -> Any:
    async def checks() -> Any:
        return value

    return checks


def create_app() -> FastAPI:
    app = FastAPI(lifespan=floor.lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, error: RequestValidationError) -> Response:
        return floor.problem(400, str(error.errors()[0]["msg"]))

    @app.exception_handler(floor.Problem)
    async def problem(_request: Request, error: floor.Problem) -> Response:
        return floor.problem(error.status, error.detail)

    app.add_route("/health", floor.health, methods=["GET"])

    @app.get("/onboards/{id}")
    async def get_onboard(request: Request, id: PathId) -> Response:
        return await floor.call(request, checked((id, request.headers.get("if-none-match"))), floor.answer_get)

    @app.put("/onboards/{id}")
    async def update_onboard(request: Request, id: PathId, body: OnboardUpdate) -> Response:
        update = (id, body.model_dump(exclude_unset=True), floor.if_match(request))
        return await floor.call(request, checked(update), floor.answer_put)

    @app.post("/onboards")
    async def create_onboard(request: Request, body: OnboardCreate) -> Response:
        return await floor.call(request, checked(body.model_dump(exclude_unset=True)), floor.answer_post)

    @app.get("/onboards")
    async def list_onboards(request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                            after_id: QueryId = None, before_id: QueryId = None,
                            sort: Literal["asc", "desc"] = "asc") -> Response:
        floor.known_query(request.query_params)
        args = floor.list_args(request.url, limit, sort, after_id, before_id)
        return await floor.call(request, checked(args), floor.answer_list)

    return app


if __name__ == "__main__":
    floor.serve(create_app())

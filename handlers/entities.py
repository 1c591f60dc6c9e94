"""Entities of the caller's account."""

from starlette.responses import Response

from handlers import paged, resource, unit_of_work
from models.entities import Entity


@unit_of_work(write=False)
def list_entities(token_info: dict, limit: int, after_id: str | None = None, before_id: str | None = None,
                  sort: str = "asc") -> Response:
    return paged(Entity.for_account(token_info["account_id"]), Entity.as_json,
                 limit=limit, after_id=after_id, before_id=before_id, sort=sort)


@unit_of_work(write=False)
def get_entity(token_info: dict, id: str) -> Response:
    return resource(Entity.get_for_account(token_info["account_id"], id).as_json())

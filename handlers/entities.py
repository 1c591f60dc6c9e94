"""Entities of the caller's account."""

from typing import Any

from starlette.responses import Response

from handlers import if_match_digest, paged, resource, respond, unit_of_work
from models.entities import Entity
from models.flows import Flow


def shown(entity: Entity) -> dict:
    """The entity's JSON, with the flows of its account that take it as a source."""
    return entity.as_json(Flow.using(entity.account_id, [entity.id])[entity.id])


@unit_of_work(write=False)
def list_entities(token_info: dict, limit: int, after_id: str | None = None, before_id: str | None = None,
                  sort: str = "asc") -> Response:
    account_id = token_info["account_id"]
    sources: dict[str, list[str]] = {}

    def prepare(entities: list[Any]) -> None:
        sources.update(Flow.using(account_id, [e.id for e in entities]))

    return paged(Entity.for_account(account_id), lambda e: e.as_json(sources[e.id]), limit=limit,
                 after_id=after_id, before_id=before_id, sort=sort, prepare=prepare)


@unit_of_work()
def create_entity(token_info: dict, body: dict) -> Response:
    return resource(Entity.create_from(token_info["account_id"], body).as_json([]), 201)


@unit_of_work(write=False)
def get_entity(token_info: dict, id: str) -> Response:
    entity = Entity.get_for_account(token_info["account_id"], id)
    return resource(shown(entity))


@unit_of_work()
def update_entity(token_info: dict, id: str, body: dict) -> Response:
    account_id = token_info["account_id"]
    entity = Entity.get_for_account(account_id, id, for_update=True)
    # The flows that take it as a source: the same before and after its members change.
    sources = Flow.using(account_id, [entity.id])[entity.id]
    if_match_digest(lambda: entity.as_json(sources))
    return resource(entity.replace_with(body).as_json(sources))


@unit_of_work()
def delete_entity(token_info: dict, id: str) -> Response:
    account_id = token_info["account_id"]
    entity = Entity.get_for_account(account_id, id, for_update=True)
    if_match_digest(lambda: shown(entity))
    return respond(entity.delete_unused(Flow.using(account_id, [entity.id], as_step=True)[entity.id]))

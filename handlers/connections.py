"""Connections: the caller's links with other accounts."""

from typing import Any

from starlette.responses import Response

from handlers import paged, resource, unit_of_work
from models.connections import Connection
from models.flows import Flow


def _entity_ids(account_id: str, connections: list[Any]) -> list[str]:
    return [entity.id for entity in (c.own_entity(account_id) for c in connections) if entity is not None]


@unit_of_work(write=False)
def list_connections(token_info: dict, limit: int, relationship_type: str | None = None,
                     after_id: str | None = None, before_id: str | None = None, sort: str = "asc") -> Response:
    account_id = token_info["account_id"]
    sources: dict[str, list[str]] = {}

    def prepare(connections: list[Any]) -> None:
        sources.update(Flow.using(account_id, _entity_ids(account_id, connections)))

    def render(connection: Connection) -> dict:
        entity = connection.own_entity(account_id)
        return connection.as_json(account_id, sources[entity.id] if entity else [])

    return paged(Connection.with_relationship(account_id, relationship_type), render, limit=limit,
                 after_id=after_id, before_id=before_id, sort=sort, prepare=prepare)


@unit_of_work(write=False)
def get_connection(token_info: dict, id: str) -> Response:
    account_id = token_info["account_id"]
    connection = Connection.get_by_id_or_invitation(account_id, id)
    sources = Flow.using(account_id, _entity_ids(account_id, [connection]))
    return resource(connection.as_json(account_id, next(iter(sources.values()), [])))

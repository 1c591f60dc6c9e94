"""Connections: the caller's links with other accounts."""

from starlette.responses import Response

from handlers import paged, resource, unit_of_work
from models.connections import Connection


@unit_of_work(write=False)
def list_connections(token_info: dict, limit: int, relationship_type: str | None = None,
                     after_id: str | None = None, before_id: str | None = None, sort: str = "asc") -> Response:
    account_id = token_info["account_id"]
    return paged(Connection.with_relationship(account_id, relationship_type), lambda c: c.as_json(account_id),
                 limit=limit, after_id=after_id, before_id=before_id, sort=sort)


@unit_of_work(write=False)
def get_connection(token_info: dict, id: str) -> Response:
    account_id = token_info["account_id"]
    return resource(Connection.get_by_id_or_invitation(account_id, id).as_json(account_id))

"""Flows of the caller's account."""

from starlette.responses import Response

from handlers import if_match, paged, respond, unit_of_work, versioned
from models.flows import Flow


@unit_of_work(write=False)
def list_flows(token_info: dict, limit: int, after_id: str | None = None, before_id: str | None = None,
               sort: str = "asc") -> Response:
    # A flow can be large (a request body's worth): a few at a time.
    return paged(Flow.for_account(token_info["account_id"]), Flow.as_json,
                 limit=limit, after_id=after_id, before_id=before_id, sort=sort, chunk=4)


@unit_of_work()
def create_flow(token_info: dict, body: dict) -> Response:
    return versioned(Flow.create_from(token_info["account_id"], body), 201)


@unit_of_work(write=False)
def get_flow(token_info: dict, id: str) -> Response:
    return versioned(Flow.get_for_account(token_info["account_id"], id))


@unit_of_work()
def update_flow(token_info: dict, id: str, body: dict) -> Response:
    flow = Flow.get_for_account(token_info["account_id"], id, for_update=True)
    return versioned(flow.replace_with(body, if_match()))


@unit_of_work()
def delete_flow(token_info: dict, id: str) -> Response:
    flow = Flow.get_for_account(token_info["account_id"], id, for_update=True)
    return respond(flow.delete_seen(if_match()))

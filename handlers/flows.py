"""Flows of the caller's account."""

from handlers import paged, respond, unit_of_work
from models.flows import Flow


@unit_of_work(write=False)
def list_flows(token_info: dict, limit: int, after_id: str | None = None, before_id: str | None = None,
               sort: str = "asc") -> tuple:
    return paged(Flow.for_account(token_info["account_id"]), Flow, Flow.as_json,
                 limit=limit, after_id=after_id, before_id=before_id, sort=sort)


@unit_of_work()
def create_flow(token_info: dict, body: dict) -> tuple:
    return respond(Flow.create_from(token_info["account_id"], body).as_json(), 201)


@unit_of_work(write=False)
def get_flow(token_info: dict, id: str) -> tuple:
    return respond(Flow.get_for_account(token_info["account_id"], id).as_json())


@unit_of_work()
def update_flow(token_info: dict, id: str, body: dict) -> tuple:
    flow = Flow.get_for_account(token_info["account_id"], id)
    return respond(flow.replace_with(body).as_json())

"""Onboards: a buyer's onboarding, from accepting an invitation to delivery set up."""

from starlette.responses import Response

from handlers import if_match, paged, respond, unit_of_work, versioned
from models.onboards import Onboard


@unit_of_work(write=False)
def list_onboards(token_info: dict, limit: int, after_id: str | None = None, before_id: str | None = None,
                  sort: str = "asc") -> Response:
    return paged(Onboard.for_account(token_info["account_id"]), Onboard.json_of, dicts=True,
                 limit=limit, after_id=after_id, before_id=before_id, sort=sort)


@unit_of_work()
def create_onboard(token_info: dict, body: dict) -> Response:
    onboard, created = Onboard.create_from_invitation(token_info["account_id"], body["invitation_id"],
                                                      body.get("flow_id"))
    return versioned(onboard, 201 if created else 200)


@unit_of_work(write=False)
def get_onboard(token_info: dict, id: str) -> Response:
    return versioned(Onboard.get_for_account(token_info["account_id"], id))


@unit_of_work()
def update_onboard(token_info: dict, id: str, body: dict) -> Response:
    onboard = Onboard.get_for_account(token_info["account_id"], id)
    return versioned(onboard.update_from(body, if_match()))


@unit_of_work()
def complete_buyer_setup(token_info: dict, body: dict) -> Response:
    flow = Onboard.setup_buyer(token_info["account_id"], body)
    return respond({"redirect": f"/flows/{flow.id}"})

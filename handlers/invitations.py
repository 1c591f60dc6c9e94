"""Invitations: asking another account to connect, as a buyer (recipient) or a seller (source)."""

from starlette.responses import Response

from handlers import if_match_digest, paged, resource, respond, unit_of_work
from handlers.entities import shown
from models.accounts import User
from models.entities import Entity
from models.invitations import Invitation


def _invite(token_info: dict, body: dict, kind: str) -> Response:
    inviter = User.get_by_id(token_info["sub"])
    entity, created = Invitation.send(inviter, kind, body["email"], body.get("description"))
    message = "Invitation was sent successfully" if created else "Invitation already exists"
    return respond({"message": message, "entity": shown(entity)}, 201 if created else 200)


@unit_of_work()
def create_invitation_recipient(token_info: dict, body: dict) -> Response:
    return _invite(token_info, body, "recipient")


@unit_of_work()
def create_invitation_source(token_info: dict, body: dict) -> Response:
    return _invite(token_info, body, "source")


@unit_of_work()
def resend_invitation(token_info: dict, entityId: str) -> Response:  # noqa: N803 (the spec's name)
    # If-Match names the entity's ETag (GET /entities/{id}): the resend renews its expiry.
    if_match_digest(lambda: shown(Entity.get_for_account(token_info["account_id"], entityId, for_update=True)))
    entity = Invitation.resend(token_info["account_id"], entityId)
    return respond({"message": "Invitation was resent successfully", "entity": shown(entity)})


@unit_of_work(write=False)
def list_invitations(token_info: dict, limit: int, after_id: str | None = None, before_id: str | None = None,
                     sort: str = "asc") -> Response:
    return paged(Invitation.visible_to(token_info["account_id"]), Invitation.as_json,
                 limit=limit, after_id=after_id, before_id=before_id, sort=sort)


@unit_of_work(write=False)
def get_invitation(token_info: dict, id: str) -> Response:
    return resource(Invitation.get_visible(token_info["account_id"], id).as_json())


@unit_of_work()
def accept_invitation(token_info: dict, id: str) -> Response:
    invitation = Invitation.get_visible(token_info["account_id"], id)
    return resource(invitation.accept(token_info["account_id"]).as_json())


@unit_of_work()
def decline_invitation(token_info: dict, id: str) -> Response:
    Invitation.get_visible(token_info["account_id"], id).decline(token_info["account_id"])
    return Response(status_code=204)


@unit_of_work()
def withdraw_invitation(token_info: dict, id: str) -> Response:
    invitation = Invitation.get_visible(token_info["account_id"], id)
    if_match_digest(invitation.as_json)
    invitation.withdraw(token_info["account_id"])
    return Response(status_code=204)

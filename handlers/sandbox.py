"""Sandbox mode: accounts, the mailbox and accounts' clocks, for client test suites (sandbox.yaml)."""

from starlette.responses import Response

from handlers import paged, respond, unit_of_work
from models.accounts import Account, normalize_email, now_for
from models.outbox import OutboxMessage


@unit_of_work()
def create_sandbox_account(token_info: dict, body: dict) -> Response:
    account, user, key = Account.create_with_user(body["name"], body["email"], sandbox=True)
    return respond({"account_id": account.id, "user_id": user.id, "name": account.name, "email": user.email,
                    "api_key": key}, 201)


@unit_of_work()
def advance_account_clock(token_info: dict, id: str, body: dict) -> Response:
    account = Account.advance_clock(id.lower(), body["seconds"])
    return respond({"account_id": account.id, "offset_seconds": int(account.clock_offset_seconds),
                    "now": now_for(account.id)})


def _message(message: OutboxMessage) -> dict:
    return {"id": message.id, "kind": message.kind, "to": message.to, "subject": message.subject,
            "body": message.body, "state": message.state, "created_at": message.created_at,
            "sent_at": message.sent_at, "invitation_id": message.invitation_id,
            "connection_id": message.connection_id, "link": message.link}


@unit_of_work(write=False)
def list_mailbox(token_info: dict, limit: int, to: str | None = None, kind: str | None = None,
                 after_id: str | None = None, before_id: str | None = None, sort: str = "asc") -> Response:
    query = OutboxMessage.select()
    if to is not None:
        query = query.where(OutboxMessage.to == normalize_email(to))
    if kind is not None:
        query = query.where(OutboxMessage.kind == kind)
    return paged(query, _message, limit=limit, after_id=after_id, before_id=before_id, sort=sort)

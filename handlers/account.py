"""The caller's account."""

from starlette.responses import Response

from handlers import if_match_digest, resource, unit_of_work
from models.accounts import Account
from models.connections import Connection
from models.entities import Entity


def _shown(account: Account) -> dict:
    return {**account.as_json(), **Connection.counterparts(account.id), **Entity.pending_of(account.id)}


@unit_of_work(write=False)
def get_account(token_info: dict) -> Response:
    return resource(_shown(Account.get_by_id(token_info["account_id"])))


@unit_of_work()
def update_account(token_info: dict, body: dict) -> Response:
    account = Account.get_locked(token_info["account_id"])
    if_match_digest(lambda: _shown(account))
    return resource(_shown(account.replace_with(body)))

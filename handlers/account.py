"""The caller's account."""

from starlette.responses import Response

from handlers import resource, unit_of_work
from models.accounts import Account
from models.connections import Connection
from models.entities import Entity


def _account(account: Account) -> Response:
    return resource({**account.as_json(), **Connection.counterparts(account.id), **Entity.pending_of(account.id)})


@unit_of_work(write=False)
def get_account(token_info: dict) -> Response:
    return _account(Account.get_by_id(token_info["account_id"]))


@unit_of_work()
def update_account(token_info: dict, body: dict) -> Response:
    return _account(Account.get_by_id(token_info["account_id"]).replace_with(body))

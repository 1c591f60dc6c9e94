"""Sandbox mode: what client test suites drive over HTTP (sandbox.yaml), guarded by a token."""

import hmac

from starlette.requests import Request

from handlers.lifecycle import bounded
from models.accounts import Account
from models.base import db, transaction
from onboards import specs
from onboards.auth import count_failure
from onboards.clients import client_of
from onboards.config import ConfigError

SPEC = specs.path("sandbox.yaml")

def load_spec() -> dict:
    return specs.load(SPEC)


async def check_token(token: str, request: Request) -> dict | None:
    """connexion's x-apikeyInfoFunc for the sandbox token (the serving app's), compared in constant time. A
    wrong token counts as a failed authentication of the client's address, with wrong API keys (auth.py):
    over the limit, 429."""
    expected: bytes = request.state.runtime.sandbox_token
    if expected and hmac.compare_digest(token.encode("utf-8", "surrogatepass"), expected):
        return {"sub": "sandbox"}
    client = client_of(request)
    await bounded(lambda _abandoned: _counted(client))
    return None


def _counted(client: str) -> None:
    with transaction():
        count_failure(client)


def refuse_other_databases() -> None:
    """A sandbox server never opens a database holding accounts made outside sandbox mode: that is how a
    production database is kept out of it."""
    with db.connection_context():
        if db.table_exists("account") and "sandbox" in {c.name for c in db.get_columns("account")} and \
                Account.select().where(Account.sandbox == False).exists():  # noqa: E712 (SQL)
            raise ConfigError("this database holds accounts made outside sandbox mode: sandbox mode serves "
                              "only a database of its own (a new DATABASE_URL)")

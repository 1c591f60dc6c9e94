"""Sandbox mode: what client test suites drive over HTTP (sandbox.yaml), guarded by a token."""

import hmac

from models.accounts import Account
from models.base import db
from onboards import specs
from onboards.config import ConfigError

SPEC = specs.path("sandbox.yaml")
_token = b""


def load_spec() -> dict:
    return specs.load(SPEC)


def configure(token: str) -> None:
    global _token
    _token = token.encode()


def check_token(token: str) -> dict | None:
    """connexion's x-apikeyInfoFunc for the sandbox token, compared in constant time."""
    if not _token or not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), _token):
        return None
    return {"sub": "sandbox"}


def refuse_other_databases() -> None:
    """A sandbox server never opens a database holding accounts made outside sandbox mode: that is how a
    production database is kept out of it."""
    with db.connection_context():
        if db.table_exists("account") and "sandbox" in {c.name for c in db.get_columns("account")} and \
                Account.select().where(Account.sandbox == False).exists():  # noqa: E712 (SQL)
            raise ConfigError("this database holds accounts made outside sandbox mode: sandbox mode serves "
                              "only a database of its own (a new DATABASE_URL)")

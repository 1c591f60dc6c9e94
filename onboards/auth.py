"""HTTP Basic authentication: the password is an API key; the user name is ignored."""

from anyio import to_thread

from models.accounts import ApiKey, Principal
from models.base import db


def _lookup(key: str) -> Principal | None:
    with db.connection_context():
        return ApiKey.authenticate(key)


async def basic_auth(username: str, password: str) -> dict | None:
    """connexion's x-basicInfoFunc. The database lookup runs in a worker thread so that it never
    blocks the event loop."""
    if not password or len(password) > 200:
        return None
    principal = await to_thread.run_sync(_lookup, password)
    if principal is None:
        return None
    return {"sub": principal.user_id, "account_id": principal.account_id}

"""HTTP Basic authentication: the password is an API key; the user name is ignored."""

import time
from collections.abc import Callable

from anyio import to_thread
from cachetools import TTLCache

from models.accounts import ApiKey, Principal
from models.base import db

_cache: TTLCache | None = None


def configure(cache_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
    """Keeps a verified key's principal for `cache_seconds` (0: look every key up), so a revoked key
    stops working within that time, and most requests skip the database lookup."""
    global _cache
    _cache = TTLCache(maxsize=10_000, ttl=cache_seconds, timer=clock) if cache_seconds > 0 else None


def _lookup(key: str) -> Principal | None:
    with db.connection_context():
        return ApiKey.authenticate(key)


async def basic_auth(username: str, password: str) -> dict | None:
    """connexion's x-basicInfoFunc. It runs on the event loop: the database lookup goes to a worker
    thread so it never blocks the loop, and the cache (touched only on the loop) needs no lock."""
    if not password or len(password) > 200:
        return None
    # Keyed by digest, so the cache never holds a key in clear.
    digest = ApiKey.digest_of(password)
    principal = _cache.get(digest) if _cache is not None else None
    if principal is None:
        principal = await to_thread.run_sync(_lookup, password)
        if principal is None:
            return None
        if _cache is not None:
            _cache[digest] = principal
    return {"sub": principal.user_id, "account_id": principal.account_id}

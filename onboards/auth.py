"""HTTP Basic authentication: the password is an API key; the user name is ignored."""

import asyncio
import time
from collections.abc import Callable

from anyio import to_thread
from cachetools import TTLCache

from models.accounts import ApiKey, Principal
from models.base import db

CACHE_SIZE = 10_000

# Verified keys' principals by digest (a key is never kept in clear), touched only on the event loop.
_cache: TTLCache[str, Principal] | None = None
# digest → the look-up under way: requests that miss the cache together (at start, or when a busy key's
# entry expires under many concurrent clients) share one look-up instead of one each.
_looking_up: dict[str, asyncio.Task[Principal | None]] = {}


def configure(cache_seconds: float, *, timer: Callable[[], float] = time.monotonic) -> None:
    """Keeps a verified key's principal for `cache_seconds` (0: look every key up), so a revoked key
    stops working within that time, and most requests skip the database look-up."""
    global _cache
    _looking_up.clear()
    _cache = TTLCache(CACHE_SIZE, ttl=cache_seconds, timer=timer) if cache_seconds > 0 else None


def _lookup(key: str) -> Principal | None:
    with db.connection_context():
        return ApiKey.authenticate(key)


async def _verified(key: str, digest: str) -> Principal | None:
    found = await to_thread.run_sync(_lookup, key)
    if found is not None and _cache is not None:
        _cache[digest] = found
    return found


async def _shared_lookup(key: str, digest: str) -> Principal | None:
    """The key's look-up in a worker thread, shared with the requests that ask while it runs. Shielded:
    a request that goes away cancels its own wait, not the others'."""
    running = _looking_up.get(digest)
    if running is None or running.get_loop() is not asyncio.get_running_loop():  # another app's, in tests
        running = _looking_up[digest] = asyncio.ensure_future(_verified(key, digest))
        running.add_done_callback(lambda done: _looking_up.pop(digest, None) if _looking_up.get(digest) is done
                                  else None)
    return await asyncio.shield(running)


async def basic_auth(username: str, password: str) -> dict | None:
    """connexion's x-basicInfoFunc. It runs on the event loop: the database look-up goes to a worker
    thread so it never blocks the loop."""
    if not password or len(password) > 200:
        return None
    digest = ApiKey.digest_of(password)
    principal = _cache.get(digest) if _cache is not None else None
    if principal is None:
        principal = await _shared_lookup(password, digest)
        if principal is None:
            return None
    return {"sub": principal.user_id, "account_id": principal.account_id}

"""HTTP Basic authentication: the password is an API key; the user name is ignored."""

import asyncio
import time
from collections.abc import Callable

from models.accounts import ApiKey, Principal
from models.base import db

CACHE_SIZE = 10_000

# digest → (until when, principal). Touched only on the event loop, so it needs no lock. Written by
# hand: a hit in cachetools' TTLCache takes 11 Python calls (its timer, its expiry links), here one
# dict look-up, on every request.
_cache: dict[str, tuple[float, Principal]] = {}
_seconds = 0.0
_clock: Callable[[], float] = time.monotonic
# digest → the look-up under way: requests that miss the cache together (at start, or when a busy
# key's entry expires under 64 concurrent clients) share one look-up instead of one each.
_looking_up: dict[str, asyncio.Task[Principal | None]] = {}


def configure(cache_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
    """Keeps a verified key's principal for `cache_seconds` (0: look every key up), so a revoked key
    stops working within that time, and most requests skip the database lookup."""
    global _seconds, _clock
    _cache.clear()
    _looking_up.clear()
    _seconds, _clock = max(cache_seconds, 0.0), clock


def _remember(digest: str, principal: Principal) -> None:
    now = _clock()
    if len(_cache) >= CACHE_SIZE:  # the expired go first, then the longest kept
        for expired in [d for d, (until, _) in _cache.items() if until <= now]:
            del _cache[expired]
        while len(_cache) >= CACHE_SIZE:
            del _cache[next(iter(_cache))]
    _cache[digest] = (now + _seconds, principal)


def _lookup(key: str) -> Principal | None:
    with db.connection_context():
        return ApiKey.authenticate(key)


async def _verified(key: str, digest: str) -> Principal | None:
    found = await asyncio.to_thread(_lookup, key)
    if found is not None and _seconds:
        _remember(digest, found)
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
    """connexion's x-basicInfoFunc. It runs on the event loop: the database lookup goes to a worker
    thread so it never blocks the loop."""
    if not password or len(password) > 200:
        return None
    # Keyed by digest, so the cache never holds a key in clear.
    digest = ApiKey.digest_of(password)
    hit = _cache.get(digest)
    if hit is not None and hit[0] > _clock():
        principal = hit[1]
    else:
        found = await _shared_lookup(password, digest)
        if found is None:
            return None
        principal = found
    return {"sub": principal.user_id, "account_id": principal.account_id}

"""HTTP Basic authentication: the password is an API key; the user name is ignored. Failed attempts are
throttled per client address."""

import asyncio
import re
import time
from collections.abc import Callable
from datetime import timedelta

import anyio
from anyio import to_thread
from cachetools import TTLCache
from connexion.lifecycle import ConnexionRequest

from models import limits
from models.accounts import ApiKey, Principal
from models.base import Unavailable, db, transaction
from models.limits import RateCounter, Throttled

CACHE_SIZE = 10_000
# HTTP Basic credentials as RFC 7617 sends them: one token of strict base64. connexion decodes leniently,
# skipping what is not base64, so `Basic <key>= junk` would pass for `Basic <key>`.
BASIC = re.compile(r"basic +(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", re.IGNORECASE)
FAILURE_WINDOW = timedelta(minutes=1)

# Verified keys' principals by digest (a key is never kept in clear), touched only on the event loop.
_cache: TTLCache[str, Principal] | None = None
# Client addresses over the failed-attempt limit, until when (monotonic): answered without the database.
_blocked: TTLCache[str, float] = TTLCache(CACHE_SIZE, ttl=FAILURE_WINDOW.total_seconds())
# digest → the look-up under way: requests that miss the cache together (at start, or when a busy key's
# entry expires under many concurrent clients) share one look-up instead of one each.
_looking_up: dict[str, asyncio.Task[Principal | None]] = {}
_request_seconds = 8.0


def configure(cache_seconds: float, *, request_seconds: float = 8.0, timer: Callable[[], float] = time.monotonic
              ) -> None:
    """Keeps a verified key's principal for `cache_seconds` (0: look every key up), so a revoked key
    stops working within that time, and most requests skip the database look-up; a look-up longer than
    `request_seconds` gets the request a 503."""
    global _cache, _request_seconds
    _request_seconds = request_seconds
    _looking_up.clear()
    _blocked.clear()
    _cache = TTLCache(CACHE_SIZE, ttl=cache_seconds, timer=timer) if cache_seconds > 0 else None


def _lookup(key: str, client: str) -> Principal | None:
    """The key's principal; for a key that is none, the failure is counted against the client, and the
    client over its limit is Throttled."""
    limit = limits.LIMITS.failed_auth_per_minute
    with db.connection_context():
        wait = RateCounter.over("auth", client, limit, FAILURE_WINDOW)
        if wait is None:
            found = ApiKey.authenticate(key)
            if found is not None:
                return found
            with transaction():
                RateCounter.take("auth", client, limit, FAILURE_WINDOW, "failed authentications")
            return None
    raise Throttled("too many failed authentications from this address", wait)


async def _verified(key: str, digest: str, client: str) -> Principal | None:
    try:
        with anyio.fail_after(_request_seconds):
            found = await to_thread.run_sync(_lookup, key, client, abandon_on_cancel=True)
    except TimeoutError:
        raise Unavailable("the database did not answer in time") from None
    if found is not None and _cache is not None:
        _cache[digest] = found
    return found


async def _shared_lookup(key: str, digest: str, client: str) -> Principal | None:
    """The key's look-up in a worker thread, shared with the requests that ask while it runs. Shielded:
    a request that goes away cancels its own wait, not the others'."""
    running = _looking_up.get(digest)
    if running is None or running.get_loop() is not asyncio.get_running_loop():  # another app's, in tests
        running = _looking_up[digest] = asyncio.ensure_future(_verified(key, digest, client))
        running.add_done_callback(lambda done: _looking_up.pop(digest, None) if _looking_up.get(digest) is done
                                  else None)
    return await asyncio.shield(running)


async def basic_auth(username: str, password: str, request: ConnexionRequest) -> dict | None:
    """connexion's x-basicInfoFunc. It runs on the event loop: the database look-up goes to a worker
    thread so it never blocks the loop."""
    if not password or len(password) > 200 or not BASIC.fullmatch(request.headers.get("authorization", "")):
        return None
    digest = ApiKey.digest_of(password)
    principal = _cache.get(digest) if _cache is not None else None
    if principal is None:
        client = (request.scope.get("client") or ("unknown", 0))[0]
        until = _blocked.get(client)
        if until is not None and until > time.monotonic():
            raise Throttled("too many failed authentications from this address", until - time.monotonic())
        try:
            principal = await _shared_lookup(password, digest, client)
        except Throttled as throttled:
            _blocked[client] = time.monotonic() + throttled.retry_after
            raise
        if principal is None:
            return None
    return {"sub": principal.user_id, "account_id": principal.account_id}

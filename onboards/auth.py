"""HTTP Basic authentication: the password is an API key; the user name is ignored. A key that verifies is
always served; failed attempts are throttled per client address and per key prefix."""

import asyncio
import re
import time
from collections.abc import Callable
from datetime import timedelta

from cachetools import TTLCache
from connexion.lifecycle import ConnexionRequest

from handlers.lifecycle import bounded
from models import limits
from models.accounts import ApiKey, Principal
from models.base import db, digest_of, transaction
from models.limits import RateCounter, Throttled
from onboards.clients import client_of

CACHE_SIZE = 10_000
# HTTP Basic credentials as RFC 7617 sends them: one token of strict base64. connexion decodes leniently,
# skipping what is not base64, so `Basic <key>= junk` would pass for `Basic <key>`.
BASIC = re.compile(r"basic +(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?", re.IGNORECASE)
FAILURE_WINDOW = timedelta(minutes=1)
FROM_ADDRESS = "failed-auth-per-address"
TOO_MANY_FROM_ADDRESS = "at most {limit} failed authentications per {span} from this address"


class Keys:
    """One app's memory of keys, touched only on its event loop: verified keys' principals by digest (a key
    is never kept in clear) for `cache_seconds` (0: every key is looked up), so a revoked key stops working
    within that time and most requests skip the database; client addresses over the failed-attempt limit,
    until when (monotonic), whose wrong keys are refused without being counted; and the look-ups under way
    by digest, so that requests that miss the cache together (at start, or when a busy key's entry expires
    under many concurrent clients) share one look-up instead of one each."""

    def __init__(self, cache_seconds: float, *, timer: Callable[[], float] = time.monotonic) -> None:
        self.cache: TTLCache[str, Principal] | None = \
            TTLCache(CACHE_SIZE, ttl=cache_seconds, timer=timer) if cache_seconds > 0 else None
        self.blocked: TTLCache[str, float] = TTLCache(CACHE_SIZE, ttl=FAILURE_WINDOW.total_seconds())
        self.looking_up: dict[str, asyncio.Task[Principal | None]] = {}


def count_failure(client: str) -> None:
    """One failed authentication of the client's address (a wrong key or sandbox token): Throttled over
    FAILED_AUTH_PER_MINUTE. In the caller's transaction."""
    RateCounter.take(FROM_ADDRESS, client, limits.LIMITS.failed_auth_per_minute, FAILURE_WINDOW, TOO_MANY_FROM_ADDRESS)


def lookup(key: str, client: str, blocked_for: float | None) -> Principal | None:
    """The key's principal, whatever failed before: a key that verifies is always served. A key that is
    none counts as a failure of the client's address and of the key's prefix (its first 8 characters, as
    `onboards key revoke` names keys); either over its limit is Throttled, and so is every wrong key from
    a client known to be over it (`blocked_for`, the seconds left), without counting it further."""
    limit = limits.LIMITS.failed_auth_per_minute
    with db.connection_context():
        found = ApiKey.authenticate(key)
        if found is not None:
            return found
        if blocked_for is not None:
            raise limits.reached(FROM_ADDRESS, limit, FAILURE_WINDOW, TOO_MANY_FROM_ADDRESS,
                                 timedelta(seconds=blocked_for))
        with transaction():
            count_failure(client)
            RateCounter.take("failed-auth-per-key-prefix", key[:8], limit, FAILURE_WINDOW,
                             "at most {limit} failed authentications per {span} of keys beginning as this one does")
        return None


async def _verified(keys: Keys, key: str, digest: str, client: str) -> Principal | None:
    until = keys.blocked.get(client)
    blocked_for = until - time.monotonic() if until is not None and until > time.monotonic() else None
    found = await bounded(lambda _abandoned: lookup(key, client, blocked_for))
    if found is not None and keys.cache is not None:
        keys.cache[digest] = found
    return found


async def _shared_lookup(keys: Keys, key: str, digest: str, client: str) -> Principal | None:
    """The key's look-up in a worker thread, shared with the requests that ask while it runs. Shielded:
    a request that goes away cancels its own wait, not the others'."""
    running = keys.looking_up.get(digest)
    # A look-up begun on another event loop (a test client serves each of its sessions on a loop of its own)
    # is never awaited here.
    if running is None or running.get_loop() is not asyncio.get_running_loop():
        running = keys.looking_up[digest] = asyncio.ensure_future(_verified(keys, key, digest, client))
        running.add_done_callback(lambda done: keys.looking_up.pop(digest, None)
                                  if keys.looking_up.get(digest) is done else None)
    return await asyncio.shield(running)


async def basic_auth(username: str, password: str, request: ConnexionRequest) -> dict | None:
    """connexion's x-basicInfoFunc. It runs on the event loop: the database look-up goes to a worker
    thread so it never blocks the loop, on SQLite too (unlike a handler's read: it may write a failure, and
    comes once per key and AUTH_CACHE_SECONDS, so its hand-off is no measurable part of the requests'
    cost). The serving app's Keys are in the request's state."""
    if not password or len(password) > 200 or not BASIC.fullmatch(request.headers.get("authorization", "")):
        return None
    keys: Keys = request.state.runtime.keys
    digest = digest_of(password)
    principal = keys.cache.get(digest) if keys.cache is not None else None
    if principal is None:
        client = client_of(request)
        try:
            principal = await _shared_lookup(keys, password, digest, client)
        except Throttled as throttled:
            if throttled.limit == FROM_ADDRESS:  # a key prefix's limit, reached from any address, is not this one's
                keys.blocked[client] = time.monotonic() + throttled.retry_after
            raise
        if principal is None:
            return None
    return {"sub": principal.user_id, "account_id": principal.account_id}

"""The key cache: most requests skip the key lookup, and a revoked key stops working within the TTL."""

import asyncio
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import httpx
import pytest
from starlette.testclient import TestClient

from models.accounts import ApiKey, Principal
from models.base import digest_of, transaction
from onboards import auth
from onboards.auth import Keys
from tests.helpers import basic_auth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def use_keys(client: TestClient, cache_seconds: float, **clock: Callable[[], float]) -> Keys:
    """The app's memory of keys, made anew with this cache time (and clock)."""
    client.app.runtime.keys = Keys(cache_seconds, **clock)  # type: ignore[attr-defined]
    return client.app.runtime.keys  # type: ignore[attr-defined]


def revoke(key: str) -> None:
    with transaction():
        ApiKey.revoke(key[:8])


def test_a_revoked_key_works_until_the_cache_forgets_it(client, buyer):
    clock = Clock()
    use_keys(client, 5, timer=clock)
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    revoke(buyer.key)
    clock.now += 4.9
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    clock.now += 0.2
    assert client.get("/onboards", headers=buyer.auth).status_code == 401


def test_without_a_cache_revocation_is_immediate(client, buyer):
    use_keys(client, 0)
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    revoke(buyer.key)
    assert client.get("/onboards", headers=buyer.auth).status_code == 401


def test_wrong_keys_are_never_cached(client, buyer):
    use_keys(client, 5, timer=Clock())
    wrong = "0" * 40
    assert client.get("/onboards", headers=basic_auth(wrong)).status_code == 401
    with transaction():  # the same key becomes valid: a cached failure would still refuse it
        ApiKey.create(user=buyer.user_id, prefix=wrong[:8], digest=digest_of(wrong))
    assert client.get("/onboards", headers=basic_auth(wrong)).status_code == 200


def waiting_on_lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the requests that have begun waiting on a (shared) look-up, as they begin."""
    waiting: list[str] = []
    shared = auth._shared_lookup

    async def noted(keys: Keys, key: str, digest: str, client: str) -> Principal | None:
        waiting.append(key)
        return await shared(keys, key, digest, client)

    monkeypatch.setattr(auth, "_shared_lookup", noted)
    return waiting


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Yields to the loop until `condition` holds; fails after `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        await asyncio.sleep(0.01)


def test_requests_that_miss_the_cache_together_share_one_lookup(client, buyer, monkeypatch):
    """A burst of requests on a cold (or just expired) entry: one lookup, not one each."""
    use_keys(client, 5, timer=Clock())
    lookups = []
    release = threading.Event()
    lookup = auth.lookup

    def slow(key: str, client: str, blocked_for: float | None) -> Principal | None:
        lookups.append(key)
        release.wait(5)  # held until every request is waiting on it
        return lookup(key, client, blocked_for)

    monkeypatch.setattr(auth, "lookup", slow)
    waiting = waiting_on_lookups(monkeypatch)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            requests = [asyncio.ensure_future(http.get("/onboards", headers=buyer.auth)) for _ in range(8)]
            await until(lambda: len(waiting) == 8 and len(lookups) == 1)
            release.set()
            return [response.status_code for response in await asyncio.gather(*requests)]

    assert asyncio.run(burst()) == [200] * 8
    assert len(lookups) == 1
    assert client.app.runtime.keys.looking_up == {}


def test_a_request_that_goes_away_does_not_cancel_the_shared_lookup(buyer, monkeypatch):
    release = threading.Event()
    lookup = auth.lookup
    monkeypatch.setattr(auth, "lookup", lambda *args: release.wait(5) and lookup(*args))
    waiting = waiting_on_lookups(monkeypatch)
    request = SimpleNamespace(scope={"client": ("192.0.2.1", 1234)},
                              headers={"authorization": basic_auth(buyer.key)["Authorization"]},
                              state=SimpleNamespace(runtime=SimpleNamespace(keys=Keys(5, timer=Clock()),
                                                                            trusted_proxies=())))

    async def go() -> tuple[dict | None, bool]:
        first = asyncio.ensure_future(auth.basic_auth("API", buyer.key, request))
        second = asyncio.ensure_future(auth.basic_auth("API", buyer.key, request))
        await until(lambda: len(waiting) == 2)
        first.cancel()
        release.set()
        return await second, first.cancelled()

    token_info, cancelled = asyncio.run(go())
    assert cancelled and token_info == {"sub": buyer.user_id, "account_id": buyer.account_id}

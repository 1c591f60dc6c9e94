"""The key cache: most requests skip the key lookup, and a revoked key stops working within the TTL."""

import asyncio
import threading
from types import SimpleNamespace

import httpx

from models.accounts import ApiKey, Principal
from models.base import transaction
from onboards import auth
from tests.helpers import basic_auth


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def revoke(key: str) -> None:
    with transaction():
        ApiKey.revoke(key[:8])


def test_a_revoked_key_works_until_the_cache_forgets_it(client, buyer):
    clock = Clock()
    auth.configure(5, timer=clock)
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    revoke(buyer.key)
    clock.now += 4.9
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    clock.now += 0.2
    assert client.get("/onboards", headers=buyer.auth).status_code == 401


def test_without_a_cache_revocation_is_immediate(client, buyer):
    auth.configure(0)
    assert client.get("/onboards", headers=buyer.auth).status_code == 200
    revoke(buyer.key)
    assert client.get("/onboards", headers=buyer.auth).status_code == 401


def test_wrong_keys_are_never_cached(client, buyer):
    auth.configure(5, timer=Clock())
    wrong = "0" * 40
    assert client.get("/onboards", headers=basic_auth(wrong)).status_code == 401
    with transaction():  # the same key becomes valid: a cached failure would still refuse it
        ApiKey.create(user=buyer.user_id, prefix=wrong[:8], digest=ApiKey.digest_of(wrong))
    assert client.get("/onboards", headers=basic_auth(wrong)).status_code == 200


def test_requests_that_miss_the_cache_together_share_one_lookup(client, buyer, monkeypatch):
    """A burst of requests on a cold (or just expired) entry: one lookup, not one each."""
    auth.configure(5, timer=Clock())
    lookups = []
    release = threading.Event()
    lookup = auth._lookup

    def slow(key: str, client: str) -> Principal | None:
        lookups.append(key)
        release.wait(5)  # held until every request is waiting on it
        return lookup(key, client)

    monkeypatch.setattr(auth, "_lookup", slow)

    async def burst() -> list[int]:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            requests = [asyncio.ensure_future(http.get("/onboards", headers=buyer.auth)) for _ in range(8)]
            while not lookups:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the other seven have asked by now
            release.set()
            return [response.status_code for response in await asyncio.gather(*requests)]

    assert asyncio.run(burst()) == [200] * 8
    assert len(lookups) == 1
    assert auth._looking_up == {}


def test_a_request_that_goes_away_does_not_cancel_the_shared_lookup(buyer, monkeypatch):
    auth.configure(5, timer=Clock())
    release = threading.Event()
    lookup = auth._lookup
    monkeypatch.setattr(auth, "_lookup", lambda key, client: release.wait(5) and lookup(key, client))
    request = SimpleNamespace(scope={"client": ("192.0.2.1", 1234)},
                              headers={"authorization": basic_auth(buyer.key)["Authorization"]})

    async def go() -> tuple[dict | None, bool]:
        first = asyncio.ensure_future(auth.basic_auth("API", buyer.key, request))
        second = asyncio.ensure_future(auth.basic_auth("API", buyer.key, request))
        await asyncio.sleep(0.05)
        first.cancel()
        release.set()
        return await second, first.cancelled()

    token_info, cancelled = asyncio.run(go())
    assert cancelled and token_info == {"sub": buyer.user_id, "account_id": buyer.account_id}

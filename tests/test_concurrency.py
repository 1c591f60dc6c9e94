"""Races over real HTTP: 50 clients hit one uvicorn-served app at the same instant, on each database.

The operations that can race (create-from-invitation, completing an onboard, setting up delivery,
inviting) must come out exactly once, whatever the interleaving: one onboard, one setup, one
e-mail per person, and never a 5xx.
"""

import functools
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.testclient import TestClient

from models.accounts import User
from models.base import transaction
from tests.helpers import Party, invite, ready_to_complete, recipients
from tests.servers import serve

CLIENTS = 50

Request = Callable[[httpx.Client], httpx.Response]


@pytest.fixture
def live(app) -> Iterator[str]:
    """The app served by a real uvicorn server; its base URL."""
    with serve(app) as base_url:
        yield base_url


@pytest.fixture
def seller_colleague(seller: Party) -> str:
    """A second user of the seller's account: every seller notification goes to both."""
    with transaction():
        return User.create(account=seller.account_id, email="colleague@example.com").email


def at_once(base_url: str, requests: Sequence[Request]) -> list[httpx.Response]:
    """Sends each request from its own thread and client, all released together; the responses in order."""
    barrier = threading.Barrier(len(requests), timeout=30)

    def run(request: Request) -> httpx.Response:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            barrier.wait()
            return request(http)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return list(pool.map(run, requests))


def no_server_errors(responses: list[httpx.Response]) -> Counter:
    """The count of each status code, after checking that none is a 5xx."""
    failures = [f"{r.request.method} {r.request.url.path} -> {r.status_code}: {r.text[:300]}"
                for r in responses if r.status_code >= 500]
    assert not failures, "\n".join(failures)
    return Counter(r.status_code for r in responses)




def assert_set_up_once(client: TestClient, seller: Party, buyer: Party, seller_flow: dict, onboard: dict,
                       seller_emails: list[str]) -> None:
    """Every side effect of the buyer setup is there exactly once."""
    current = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).json()
    assert current["status"] == "completed", current
    buyer_flows = client.get("/flows", headers=buyer.auth).json()
    assert [f["id"] for f in buyer_flows] == [current["flow_id"]], "a setup that lost the race left a flow behind"
    seller_entity = [e["id"] for e in client.get("/entities", headers=buyer.auth).json() if e.get("source") == "seller"]
    assert len(seller_entity) == 1
    assert [s["entity"]["id"] for s in buyer_flows[0]["sources"]] == seller_entity
    step = client.get(f"/flows/{seller_flow['id']}", headers=seller.auth).json()["steps"][0]
    assert step["enabled"] is True
    assert [(m["property"], m["value"]) for m in step["integration"]["mappings"]] == [("flow_id", current["flow_id"])]
    connection = client.get(f"/connections/{onboard['connection_id']}", headers=buyer.auth).json()
    assert connection["ui_state"]["has_setup_buyer_delivery"] is True
    assert recipients("buyer_delivery_set_up") == sorted(seller_emails)


def test_concurrent_creates_make_one_onboard(client, live, seller, buyer, seller_colleague):
    entity = invite(client, seller, buyer.email)
    body = {"invitation_id": entity["invitation_id"]}

    def create(http: httpx.Client) -> httpx.Response:
        return http.post("/onboards", json=body, headers=buyer.auth)

    responses = at_once(live, [create] * CLIENTS)

    assert no_server_errors(responses) == {201: 1, 200: CLIENTS - 1}, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    listed = client.get("/onboards", headers=buyer.auth).json()
    assert [o["id"] for o in listed] == [responses[0].json()["id"]]
    assert recipients("invitation_accepted") == sorted([seller.email, seller_colleague])
    buyer_entities = client.get("/entities", headers=buyer.auth).json()
    assert len(buyer_entities) == 1, "each accept that lost the race must leave no entity behind"


def test_concurrent_completes_set_up_once(client, live, seller, buyer, seller_colleague):
    _entity, flow, onboard = ready_to_complete(client, seller, buyer)
    body = {"invitation_id": onboard["invitation_id"], "status": "completed"}

    def complete(http: httpx.Client) -> httpx.Response:
        return http.put(f"/onboards/{onboard['id']}", json=body, headers=buyer.auth)

    responses = at_once(live, [complete] * CLIENTS)

    assert no_server_errors(responses) == {200: CLIENTS}, [r.text for r in responses]
    assert {r.json()["status"] for r in responses} == {"completed"}
    assert len({r.json()["flow_id"] for r in responses}) == 1
    assert_set_up_once(client, seller, buyer, flow, onboard, [seller.email, seller_colleague])


def test_concurrent_complete_and_setup_buyer_set_up_once(client, live, seller, buyer, seller_colleague):
    _entity, flow, onboard = ready_to_complete(client, seller, buyer)

    def complete(http: httpx.Client) -> httpx.Response:
        return http.put(f"/onboards/{onboard['id']}", headers=buyer.auth,
                        json={"invitation_id": onboard["invitation_id"], "status": "completed"})

    def setup(http: httpx.Client) -> httpx.Response:
        return http.post("/onboard/buyer", json={"connection_id": onboard["connection_id"]}, headers=buyer.auth)

    requests = [complete if i % 2 else setup for i in range(CLIENTS)]
    responses = at_once(live, requests)

    no_server_errors(responses)
    puts = [r for r in responses if r.request.method == "PUT"]
    posts = [r for r in responses if r.request.method == "POST"]
    assert {r.status_code for r in puts} == {200}, [r.text for r in puts]
    assert {r.json()["status"] for r in puts} == {"completed"}
    assert {r.status_code for r in posts} <= {200, 409}, [r.text for r in posts]
    assert all("already set up" in r.json()["detail"] for r in posts if r.status_code == 409)
    # Exactly one request ran the setup: at most one POST got the redirect (none if a PUT ran it).
    assert sum(r.status_code == 200 for r in posts) <= 1
    assert_set_up_once(client, seller, buyer, flow, onboard, [seller.email, seller_colleague])
    flow_id = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).json()["flow_id"]
    assert {r.json()["redirect"] for r in posts if r.status_code == 200} <= {f"/flows/{flow_id}"}
    assert {r.json()["flow_id"] for r in puts} == {flow_id}


def test_concurrent_invitations_send_once(client, live, seller, buyer):
    def send(http: httpx.Client) -> httpx.Response:
        return http.post("/invitations/recipient", json={"email": buyer.email}, headers=seller.auth)

    responses = at_once(live, [send] * CLIENTS)

    assert no_server_errors(responses) == {201: 1, 200: CLIENTS - 1}, [r.text for r in responses]
    assert len({r.json()["entity"]["id"] for r in responses}) == 1
    entities = client.get("/entities", headers=seller.auth).json()
    assert [(e["id"], e["pending"]) for e in entities] == [(responses[0].json()["entity"]["id"], True)]
    assert len(client.get("/connections", headers=seller.auth).json()) == 1
    assert len(client.get("/invitations", headers=seller.auth).json()) == 1
    assert recipients("invitation_sent") == [buyer.email]


def test_an_entity_is_never_deleted_from_under_a_flow_being_written(live, client, seller):
    for _ in range(8):
        entity = client.post("/entities", json={"name": "Partner"}, headers=seller.auth).json()
        step = {"type": "recipient", "entity": {"id": entity["id"]}, "enabled": False}
        delete: Request = functools.partial(lambda http, path: http.delete(path, headers=seller.auth),
                                            path=f"/entities/{entity['id']}")
        create: Request = functools.partial(lambda http, body: http.post("/flows", json=body, headers=seller.auth),
                                            body={"name": "Uses it", "steps": [step]})
        deleted, created = at_once(live, [delete, create])
        no_server_errors([deleted, created])
        # Exactly one wins: the flow was written first (the delete sees it: 409), or the entity went first
        # (the flow names no entity: 404). Never both, which would leave a flow naming a deleted entity.
        assert sorted([deleted.status_code, created.status_code]) in ([200, 404], [201, 409]), (deleted.text,
                                                                                              created.text)

"""Lists: plain arrays, capped by `limit`, paged by id cursors, with a Link to the next page."""

import logging
import re

import pytest

from tests.helpers import invite


def next_link(response) -> str | None:
    match = re.fullmatch(r'<([^>]+)>; rel="next"', response.headers.get("link", ""))
    return match.group(1) if match else None


@pytest.fixture
def five_flows(client, seller) -> list[str]:
    return [client.post("/flows", json={"name": f"flow {n}"}, headers=seller.auth).json()["id"] for n in range(5)]


def test_pages_follow_link_until_the_end(client, seller, five_flows):
    seen: list[str] = []
    url: str | None = "/flows?limit=2"
    while url:
        response = client.get(url, headers=seller.auth)
        assert response.status_code == 200
        assert isinstance(response.json(), list) and len(response.json()) <= 2
        seen += [flow["id"] for flow in response.json()]
        url = next_link(response)
    assert seen == five_flows


def test_descending_pages_use_before_id(client, seller, five_flows):
    first = client.get("/flows?limit=3&sort=desc", headers=seller.auth)
    assert [f["id"] for f in first.json()] == five_flows[::-1][:3]
    link = next_link(first)
    assert link is not None and f"before_id={five_flows[2]}" in link
    rest = client.get(link, headers=seller.auth)
    assert [f["id"] for f in rest.json()] == five_flows[1::-1]
    assert next_link(rest) is None


def test_after_and_before_id_are_exclusive(client, seller, five_flows):
    response = client.get(f"/flows?after_id={five_flows[0]}&before_id={five_flows[4]}", headers=seller.auth)
    assert [f["id"] for f in response.json()] == five_flows[1:4]


def test_default_limit_is_100(client, seller, buyer):
    for n in range(101):
        client.post("/flows", json={"name": f"flow {n}"}, headers=buyer.auth)
    response = client.get("/flows", headers=buyer.auth)
    assert len(response.json()) == 100 and next_link(response) is not None


def test_lists_hold_only_the_callers_objects(client, seller, buyer, outsider):
    invite(client, seller, buyer.email)
    client.post("/flows", json={"name": "seller only"}, headers=seller.auth)
    for path in ("/flows", "/entities", "/connections", "/invitations", "/onboards"):
        assert client.get(path, headers=outsider.auth).json() == [], path
    assert [c["relationship_type"] for c in client.get("/connections", headers=seller.auth).json()] == ["buyer"]
    assert client.get("/connections?relationship_type=seller", headers=seller.auth).json() == []
    # The invitee sees the invitation before accepting it, not yet the connection.
    assert len(client.get("/invitations", headers=buyer.auth).json()) == 1
    assert client.get("/connections", headers=buyer.auth).json() == []


def test_a_page_of_connections_is_one_query_whatever_its_length(client, seller, make_party, caplog):
    for n in range(6):
        buyer = make_party(f"Buyer {n}", f"buyer{n}@example.com")
        invitation = invite(client, seller, buyer.email)["invitation_id"]
        assert client.post(f"/invitations/{invitation}/accept", headers=buyer.auth).status_code == 200
    caplog.set_level(logging.DEBUG, logger="peewee")

    def page(limit: int) -> tuple[list[dict], int]:
        caplog.clear()
        connections = client.get(f"/connections?limit={limit}", headers=seller.auth).json()
        return connections, sum(record.name == "peewee" for record in caplog.records)

    short, short_queries = page(2)
    full, full_queries = page(6)
    assert full_queries == short_queries
    assert full[:2] == short and len(full) == 6
    assert {c["connected_account"]["name"] for c in full} == {f"Buyer {n}" for n in range(6)}
    assert all(c["status"] == "completed" and c["account_entity"]["connected_account_id"] for c in full)


def test_a_pending_connection_lists_no_connected_account(client, seller, buyer):
    invite(client, seller, buyer.email)
    [pending] = client.get("/connections", headers=seller.auth).json()
    assert pending["status"] == "pending" and pending["connected_account"] is None
    assert pending["account_entity"]["pending"] is True

"""ETag on onboards and flows; If-Match makes a PUT conditional (412 when stale, nothing changed)."""

import pytest

from tests.helpers import create_onboard, invite


@pytest.fixture
def onboard(client, seller, buyer) -> dict:
    return create_onboard(client, buyer, invite(client, seller, buyer.email)["invitation_id"])


def put(client, party, onboard, headers=None, **body):
    return client.put(f"/onboards/{onboard['id']}", headers={**party.auth, **(headers or {})},
                      json={"invitation_id": onboard["invitation_id"], **body})


def test_every_write_moves_the_etag(client, buyer, onboard):
    first = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).headers["etag"]
    moved = put(client, buyer, onboard, status="in_progress").headers["etag"]
    assert first == '"v1"' and moved == '"v2"'
    # Repeating the current status changes nothing, the ETag included.
    assert put(client, buyer, onboard, status="in_progress").headers["etag"] == moved


def test_stale_if_match_is_412_and_changes_nothing(client, buyer, onboard):
    stale = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).headers["etag"]
    put(client, buyer, onboard, status="in_progress")
    response = put(client, buyer, onboard, headers={"If-Match": stale}, status="completed")
    assert response.status_code == 412
    assert response.headers["content-type"] == "application/problem+json"
    assert client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).json()["status"] == "in_progress"


@pytest.mark.parametrize("header", ['"v1"', '"v9", "v1"', 'W/"v1", "v1"', "*"])
def test_matching_if_match_proceeds(client, buyer, onboard, header):
    response = put(client, buyer, onboard, headers={"If-Match": header}, status="in_progress")
    assert response.status_code == 200 and response.json()["status"] == "in_progress"


# If-Match compares strongly (RFC 9110, 13.1.1): a weak tag never matches, even the current version's.
@pytest.mark.parametrize("header", ['"v2"', "garbage", '""', 'W/"v1"'])
def test_non_matching_if_match_is_412(client, buyer, onboard, header):
    assert put(client, buyer, onboard, headers={"If-Match": header}, status="in_progress").status_code == 412


def test_flow_put_honours_if_match(client, seller):
    created = client.post("/flows", json={"name": "one"}, headers=seller.auth)
    flow_id, tag = created.json()["id"], created.headers["etag"]
    fresh = client.put(f"/flows/{flow_id}", json={"name": "two"}, headers={**seller.auth, "If-Match": tag})
    assert fresh.status_code == 200
    stale = client.put(f"/flows/{flow_id}", json={"name": "three"}, headers={**seller.auth, "If-Match": tag})
    assert stale.status_code == 412
    assert client.get(f"/flows/{flow_id}", headers=seller.auth).json()["name"] == "two"
    # Without If-Match the PUT proceeds, as LeadConduit clients expect.
    assert client.put(f"/flows/{flow_id}", json={"name": "four"}, headers=seller.auth).status_code == 200


def single_resources(client, seller, buyer) -> list[str]:
    entity = invite(client, seller, buyer.email)
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    flow = client.post("/flows", json={"name": "one"}, headers=buyer.auth).json()
    buyers_entity = client.get("/entities", headers=buyer.auth).json()[0]
    return [f"/onboards/{onboard['id']}", f"/flows/{flow['id']}", f"/invitations/{entity['invitation_id']}",
            f"/connections/{onboard['connection_id']}", f"/entities/{buyers_entity['id']}"]


def test_every_single_resource_has_a_strong_etag_and_answers_if_none_match_with_304(client, seller, buyer):
    for path in single_resources(client, seller, buyer):
        first = client.get(path, headers=buyer.auth)
        tag = first.headers["etag"]
        assert first.status_code == 200 and tag.startswith('"') and not tag.startswith("W/"), path
        for held in (tag, f"W/{tag}", f'"other", {tag}', "*"):
            unchanged = client.get(path, headers={**buyer.auth, "If-None-Match": held})
            assert (unchanged.status_code, unchanged.content, unchanged.headers["etag"]) == (304, b"", tag), path
        assert client.get(path, headers={**buyer.auth, "If-None-Match": '"other"'}).status_code == 200


def test_a_change_changes_the_etag(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    path = f"/entities/{entity['id']}"
    tag = client.get(path, headers=seller.auth).headers["etag"]
    create_onboard(client, buyer, entity["invitation_id"])  # accepting changes the seller's entity
    changed = client.get(path, headers={**seller.auth, "If-None-Match": tag})
    assert changed.status_code == 200 and changed.headers["etag"] != tag

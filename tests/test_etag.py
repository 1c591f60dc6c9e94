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


def operations():
    from onboards.app import load_spec

    spec = load_spec()
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method != "parameters":
                names = {p.get("$ref", "").rsplit("/", 1)[-1] for p in [*item.get("parameters", []),
                                                                       *operation.get("parameters", [])]}
                yield method, path, operation, names


def test_the_spec_declares_if_match_on_every_put_and_delete_and_if_none_match_on_every_get_of_one():
    for method, path, operation, names in operations():
        responses = operation["responses"]
        if method in ("put", "delete"):
            assert "IfMatch" in names and "412" in responses, f"{method} {path}"
        schema = responses.get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if method == "get" and "$ref" in schema and path != "/health":
            assert "IfNoneMatch" in names and "304" in responses and "ETag" in responses["200"]["headers"], path


def test_put_account_honours_if_match(client, seller):
    tag = client.get("/account", headers=seller.auth).headers["etag"]
    assert client.put("/account", json={"name": "Other"}, headers={**seller.auth, "If-Match": tag}).status_code == 200
    stale = client.put("/account", json={"name": "Third"}, headers={**seller.auth, "If-Match": tag})
    assert stale.status_code == 412 and stale.headers["content-type"] == "application/problem+json"
    assert client.get("/account", headers=seller.auth).json()["name"] == "Other"


def test_withdrawing_an_invitation_honours_if_match(client, seller):
    path = f"/invitations/{invite(client, seller, 'someone@example.com')['invitation_id']}"
    tag = client.get(path, headers=seller.auth).headers["etag"]
    stale = client.delete(path, headers={**seller.auth, "If-Match": '"0"'})
    assert stale.status_code == 412 and stale.headers["content-type"] == "application/problem+json"
    assert client.get(path, headers=seller.auth).status_code == 200
    assert client.delete(path, headers={**seller.auth, "If-Match": tag}).status_code == 204


def test_put_user_settings_honours_if_match(client, seller):
    user_id = client.get("/user", headers=seller.auth).json()["id"]
    path = f"/user_settings/{user_id}"
    tag = client.get(path, headers=seller.auth).headers["etag"]
    off = {"notifications": {"connection_invites": {"enabled": False}}}
    assert client.put(path, json=off, headers={**seller.auth, "If-Match": tag}).status_code == 200
    on = {"notifications": {"connection_invites": {"enabled": True}}}
    assert client.put(path, json=on, headers={**seller.auth, "If-Match": tag}).status_code == 412
    assert client.get(path, headers=seller.auth).json()["notifications"]["connection_invites"]["enabled"] is False
    assert client.put(path, json=on, headers={**seller.auth, "If-Match": "*"}).status_code == 200


def test_resend_honours_the_entitys_if_match(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    path = f"/entities/{entity['id']}"
    tag = client.get(path, headers=seller.auth).headers["etag"]
    renewed = client.put(f"/invitations/{entity['id']}/resend", headers={**seller.auth, "If-Match": tag})
    assert renewed.status_code == 200
    changed = client.put(path, json={**client.get(path, headers=seller.auth).json(), "description": "changed"},
                         headers=seller.auth)
    assert changed.status_code == 200 and changed.headers["etag"] != tag
    stale = client.put(f"/invitations/{entity['id']}/resend", headers={**seller.auth, "If-Match": tag})
    assert stale.status_code == 412


def test_get_account_user_and_user_settings_answer_if_none_match_with_304(client, seller):
    user_id = client.get("/user", headers=seller.auth).json()["id"]
    for path in ("/account", "/user", f"/user_settings/{user_id}"):
        tag = client.get(path, headers=seller.auth).headers["etag"]
        assert client.get(path, headers={**seller.auth, "If-None-Match": tag}).status_code == 304, path

"""What a client written against LeadConduit's documentation does: send back what it read, name either id."""

import json

import yaml

from models.base import transaction
from models.outbox import OutboxMessage
from onboards.app import load_spec
from tests.helpers import create_onboard, invite, put_status, ready_to_complete, seller_flow


def test_an_onboard_read_can_be_sent_back_as_it_is(client, seller, buyer):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    read = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)
    sent = client.put(f"/onboards/{onboard['id']}", json={**read.json(), "status": "in_progress"}, headers=buyer.auth)
    assert sent.status_code == 200 and sent.json()["status"] == "in_progress"
    # Read-only members are ignored; typed as the read gives them (a timestamp is a date-time), so that
    # every generator's write type takes its read type.
    again = client.put(f"/onboards/{onboard['id']}", json={**sent.json(), "id": "f" * 24,
                                                           "created_at": "2000-01-01T00:00:00Z"},
                       headers={**buyer.auth, "If-Match": sent.headers["etag"]})
    assert again.status_code == 200 and again.json() == sent.json()
    garbled = client.put(f"/onboards/{onboard['id']}", json={**sent.json(), "created_at": "x"}, headers=buyer.auth)
    assert garbled.status_code == 400 and garbled.json()["errors"][0]["pointer"] == "/created_at"


def test_a_null_flow_id_clears_the_onboards_flow_and_the_setup_makes_one(client, seller, buyer):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    own = client.post("/flows", json={"name": "mine"}, headers=buyer.auth).json()
    chosen = put_status(client, buyer, onboard, "in_progress", flow_id=own["id"]).json()
    assert chosen["flow_id"] == own["id"]
    cleared = client.put(f"/onboards/{onboard['id']}", json={**chosen, "flow_id": None}, headers=buyer.auth).json()
    assert cleared["flow_id"] is None
    done = put_status(client, buyer, onboard, "completed").json()
    assert done["status"] == "completed" and done["flow_id"] not in (None, own["id"])


def test_a_flow_read_can_be_sent_back_as_it_is(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    flow = seller_flow(client, seller, entity["id"])
    read = client.get(f"/flows/{flow['id']}", headers=seller.auth).json()
    sent = client.put(f"/flows/{flow['id']}", json={**read, "name": "renamed"}, headers=seller.auth)
    assert sent.status_code == 200, sent.text
    assert {**sent.json(), "name": read["name"], "updated_at": read["updated_at"]} == read


def test_the_buyer_setup_takes_either_id_or_both_naming_one_connection(client, seller, buyer, make_party):
    entity = invite(client, seller, buyer.email)
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    other = invite(client, make_party("Second Seller", "second.seller@example.org"), buyer.email)
    mismatched = client.post("/onboard/buyer", headers=buyer.auth, json={
        "connection_id": onboard["connection_id"], "invitation_id": other["invitation_id"]})
    assert mismatched.status_code == 409 and "different connections" in mismatched.json()["detail"]
    assert client.get(f"/invitations/{other['invitation_id']}", headers=buyer.auth).json()["status"] == "pending"
    both = client.post("/onboard/buyer", headers=buyer.auth, json={
        "connection_id": onboard["connection_id"], "invitation_id": entity["invitation_id"]})
    assert both.status_code == 200 and both.json()["redirect"].startswith("/flows/")
    assert client.post("/onboard/buyer", json={}, headers=buyer.auth).status_code == 400


ENTITY = {"name": "Acme Source", "description": "Our web forms", "source": "form", "recipient": None,
          "module_ids": ["leadconduit-default.inbound"], "deprecated": False, "see": None, "field_suffix": "acme",
          "logo_url": "https://example.org/logo.png", "time_zone": "America/Chicago",
          "trustedform_certified_vendor": True, "website": "https://example.org"}


def test_an_entity_keeps_every_documented_member_and_takes_back_what_it_gave(client, seller):
    made = client.post("/entities", json=ENTITY, headers=seller.auth)
    assert made.status_code == 201, made.text
    entity = made.json()
    assert {k: entity[k] for k in ENTITY} == ENTITY
    assert (entity["standard"], entity["account"], entity["pending"], entity["flow_ids"]) == (False, False, False, [])
    read = client.get(f"/entities/{entity['id']}", headers=seller.auth)
    assert read.json() == entity
    sent = client.put(f"/entities/{entity['id']}", json={**read.json(), "description": None, "website": None},
                      headers={**seller.auth, "If-Match": read.headers["etag"]})
    assert sent.status_code == 200 and (sent.json()["description"], sent.json()["website"]) == (None, None)
    stale = client.put(f"/entities/{entity['id']}", json=read.json(), headers={**seller.auth,
                                                                                "If-Match": read.headers["etag"]})
    assert stale.status_code == 412
    assert client.get(f"/entities/{entity['id']}", headers=seller.auth).json()["description"] is None


def test_flow_ids_follow_the_flows_sources(client, seller):
    entity = client.post("/entities", json={"name": "Web forms", "source": "form"}, headers=seller.auth).json()
    flows = [client.post("/flows", json={"name": f"f{n}", "sources": [{"entity": {"id": entity["id"]}}]},
                         headers=seller.auth).json() for n in range(2)]
    assert client.get(f"/entities/{entity['id']}", headers=seller.auth).json()["flow_ids"] == [f["id"] for f in flows]
    client.put(f"/flows/{flows[0]['id']}", json={"name": "f0", "sources": []}, headers=seller.auth)
    listed = {e["id"]: e for e in client.get("/entities", headers=seller.auth).json()}
    assert listed[entity["id"]]["flow_ids"] == [flows[1]["id"]]
    used = client.delete(f"/entities/{entity['id']}", headers=seller.auth)
    assert used.status_code == 409 and flows[1]["id"] in used.json()["detail"]
    assert client.delete(f"/flows/{flows[1]['id']}", headers=seller.auth).json()["id"] == flows[1]["id"]
    gone = client.delete(f"/entities/{entity['id']}", headers=seller.auth)
    assert gone.status_code == 200 and gone.json()["id"] == entity["id"]
    assert client.get(f"/entities/{entity['id']}", headers=seller.auth).status_code == 404


def test_an_account_entity_follows_its_connection(client, seller, buyer):
    pending = invite(client, seller, buyer.email)
    renamed = client.put(f"/entities/{pending['id']}", json={**pending, "name": "Someone else"}, headers=seller.auth)
    assert renamed.status_code == 409
    described = client.put(f"/entities/{pending['id']}", json={**pending, "description": "our buyer"},
                           headers=seller.auth)
    assert described.status_code == 200 and described.json()["description"] == "our buyer"
    assert client.delete(f"/entities/{pending['id']}", headers=seller.auth).status_code == 409


def test_a_deleted_flow_is_answered_as_it_was_and_onboards_lose_it(client, seller, buyer):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    own = client.post("/flows", json={"name": "mine"}, headers=buyer.auth)
    put_status(client, buyer, onboard, "in_progress", flow_id=own.json()["id"])
    stale = client.delete(f"/flows/{own.json()['id']}", headers={**buyer.auth, "If-Match": '"v9"'})
    assert stale.status_code == 412
    deleted = client.delete(f"/flows/{own.json()['id']}", headers={**buyer.auth, "If-Match": own.headers["etag"]})
    assert deleted.status_code == 200 and deleted.json() == own.json()
    assert client.get(f"/flows/{own.json()['id']}", headers=buyer.auth).status_code == 404
    assert client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).json()["flow_id"] is None


def test_connections_carry_the_documented_members(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    onboard = create_onboard(client, buyer, entity["invitation_id"])
    flow = client.post("/flows", json={"name": "in", "sources": [{"entity": {"id": entity["id"]}}]},
                       headers=seller.auth).json()
    for who in (seller, buyer):
        connection = client.get(f"/connections/{onboard['connection_id']}", headers=who.auth).json()
        assert connection["external_id"] == entity["invitation_id"] and connection["custom_entities"] == []
        assert connection["connected_account"]["id"] == (buyer if who is seller else seller).account_id
    listed = client.get("/connections", headers=seller.auth).json()
    assert listed[0]["account_entity"]["flow_ids"] == [flow["id"]]


def test_the_account_shows_what_onboarding_changes(client, seller, buyer):
    account = client.get("/account", headers=seller.auth).json()
    assert (account["id"], account["connected_buyers"], account["pending_buyers"]) == (seller.account_id, [], [])
    entity = invite(client, seller, buyer.email)
    pending = client.get("/account", headers=seller.auth).json()["pending_buyers"]
    assert [p["id"] for p in pending] == [entity["id"]] and pending[0]["expired"] is False
    create_onboard(client, buyer, entity["invitation_id"])
    after = client.get("/account", headers=seller.auth).json()
    assert after["pending_buyers"] == [] and [a["id"] for a in after["connected_buyers"]] == [buyer.account_id]
    assert [a["id"] for a in client.get("/account", headers=buyer.auth).json()["connected_sellers"]] == [
        seller.account_id]
    changed = client.put("/account", json={**after, "name": "Acme Leads Inc.", "time_zone": "America/Denver"},
                         headers=seller.auth)
    assert changed.status_code == 200 and (changed.json()["name"], changed.json()["time_zone"]) == (
        "Acme Leads Inc.", "America/Denver")


def test_the_user_and_the_settings_that_stop_invitation_emails(client, seller, buyer, outsider):
    user = client.get("/user", headers=buyer.auth).json()
    assert (user["id"], user["email"], user["accounts"][0]["id"]) == (buyer.user_id, buyer.email, buyer.account_id)
    path = f"/user_settings/{buyer.user_id}"
    defaults = client.get(path, headers=buyer.auth).json()
    assert defaults["notifications"]["connection_invites"] == {"enabled": True, "unsubscribed_at": None}
    assert client.get(path, headers=outsider.auth).status_code == 404
    off = {"notifications": {"connection_invites": {"enabled": False}}}
    assert client.post("/user_settings", json=off, headers=buyer.auth).status_code == 201
    assert client.post("/user_settings", json=off, headers=buyer.auth).status_code == 409
    settings = client.get(path, headers=buyer.auth).json()
    assert settings["notifications"]["connection_invites"]["enabled"] is False
    assert settings["notifications"]["connection_invites"]["unsubscribed_at"] is not None
    invite(client, seller, buyer.email)
    with transaction(write=False):
        [message] = OutboxMessage.select().where(OutboxMessage.to == buyer.email)
    assert (message.state, message.last_error) == ("suppressed", "the user turned connection_invites off")
    on = client.put(path, json={**settings, "notifications": {"connection_invites": {"enabled": True}}},
                    headers=buyer.auth).json()
    assert on["notifications"]["connection_invites"] == {"enabled": True, "unsubscribed_at": None}
    invite(client, outsider, buyer.email)
    with transaction(write=False):
        states = sorted(m.state for m in OutboxMessage.select().where(OutboxMessage.to == buyer.email))
    assert states == ["pending", "suppressed"]


def test_the_spec_examples_of_errors_are_what_the_server_sends(client, buyer):
    example = load_spec()["components"]["responses"]["BadRequest"]["content"]["application/problem+json"]["example"]
    sent = client.post("/onboards", json={}, headers=buyer.auth)
    assert sent.status_code == 400 and sent.json() == example


def test_the_served_document_is_the_spec_as_written_with_a_real_server(client, settings):
    # As written, less what routes it to this implementation (test_spec.py checks that part is gone).
    written = load_spec()
    public = {**written, "servers": [{"url": settings.base_url, "description": "This server."}],
              "paths": {path: {method: {k: v for k, v in operation.items() if k != "x-openapi-router-controller"}
                               if isinstance(operation, dict) else operation for method, operation in item.items()}
                        for path, item in written["paths"].items()}}
    for path, read in (("/openapi.json", lambda r: r.json()), ("/openapi.yaml", lambda r: yaml.safe_load(r.text))):
        served = read(client.get(path))
        assert served == public
        assert '"$ref"' in json.dumps(served)


def test_a_page_of_many_entities_and_their_flows(client, seller):
    made = [client.post("/entities", json={"name": f"e{n}"}, headers=seller.auth).json() for n in range(130)]
    client.post("/flows", json={"name": "f", "sources": [{"entity": {"id": made[-1]["id"]}}]}, headers=seller.auth)
    listed = client.get("/entities?limit=1000", headers=seller.auth)
    assert listed.status_code == 200 and len(listed.json()) == 130
    assert [e["flow_ids"] != [] for e in listed.json()].count(True) == 1

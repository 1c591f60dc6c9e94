"""The whole workflow over HTTP, and every side effect of the buyer setup."""

from datetime import timedelta

from models.base import transaction, utcnow
from models.invitations import Invitation
from tests.helpers import create_onboard, invite, put_status, ready_to_complete, recipients, seller_flow


def test_invite_create_progress_complete(client, seller, buyer, make_party):
    colleague = make_party("Acme Leads too", "colleague@example.com")
    entity = invite(client, seller, buyer.email)
    assert entity["pending"] is True and entity["recipient"] == "buyer"
    assert recipients("invitation_sent") == [buyer.email]
    flow = seller_flow(client, seller, entity["id"])
    buyer_flow = client.post("/flows", json={"name": "Inbound"}, headers=buyer.auth).json()

    onboard = create_onboard(client, buyer, entity["invitation_id"])
    assert onboard["status"] == "created" and onboard["account_id"] == buyer.account_id
    assert client.get(f"/entities/{entity['id']}", headers=seller.auth).json()["pending"] is False
    assert recipients("invitation_accepted") == [seller.email]

    assert put_status(client, buyer, onboard, "in_progress", flow_id=buyer_flow["id"]).json()["status"] == "in_progress"
    done = put_status(client, buyer, onboard, "completed")
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "completed" and done.json()["flow_id"] == buyer_flow["id"]

    seller_step = client.get(f"/flows/{flow['id']}", headers=seller.auth).json()["steps"][0]
    assert seller_step["enabled"] is True
    mappings = seller_step["integration"]["mappings"]
    assert [(m["property"], m["value"]) for m in mappings] == [("flow_id", buyer_flow["id"])]
    sources = client.get(f"/flows/{buyer_flow['id']}", headers=buyer.auth).json()["sources"]
    assert [s["entity"]["name"] for s in sources] == ["Acme Leads"]
    connection = client.get(f"/connections/{onboard['connection_id']}", headers=buyer.auth).json()
    assert connection["ui_state"]["has_setup_buyer_delivery"] is True
    assert recipients("buyer_delivery_set_up") == [seller.email]
    assert colleague.email not in recipients("buyer_delivery_set_up")


def test_setup_buyer_directly_redirects_then_conflicts(client, seller, buyer):
    entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    first = client.post("/onboard/buyer", json={"connection_id": onboard["connection_id"]}, headers=buyer.auth)
    assert first.status_code == 200, first.text
    assert first.json()["redirect"].startswith("/flows/")
    again = client.post("/onboard/buyer", json={"invitation_id": entity["invitation_id"]}, headers=buyer.auth)
    assert again.status_code == 409
    assert client.get(f"/onboards/{onboard['id']}", headers=buyer.auth).json()["status"] == "completed"


def test_inviting_again_after_expiry_renews_the_same_invitation(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    with transaction():
        Invitation.update(expires_at=utcnow() - timedelta(hours=1)).where(
            Invitation.id == entity["invitation_id"]).execute()
    again = client.post("/invitations/recipient", json={"email": buyer.email}, headers=seller.auth)
    assert again.status_code == 200
    assert again.json()["entity"]["id"] == entity["id"] and again.json()["entity"]["expired"] is False
    assert len(client.get("/invitations", headers=seller.auth).json()) == 1
    assert recipients("invitation_sent") == [buyer.email, buyer.email]
    assert create_onboard(client, buyer, entity["invitation_id"])["status"] == "created"

"""What a client written against LeadConduit's documentation does: send back what it read, name either id."""

from tests.helpers import create_onboard, invite, put_status, ready_to_complete, seller_flow


def test_an_onboard_read_can_be_sent_back_as_it_is(client, seller, buyer):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    read = client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)
    sent = client.put(f"/onboards/{onboard['id']}", json={**read.json(), "status": "in_progress"}, headers=buyer.auth)
    assert sent.status_code == 200 and sent.json()["status"] == "in_progress"
    again = client.put(f"/onboards/{onboard['id']}", json={**sent.json(), "id": "f" * 24, "created_at": "x"},
                       headers={**buyer.auth, "If-Match": sent.headers["etag"]})
    assert again.status_code == 200 and again.json() == sent.json()  # read-only members ignored


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

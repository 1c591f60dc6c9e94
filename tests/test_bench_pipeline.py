"""bench/pipeline.py is the service's pipeline with the four benchmarked operations answered by fixed handlers:
security, validation and every other operation stay the service's, and the service's own resolver is left as
it was."""

from starlette.testclient import TestClient

from bench import pipeline
from handlers import onboards as handlers
from onboards import app as service
from tests.helpers import create_onboard, invite

MISSING = "0" * 24


def test_fixed_onboards_through_the_services_pipeline(settings, client, seller, buyer):
    invitation = invite(client, seller, buyer.email)["invitation_id"]
    failed, done = ({"invitation_id": invitation, "status": status} for status in ("failed", "done"))
    with TestClient(pipeline.create_app(settings)) as fixed:
        assert fixed.get(f"/onboards/{MISSING}", headers=buyer.auth).json() == pipeline.ONBOARD
        assert fixed.get(f"/onboards/{MISSING}", headers=buyer.auth).headers["ETag"] == '"v1"'
        assert len(fixed.get("/onboards", params={"limit": 7}, headers=buyer.auth).json()) == 7
        assert fixed.post("/onboards", json={"invitation_id": invitation}, headers=buyer.auth).status_code == 201
        assert fixed.put(f"/onboards/{MISSING}", json=failed, headers=buyer.auth).status_code == 200
        # What every request pays before its handler is the service's: security, the spec's validation.
        assert fixed.get(f"/onboards/{MISSING}").status_code == 401
        assert fixed.get("/onboards/nothex", headers=buyer.auth).status_code == 400
        assert fixed.get("/onboards", params={"bogus": 1}, headers=buyer.auth).status_code == 400
        assert fixed.put(f"/onboards/{MISSING}", json=done, headers=buyer.auth).status_code == 400
        assert fixed.get("/invitations", headers=seller.auth).json()[0]["id"] == invitation  # the service's
    assert service.handler_of("handlers.onboards.getOnboard") is handlers.get_onboard
    assert client.get(f"/onboards/{MISSING}", headers=buyer.auth).status_code == 404  # nothing was written
    assert create_onboard(client, buyer, invitation)["invitation_id"] == invitation

"""The benchmark's references (bench/floor.py, bench/fastapi_ref.py) apply the service's rules to the
four benchmarked operations: same answers to the same requests, so a ratio to them prices machinery,
not skipped work."""

import base64

import pytest
from starlette.testclient import TestClient

from bench import fastapi_ref, floor
from tests.support import create_onboard, invite

UNKNOWN_ID = "0" * 24


@pytest.fixture
def references(settings, app, monkeypatch) -> dict[str, TestClient]:
    """The service and both references on the same database; no lifespan, so no outbox sender starts."""
    monkeypatch.setattr(floor, "settings", settings)
    monkeypatch.setattr(floor, "principals", {})
    return {"service": TestClient(app), "floor": TestClient(floor.create_app()),
            "fastapi": TestClient(fastapi_ref.create_app())}


def requests(onboard: dict) -> list[tuple[str, str, dict]]:
    """(method, path, options) covering each operation's rules, valid and not."""
    me, invitation = f"/onboards/{onboard['id']}", onboard["invitation_id"]
    return [
        ("GET", me, {}), ("GET", "/onboards/not-hex", {}), ("GET", f"/onboards/{UNKNOWN_ID}", {}),
        ("GET", "/onboards?limit=5", {}), ("GET", "/onboards?limit=0", {}), ("GET", "/onboards?limit=1001", {}),
        ("GET", "/onboards?limit=x", {}), ("GET", "/onboards?sort=up", {}), ("GET", "/onboards?bogus=1", {}),
        ("GET", "/onboards?after_id=zz", {}), ("GET", f"/onboards?sort=desc&before_id={UNKNOWN_ID}", {}),
        ("PUT", me, {"json": {"invitation_id": invitation, "status": "in_progress"}}),
        ("PUT", me, {"json": {"invitation_id": invitation, "status": "nope"}}),
        ("PUT", me, {"json": {"invitation_id": invitation, "extra": "x"}}),
        ("PUT", me, {"json": {"status": "failed"}}), ("PUT", me, {"json": {"invitation_id": 5}}),
        ("PUT", me, {"json": ["not", "an", "object"]}), ("PUT", me, {"content": b"{not json"}),
        ("PUT", f"/onboards/{UNKNOWN_ID}", {"json": {"invitation_id": invitation}}),
        ("POST", "/onboards", {"json": {"invitation_id": invitation}}),
        ("POST", "/onboards", {"json": {"invitation_id": "x"}}),
        ("POST", "/onboards", {"json": {"invitation_id": UNKNOWN_ID}}),
        ("POST", "/onboards", {"json": {"invitation_id": invitation, "flow_id": None}}),
    ]


def test_the_references_answer_as_the_service_does(references, seller, buyer):
    service = references["service"]
    onboard = create_onboard(service, buyer, invite(service, seller, buyer.email)["invitation_id"])
    headers = {**buyer.auth, "Content-Type": "application/json"}
    for method, path, options in requests(onboard):
        statuses = {name: client.request(method, path, headers=headers, **options).status_code
                    for name, client in references.items()}
        assert len(set(statuses.values())) == 1, (method, path, options, statuses)


@pytest.mark.parametrize("authorization", [None, "Basic " + base64.b64encode(b"API:wrong").decode(), "Bearer x"])
def test_the_references_turn_away_who_the_service_does(references, buyer, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    for name, client in references.items():
        answer = client.get(f"/onboards/{UNKNOWN_ID}", headers=headers)
        assert answer.status_code == 401, name
        assert answer.headers["www-authenticate"].startswith("Basic"), name

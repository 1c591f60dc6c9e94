"""Every way a request can fail: the status, the problem+json body, and that nothing changed."""

import base64
import contextlib
import json
import json.scanner
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from httpx2 import Response
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator
from starlette.testclient import TestClient

from models.accounts import ApiKey, User
from models.base import rfc3339, transaction, utcnow
from models.invitations import Invitation
from models.onboards import Onboard
from onboards import validation
from tests.helpers import Party, basic_auth, create_onboard, invite, outbox, put_status, ready_to_complete, seller_flow

PROBLEM = "application/problem+json"
PROBLEM_MEMBERS = {"type", "title", "status", "detail", "error"}
UNKNOWN = "0123456789abcdef01234567"  # well-formed, but no object has it
LONG = "q" * 5000  # input too large to be echoed back


def problem(response: Response, status: int) -> dict[str, Any]:
    """Asserts `response` is an RFC 9457 problem with `status`; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM, response.headers
    body = response.json()
    assert body.keys() >= PROBLEM_MEMBERS, body
    assert body["status"] == status, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert body["error"] == body["detail"], body
    assert "Traceback" not in response.text
    return body


def ok(response: Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def listed(client: TestClient, party: Party, path: str) -> list[dict]:
    return ok(client.get(path, headers=party.auth))


def json_headers(party: Party) -> dict[str, str]:
    return {**party.auth, "Content-Type": "application/json"}


def raw_basic(credentials: bytes) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(credentials).decode()}


def expire(invitation_id: str) -> None:
    with transaction():
        Invitation.update(expires_at=utcnow() - timedelta(hours=1)).where(Invitation.id == invitation_id).execute()




def chunks(data: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    """A generator body: httpx sends it chunked, with no Content-Length."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def padded_create(invitation_id: str, size: int) -> bytes:
    """A valid POST /onboards body padded with JSON whitespace to exactly `size` bytes."""
    head, tail = f'{{"invitation_id": "{invitation_id}"'.encode(), b"}"
    return head + b" " * (size - len(head) - len(tail)) + tail


# --- authentication ----------------------------------------------------------------------------

BAD_CREDENTIALS: dict[str, Callable[[str], dict[str, str]]] = {
    "no header": lambda key: {},
    "empty header": lambda key: {"Authorization": ""},
    "wrong key": lambda key: basic_auth("0" * 40),
    "key with one character changed": lambda key: basic_auth(key[:-1] + ("0" if key[-1] != "0" else "1")),
    "non-hex garbage password": lambda key: basic_auth("not a key: ☃ <script>%00"),
    "over-long password": lambda key: basic_auth("a" * 300),
    "empty password": lambda key: basic_auth(""),
    "key as the user name": lambda key: basic_auth("", user=key),
    "Basic without credentials": lambda key: {"Authorization": "Basic"},
    "Basic, not base64": lambda key: {"Authorization": "Basic !!!not-base64!!!"},
    "Basic, no colon": lambda key: raw_basic(key.encode()),
    "Basic, not UTF-8": lambda key: raw_basic(b"\xff\xfe:\xff\xfe"),
    "Bearer scheme": lambda key: {"Authorization": f"Bearer {key}"},
}


def assert_unauthorized(response: Response) -> None:
    problem(response, 401)
    assert response.headers["www-authenticate"] == 'Basic realm="onboards"'


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_bad_credentials_are_401(client, buyer, credentials):
    assert_unauthorized(client.get("/onboards", headers=credentials(buyer.key)))


@pytest.mark.parametrize(("method", "path", "body"), [
    ("GET", "/onboards", None),
    ("POST", "/onboards", {}),  # authentication comes before validation: no hint about the schema
    ("POST", "/onboards", {"invitation_id": UNKNOWN}),
    ("GET", f"/onboards/{UNKNOWN}", None),
    ("PUT", f"/onboards/{UNKNOWN}", {"invitation_id": UNKNOWN}),
    ("POST", "/onboard/buyer", {"connection_id": UNKNOWN}),
    ("POST", "/invitations/recipient", {"email": "someone@example.com"}),
    ("GET", "/flows", None),
])
def test_every_operation_needs_a_key(client, method, path, body):
    assert_unauthorized(client.request(method, path, json=body))


def test_revoked_key_is_401(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    with transaction():
        assert ApiKey.revoke(buyer.key[:8]) == 1
    assert_unauthorized(client.get("/onboards", headers=buyer.auth))
    assert_unauthorized(client.post("/onboards", json={"invitation_id": entity["invitation_id"]}, headers=buyer.auth))
    assert ok(client.get(f"/invitations/{entity['invitation_id']}", headers=seller.auth))["status"] == "pending"
    assert listed(client, seller, "/onboards") == []


@pytest.mark.parametrize("user", ["API", "", "somebody@example.com", "x" * 100, "ünïcode"])
def test_the_user_name_is_ignored(client, buyer, user):
    assert ok(client.get("/onboards", headers=basic_auth(buyer.key, user=user))) == []


def test_health_needs_no_key(client):
    assert ok(client.get("/health")) == {"status": "ok"}


# --- validation --------------------------------------------------------------------------------

# Each body is otherwise close to valid (the invitation exists), so a 400 proves the check, not luck.
BAD_CREATE_BODIES: dict[str, tuple[Callable[[str], Any], str | None]] = {
    "empty object": (lambda inv: {}, None),
    "only flow_id": (lambda inv: {"flow_id": UNKNOWN}, None),
    "id too short": (lambda inv: {"invitation_id": inv[:23]}, "/invitation_id"),
    "id too long": (lambda inv: {"invitation_id": inv + "0"}, "/invitation_id"),
    "id not hex": (lambda inv: {"invitation_id": "g" + inv[1:]}, "/invitation_id"),
    "id with spaces": (lambda inv: {"invitation_id": f" {inv[1:]}"}, "/invitation_id"),
    "id a number": (lambda inv: {"invitation_id": 123456789012345678901234}, "/invitation_id"),
    "id null": (lambda inv: {"invitation_id": None}, "/invitation_id"),
    "id an array": (lambda inv: {"invitation_id": [inv]}, "/invitation_id"),
    "id an object": (lambda inv: {"invitation_id": {"id": inv}}, "/invitation_id"),
    "bad flow_id": (lambda inv: {"invitation_id": inv, "flow_id": "nope"}, "/flow_id"),
    "unknown member": (lambda inv: {"invitation_id": inv, "status": "created"}, None),
    "unknown member, camelCase": (lambda inv: {"invitationId": inv}, None),
    "body an array": (lambda inv: [{"invitation_id": inv}], None),
    "body a string": (lambda inv: inv, None),
    "body a number": (lambda inv: 1, None),
}


@pytest.mark.parametrize("case", BAD_CREATE_BODIES.values(), ids=BAD_CREATE_BODIES.keys())
def test_invalid_create_body_is_400_and_changes_nothing(client, seller, buyer, case):
    make_body, pointer = case
    inv = invite(client, seller, buyer.email)["invitation_id"]
    body = problem(client.post("/onboards", json=make_body(inv), headers=buyer.auth), 400)
    assert body["errors"], body
    for error in body["errors"]:
        assert set(error) == {"pointer", "message"} and isinstance(error["message"], str) and error["message"]
    if pointer is not None:
        assert pointer in [e["pointer"] for e in body["errors"]], body
    assert listed(client, buyer, "/onboards") == []
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"


BAD_RAW_BODIES = {
    "empty body": lambda inv: b"",
    "not JSON": lambda inv: b"{invitation_id: nope}",
    "truncated JSON": lambda inv: f'{{"invitation_id": "{inv}"'.encode(),
    "JSON null": lambda inv: b"null",
    "not UTF-8": lambda inv: b'{"invitation_id": "\xff\xfe' + inv.encode() + b'"}',
    "UTF-16": lambda inv: f'{{"invitation_id": "{inv}"}}'.encode("utf-16"),
    "trailing garbage": lambda inv: f'{{"invitation_id": "{inv}"}} x'.encode(),
    # Both were a 500: parsing recursed past Python's limit; int() refuses over 4,300 digits.
    "nested past the recursion limit": lambda inv: f'{{"invitation_id": "{inv}", "x": '.encode() + b"[" * 5000
    + b"]" * 5000 + b"}",
    "nested over MAX_NESTING": lambda inv: f'{{"invitation_id": "{inv}", "x": '.encode() + b"[" * 65 + b"]" * 65 + b"}",
    "a number of 5,000 digits": lambda inv: f'{{"invitation_id": "{inv}", "x": '.encode() + b"9" * 5000 + b"}",
}


@pytest.mark.parametrize("make_raw", BAD_RAW_BODIES.values(), ids=BAD_RAW_BODIES.keys())
def test_unparseable_body_is_400_and_changes_nothing(client, seller, buyer, make_raw):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    problem(client.post("/onboards", content=make_raw(inv), headers=json_headers(buyer)), 400)
    assert listed(client, buyer, "/onboards") == []
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"


BAD_UPDATE_BODIES: dict[str, Callable[[dict], Any]] = {
    "status not in the enum": lambda o: {"invitation_id": o["invitation_id"], "status": "done"},
    "status in capitals": lambda o: {"invitation_id": o["invitation_id"], "status": "IN_PROGRESS"},
    "status a number": lambda o: {"invitation_id": o["invitation_id"], "status": 2},
    "status null": lambda o: {"invitation_id": o["invitation_id"], "status": None},
    "missing invitation_id": lambda o: {"status": "in_progress"},
    "unknown member": lambda o: {"invitation_id": o["invitation_id"], "status": "failed", "owner": "x"},
    "bad flow_id": lambda o: {"invitation_id": o["invitation_id"], "flow_id": "x" * 24},
    "id member not an id": lambda o: {"invitation_id": o["invitation_id"], "account_id": True},
    "empty object": lambda o: {},
}


@pytest.mark.parametrize("make_body", BAD_UPDATE_BODIES.values(), ids=BAD_UPDATE_BODIES.keys())
def test_invalid_update_body_is_400_and_changes_nothing(client, seller, buyer, make_body):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    body = problem(client.put(f"/onboards/{onboard['id']}", json=make_body(onboard), headers=buyer.auth), 400)
    assert body["errors"] and all(set(e) == {"pointer", "message"} for e in body["errors"]), body
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == onboard


@pytest.mark.parametrize("path", [
    "/onboards/abc",
    f"/onboards/{UNKNOWN[:23]}",
    f"/onboards/{UNKNOWN}0",
    f"/onboards/{UNKNOWN[:23]}g",
    "/flows/not-an-id",
    "/entities/123",
    "/connections/zzzzzzzzzzzzzzzzzzzzzzzz",
    "/invitations/abc",
])
def test_malformed_path_id_is_400(client, buyer, path):
    problem(client.get(path, headers=buyer.auth), 400)


def test_malformed_path_id_in_writes_is_400(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    problem(client.put("/onboards/abc", json={"invitation_id": UNKNOWN}, headers=buyer.auth), 400)
    problem(client.post("/invitations/abc/accept", headers=buyer.auth), 400)
    problem(client.put("/invitations/abc/resend", headers=seller.auth), 400)
    assert ok(client.get(f"/invitations/{entity['invitation_id']}", headers=buyer.auth))["status"] == "pending"


@pytest.mark.parametrize("query", [
    {"foo": "1"},
    {"limit": "10", "offset": "5"},
    {"limit": "0"},
    {"limit": "-1"},
    {"limit": "1001"},
    {"limit": "ten"},
    {"limit": "1.5"},
    {"sort": "up"},
    {"after_id": "abc"},
    {"before_id": UNKNOWN + "0"},
], ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()))
@pytest.mark.parametrize("path", ["/onboards", "/invitations", "/connections", "/entities", "/flows"])
def test_bad_query_is_400(client, buyer, path, query):
    problem(client.get(path, params=query, headers=buyer.auth), 400)


def test_bad_relationship_type_is_400(client, buyer):
    problem(client.get("/connections", params={"relationship_type": "partner"}, headers=buyer.auth), 400)


def test_unknown_query_parameter_on_a_write_is_400(client, seller, buyer):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    problem(client.post("/onboards", params={"dry_run": "1"}, json={"invitation_id": inv}, headers=buyer.auth), 400)
    assert listed(client, buyer, "/onboards") == []


LONG_INPUTS: dict[str, Callable[[TestClient, Party, str], Response]] = {
    "long id in the body": lambda c, p, inv: c.post("/onboards", json={"invitation_id": LONG}, headers=p.auth),
    "long unknown member name": lambda c, p, inv: c.post("/onboards", json={"invitation_id": inv, LONG: 1},
                                                        headers=p.auth),
    "long unknown member value": lambda c, p, inv: c.post("/onboards", json={"invitation_id": inv, "x": LONG},
                                                         headers=p.auth),
    "long flow_id": lambda c, p, inv: c.post("/onboards", json={"invitation_id": inv, "flow_id": LONG},
                                             headers=p.auth),
    "long status": lambda c, p, inv: c.put(f"/onboards/{UNKNOWN}", json={"invitation_id": inv, "status": LONG},
                                           headers=p.auth),
    "long array": lambda c, p, inv: c.post("/onboards", json={"invitation_id": [LONG, LONG]}, headers=p.auth),
    "long e-mail": lambda c, p, inv: c.post("/invitations/recipient", json={"email": LONG + "@example.com"},
                                            headers=p.auth),
    "long description": lambda c, p, inv: c.post("/invitations/recipient",
                                                 json={"email": "a@example.com", "description": LONG},
                                                 headers=p.auth),
    "long path id": lambda c, p, inv: c.get(f"/onboards/{LONG}", headers=p.auth),
    "long query value": lambda c, p, inv: c.get("/onboards", params={"sort": LONG}, headers=p.auth),
    "long query name": lambda c, p, inv: c.get("/onboards", params={LONG: "1"}, headers=p.auth),
    "long invalid JSON": lambda c, p, inv: c.post("/onboards", content=b'{"' + LONG.encode() + b"\x00",
                                                  headers=json_headers(p)),
}


@pytest.mark.parametrize("send", LONG_INPUTS.values(), ids=LONG_INPUTS.keys())
def test_large_bad_input_is_not_echoed(client, seller, buyer, send):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    response = send(client, buyer, inv)
    problem(response, 400)
    assert LONG not in response.text
    assert "q" * 100 not in response.text
    assert len(response.content) < 5000
    assert listed(client, buyer, "/onboards") == []


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x",
])
def test_non_json_content_type_is_415(client, seller, buyer, content_type):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    raw = f'{{"invitation_id": "{inv}"}}'.encode()
    problem(client.post("/onboards", content=raw, headers={**buyer.auth, "Content-Type": content_type}), 415)
    problem(client.post("/invitations/recipient", content=b'{"email": "new@example.com"}',
                        headers={**seller.auth, "Content-Type": content_type}), 415)
    problem(client.post("/flows", content=b'{"name": "x"}', headers={**seller.auth, "Content-Type": content_type}), 415)
    assert listed(client, buyer, "/onboards") == []
    assert len(listed(client, seller, "/invitations")) == 1
    assert listed(client, seller, "/flows") == []


def test_non_json_content_type_on_update_is_415(client, seller, buyer):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    raw = f'{{"invitation_id": "{onboard["invitation_id"]}", "status": "in_progress"}}'.encode()
    headers = {**buyer.auth, "Content-Type": "text/plain"}
    problem(client.put(f"/onboards/{onboard['id']}", content=raw, headers=headers), 415)
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == onboard


@pytest.mark.parametrize("content_type", ["Application/JSON", "APPLICATION/json; Charset=UTF-8"])
def test_a_media_type_in_capitals_is_still_json_and_still_validated(client, seller, content_type):
    # Media types are case-insensitive: connexion let these through unvalidated, as bytes (a 500).
    headers = {**seller.auth, "Content-Type": content_type}
    problem(client.post("/flows", content=b'{"name": 5, "bogus": 1}', headers=headers), 400)
    assert listed(client, seller, "/flows") == []
    made = client.post("/flows", content=b'{"name": "x"}', headers=headers)
    assert made.status_code == 201 and made.json()["name"] == "x"


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(client, settings, seller, buyer, chunked):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    raw = padded_create(inv, settings.max_body_bytes + 1)
    content: bytes | Iterator[bytes] = chunks(raw) if chunked else raw
    response = client.post("/onboards", content=content, headers=json_headers(buyer))
    assert (response.request.headers.get("transfer-encoding") == "chunked") is chunked
    assert ("content-length" in response.request.headers) is not chunked
    problem(response, 413)
    assert listed(client, buyer, "/onboards") == []
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"
    # The same request exactly at the limit goes through: the 413 was about the size, nothing else.
    at_limit = padded_create(inv, settings.max_body_bytes)
    ok(client.post("/onboards", content=chunks(at_limit) if chunked else at_limit, headers=json_headers(buyer)), 201)


def test_chunked_body_within_the_limit_is_accepted(client, seller, buyer):
    # The control for the chunked 413: a streamed body without Content-Length is still a body.
    inv = invite(client, seller, buyer.email)["invitation_id"]
    response = client.post("/onboards", content=chunks(padded_create(inv, 200)), headers=json_headers(buyer))
    assert "content-length" not in response.request.headers
    assert ok(response, 201)["invitation_id"] == inv


def test_body_over_the_limit_is_413_on_every_write(client, settings, seller, buyer):
    _entity, flow, onboard = ready_to_complete(client, seller, buyer)
    big = b'{"name": "x"' + b" " * settings.max_body_bytes + b"}"
    problem(client.put(f"/flows/{flow['id']}", content=big, headers=json_headers(seller)), 413)
    problem(client.put(f"/onboards/{onboard['id']}", content=chunks(big), headers=json_headers(buyer)), 413)
    problem(client.post("/invitations/source", content=big, headers=json_headers(buyer)), 413)
    assert ok(client.get(f"/flows/{flow['id']}", headers=seller.auth)) == flow
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == onboard


# --- unknown and foreign ids -------------------------------------------------------------------

UNKNOWN_ID_REQUESTS = [
    ("GET", f"/onboards/{UNKNOWN}", None),
    ("PUT", f"/onboards/{UNKNOWN}", {"invitation_id": UNKNOWN, "status": "in_progress"}),
    ("GET", f"/flows/{UNKNOWN}", None),
    ("PUT", f"/flows/{UNKNOWN}", {"name": "Renamed"}),
    ("GET", f"/entities/{UNKNOWN}", None),
    ("GET", f"/connections/{UNKNOWN}", None),
    ("GET", f"/invitations/{UNKNOWN}", None),
    ("POST", f"/invitations/{UNKNOWN}/accept", None),
    ("PUT", f"/invitations/{UNKNOWN}/resend", None),
    ("POST", "/onboards", {"invitation_id": UNKNOWN}),
    ("POST", "/onboard/buyer", {"connection_id": UNKNOWN}),
    ("POST", "/onboard/buyer", {"invitation_id": UNKNOWN}),
]


@pytest.mark.parametrize(("method", "path", "body"), UNKNOWN_ID_REQUESTS,
                         ids=[f"{m} {p} {sorted(b or {})}" for m, p, b in UNKNOWN_ID_REQUESTS])
def test_unknown_id_is_404(client, buyer, method, path, body):
    problem(client.request(method, path, json=body, headers=buyer.auth), 404)
    assert listed(client, buyer, "/onboards") == []


def test_unknown_flow_id_on_create_is_404_and_changes_nothing(client, seller, buyer):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    problem(client.post("/onboards", json={"invitation_id": inv, "flow_id": UNKNOWN}, headers=buyer.auth), 404)
    assert listed(client, buyer, "/onboards") == []
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"
    assert listed(client, buyer, "/entities") == []


# What an outsider tries against the seller's and the buyer's objects: (method, path, body) from the ids.
FOREIGN_REQUESTS: dict[str, Callable[[dict, dict, dict], tuple[str, str, Any]]] = {
    "read the buyer's onboard": lambda e, f, o: ("GET", f"/onboards/{o['id']}", None),
    "update the buyer's onboard": lambda e, f, o: (
        "PUT", f"/onboards/{o['id']}", {"invitation_id": o["invitation_id"], "status": "in_progress"}),
    "fail the buyer's onboard": lambda e, f, o: (
        "PUT", f"/onboards/{o['id']}", {"invitation_id": o["invitation_id"], "status": "failed"}),
    "read the seller's flow": lambda e, f, o: ("GET", f"/flows/{f['id']}", None),
    "rename the seller's flow": lambda e, f, o: ("PUT", f"/flows/{f['id']}", {"name": "Hijacked"}),
    "read the seller's entity": lambda e, f, o: ("GET", f"/entities/{e['id']}", None),
    "read the connection": lambda e, f, o: ("GET", f"/connections/{o['connection_id']}", None),
    "read the connection by invitation": lambda e, f, o: ("GET", f"/connections/{o['invitation_id']}", None),
    "read the invitation": lambda e, f, o: ("GET", f"/invitations/{o['invitation_id']}", None),
    "accept the invitation": lambda e, f, o: ("POST", f"/invitations/{o['invitation_id']}/accept", None),
    "resend the seller's invitation": lambda e, f, o: ("PUT", f"/invitations/{e['id']}/resend", None),
    "onboard from the invitation": lambda e, f, o: ("POST", "/onboards", {"invitation_id": o["invitation_id"]}),
    "set up by connection": lambda e, f, o: ("POST", "/onboard/buyer", {"connection_id": o["connection_id"]}),
    "set up by invitation": lambda e, f, o: ("POST", "/onboard/buyer", {"invitation_id": o["invitation_id"]}),
}


@pytest.mark.parametrize("make_request", FOREIGN_REQUESTS.values(), ids=FOREIGN_REQUESTS.keys())
def test_another_accounts_object_is_404_and_unchanged(client, seller, buyer, outsider, make_request):
    entity, flow, onboard = ready_to_complete(client, seller, buyer)

    def owners_view() -> dict:
        return {
            "onboard": ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)),
            "flow": ok(client.get(f"/flows/{flow['id']}", headers=seller.auth)),
            "entity": ok(client.get(f"/entities/{entity['id']}", headers=seller.auth)),
            "invitation": ok(client.get(f"/invitations/{onboard['invitation_id']}", headers=seller.auth)),
            "connection": ok(client.get(f"/connections/{onboard['connection_id']}", headers=buyer.auth)),
        }

    before = owners_view()
    method, path, body = make_request(entity, flow, onboard)
    problem(client.request(method, path, json=body, headers=outsider.auth), 404)
    assert owners_view() == before
    for path in ("/onboards", "/flows", "/entities", "/connections", "/invitations"):
        assert listed(client, outsider, path) == [], path


def test_outsider_cannot_onboard_from_a_pending_invitation(client, seller, buyer, outsider):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    problem(client.post("/onboards", json={"invitation_id": inv}, headers=outsider.auth), 404)
    problem(client.post(f"/invitations/{inv}/accept", headers=outsider.auth), 404)
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"
    assert listed(client, outsider, "/onboards") == []
    create_onboard(client, buyer, inv)


# --- onboard status transitions ----------------------------------------------------------------


def reach(client: TestClient, buyer: Party, onboard: dict, statuses: list[str]) -> dict:
    for status in statuses:
        onboard = ok(put_status(client, buyer, onboard, status))
        assert onboard["status"] == status, onboard
    return onboard


@pytest.mark.parametrize(("path", "illegal"), [
    ([], "completed_flows_sync"),
    (["completed"], "in_progress"),
    (["completed"], "created"),
    (["completed"], "failed"),
    (["completed"], "completed_flows_sync"),
    (["in_progress", "completed_flows_sync"], "completed"),
    (["in_progress", "completed"], "in_progress"),
    (["in_progress"], "created"),
    (["failed"], "completed"),
    (["failed"], "completed_flows_sync"),
    (["failed"], "created"),
    (["failed", "in_progress"], "created"),
], ids=lambda v: v if isinstance(v, str) else "→".join(["created", *v]))
def test_illegal_transition_is_409_and_unchanged(client, seller, buyer, path, illegal):
    _entity, flow, onboard = ready_to_complete(client, seller, buyer)
    onboard = reach(client, buyer, onboard, path)
    seller_flow_before = ok(client.get(f"/flows/{flow['id']}", headers=seller.auth))
    mails = len(outbox("buyer_delivery_set_up"))
    problem(put_status(client, buyer, onboard, illegal), 409)
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == onboard
    assert ok(client.get(f"/flows/{flow['id']}", headers=seller.auth)) == seller_flow_before
    assert len(outbox("buyer_delivery_set_up")) == mails


@pytest.mark.parametrize("field", ["invitation_id", "account_id", "connection_id"])
def test_fixed_members_cannot_change(client, seller, buyer, field):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    body = {"invitation_id": onboard["invitation_id"], "status": "in_progress", field: UNKNOWN}
    problem(client.put(f"/onboards/{onboard['id']}", json=body, headers=buyer.auth), 409)
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == onboard
    # The same values may be sent back (in either case of hex): that is no change.
    same = {name: onboard[name].upper() for name in ("invitation_id", "account_id", "connection_id")}
    moved = ok(client.put(f"/onboards/{onboard['id']}", json={**same, "status": "in_progress"}, headers=buyer.auth))
    assert moved["status"] == "in_progress" and moved["id"] == onboard["id"]


@pytest.mark.parametrize("path", [
    [], ["in_progress"], ["failed"], ["completed"], ["in_progress", "completed_flows_sync"],
], ids=lambda p: "→".join(["created", *p]))
def test_repeating_the_current_status_changes_nothing(client, seller, buyer, path):
    _entity, flow, onboard = ready_to_complete(client, seller, buyer)
    onboard = reach(client, buyer, onboard, path)
    with transaction():  # an old timestamp, so that any write would show without waiting
        Onboard.update(updated_at=datetime(2020, 1, 2, 3, 4, 5)).where(Onboard.id == onboard["id"]).execute()
    before = ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth))
    assert before["updated_at"] == "2020-01-02T03:04:05Z"
    seller_flow_before = ok(client.get(f"/flows/{flow['id']}", headers=seller.auth))
    mails = len(outbox("buyer_delivery_set_up"))
    assert ok(put_status(client, buyer, before, before["status"])) == before
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == before
    assert ok(client.get(f"/flows/{flow['id']}", headers=seller.auth)) == seller_flow_before
    assert len(outbox("buyer_delivery_set_up")) == mails


def test_flow_of_another_account_is_404_on_update(client, seller, buyer):
    _entity, flow, onboard = ready_to_complete(client, seller, buyer)
    problem(put_status(client, buyer, onboard, "in_progress", flow_id=flow["id"]), 404)
    problem(put_status(client, buyer, onboard, "completed", flow_id=flow["id"]), 404)
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == onboard
    connection = ok(client.get(f"/connections/{onboard['connection_id']}", headers=buyer.auth))
    assert connection["ui_state"]["has_setup_buyer_delivery"] is False


def test_flow_of_another_account_is_404_on_create_and_setup(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    flow = seller_flow(client, seller, entity["id"])
    inv = entity["invitation_id"]
    problem(client.post("/onboards", json={"invitation_id": inv, "flow_id": flow["id"]}, headers=buyer.auth), 404)
    assert listed(client, buyer, "/onboards") == []
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"
    onboard = create_onboard(client, buyer, inv)
    setup = {"connection_id": onboard["connection_id"], "flow_id": flow["id"]}
    problem(client.post("/onboard/buyer", json=setup, headers=buyer.auth), 404)
    assert ok(client.get(f"/onboards/{onboard['id']}", headers=buyer.auth)) == onboard
    assert ok(client.get(f"/flows/{flow['id']}", headers=seller.auth)) == flow
    assert listed(client, buyer, "/flows") == []


# --- invitation rules --------------------------------------------------------------------------


def test_inviting_seller_cannot_onboard_its_own_invitation(client, seller, buyer):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    problem(client.post("/onboards", json={"invitation_id": inv}, headers=seller.auth), 409)
    problem(client.post(f"/invitations/{inv}/accept", headers=seller.auth), 409)
    problem(client.post("/onboard/buyer", json={"invitation_id": inv}, headers=seller.auth), 409)
    assert listed(client, seller, "/onboards") == []
    assert ok(client.get(f"/invitations/{inv}", headers=seller.auth))["status"] == "pending"
    create_onboard(client, buyer, inv)


def test_source_invitation_is_onboarded_after_the_seller_accepts(client, seller, buyer):
    entity = invite(client, buyer, seller.email, kind="source")
    inv = entity["invitation_id"]
    problem(client.post("/onboards", json={"invitation_id": inv}, headers=buyer.auth), 409)
    problem(client.post("/onboard/buyer", json={"invitation_id": inv}, headers=buyer.auth), 409)
    problem(client.post(f"/invitations/{inv}/accept", headers=buyer.auth), 409)  # only the invitee accepts
    problem(client.post("/onboards", json={"invitation_id": inv}, headers=seller.auth), 409)  # the buyer onboards
    assert listed(client, buyer, "/onboards") == [] and listed(client, seller, "/onboards") == []
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"

    accepted = ok(client.post(f"/invitations/{inv}/accept", headers=seller.auth))
    assert accepted["status"] == "accepted" and accepted["accepted_by_account_id"] == seller.account_id
    assert ok(client.post(f"/invitations/{inv}/accept", headers=seller.auth)) == accepted  # accepting again
    onboard = ok(client.post("/onboards", json={"invitation_id": inv}, headers=buyer.auth), 201)
    assert onboard["account_id"] == buyer.account_id and onboard["status"] == "created"


@pytest.mark.parametrize("kind", ["recipient", "source"])
# Blanks are outside the spec's e-mail pattern (a padded address is a 400, tested below), so the
# spellings that must still be recognised as the account's own are the case variants.
@pytest.mark.parametrize("spelling", [str, str.upper, str.title], ids=["same", "upper", "title"])
def test_inviting_your_own_account_is_409(client, make_party, seller, kind, spelling):
    colleague = make_party("Acme Leads", "colleague@example.com")
    with transaction():  # a second user of the seller's account
        User.update(account=seller.account_id).where(User.id == colleague.user_id).execute()
    for email in (seller.email, colleague.email):
        problem(client.post(f"/invitations/{kind}", json={"email": spelling(email)}, headers=seller.auth), 409)
    assert listed(client, seller, "/entities") == []
    assert listed(client, seller, "/invitations") == []
    assert len(outbox("invitation_sent")) == 0


@pytest.mark.parametrize("kind", ["recipient", "source"])
def test_a_padded_address_is_400_and_changes_nothing(client, seller, buyer, kind):
    problem(client.post(f"/invitations/{kind}", json={"email": f"  {buyer.email} "}, headers=seller.auth), 400)
    assert listed(client, seller, "/invitations") == []
    assert len(outbox("invitation_sent")) == 0


@pytest.mark.parametrize("kind", ["recipient", "source"])
def test_inviting_twice_answers_the_existing_entity(client, seller, buyer, kind):
    first = invite(client, seller, buyer.email, kind=kind)
    for email in (buyer.email, buyer.email.upper()):
        again = ok(client.post(f"/invitations/{kind}", json={"email": email}, headers=seller.auth))
        assert again["entity"]["id"] == first["id"]
        assert again["entity"]["invitation_id"] == first["invitation_id"]
    assert [e["id"] for e in listed(client, seller, "/entities")] == [first["id"]]
    assert len(listed(client, seller, "/invitations")) == 1
    assert len(listed(client, seller, "/connections")) == 1
    assert len(outbox("invitation_sent")) == 1


def test_resending_an_accepted_invitation_is_409(client, seller, buyer):
    entity, _flow, _onboard = ready_to_complete(client, seller, buyer)
    before = ok(client.get(f"/entities/{entity['id']}", headers=seller.auth))
    mails = len(outbox("invitation_sent"))
    problem(client.put(f"/invitations/{entity['id']}/resend", headers=seller.auth), 409)
    assert ok(client.get(f"/entities/{entity['id']}", headers=seller.auth)) == before
    assert len(outbox("invitation_sent")) == mails


def test_resending_for_an_entity_without_invitation_is_404(client, seller, buyer):
    # The buyer's entity standing for the seller came from accepting, not from an invitation the buyer sent.
    ready_to_complete(client, seller, buyer)
    [mirror] = listed(client, buyer, "/entities")
    problem(client.put(f"/invitations/{mirror['id']}/resend", headers=buyer.auth), 404)


def test_expired_invitation_is_410_until_resent(client, seller, buyer):
    entity = invite(client, seller, buyer.email)
    inv = entity["invitation_id"]
    expire(inv)
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "expired"
    problem(client.post("/onboards", json={"invitation_id": inv}, headers=buyer.auth), 410)
    problem(client.post(f"/invitations/{inv}/accept", headers=buyer.auth), 410)
    problem(client.post("/onboard/buyer", json={"invitation_id": inv}, headers=buyer.auth), 410)
    assert listed(client, buyer, "/onboards") == []
    assert listed(client, buyer, "/entities") == []
    assert ok(client.get(f"/entities/{entity['id']}", headers=seller.auth))["pending"] is True

    mails = len(outbox("invitation_sent"))
    renewed = ok(client.put(f"/invitations/{entity['id']}/resend", headers=seller.auth))
    assert renewed["entity"]["id"] == entity["id"] and renewed["entity"]["expired"] is False
    assert renewed["entity"]["invitation_expires_at"] > rfc3339(utcnow())
    assert len(outbox("invitation_sent")) == mails + 1
    assert ok(client.get(f"/invitations/{inv}", headers=buyer.auth))["status"] == "pending"
    assert create_onboard(client, buyer, inv)["status"] == "created"


def test_expired_source_invitation_is_410(client, seller, buyer):
    inv = invite(client, buyer, seller.email, kind="source")["invitation_id"]
    expire(inv)
    problem(client.post(f"/invitations/{inv}/accept", headers=seller.auth), 410)
    problem(client.post("/onboards", json={"invitation_id": inv}, headers=buyer.auth), 410)
    assert listed(client, buyer, "/onboards") == []


def test_creating_twice_returns_the_same_onboard(client, seller, buyer):
    inv = invite(client, seller, buyer.email)["invitation_id"]
    first = create_onboard(client, buyer, inv)
    mails = len(outbox("invitation_accepted"))
    again = client.post("/onboards", json={"invitation_id": inv}, headers=buyer.auth)
    assert ok(again, 200) == first
    assert ok(client.post("/onboards", json={"invitation_id": inv.upper()}, headers=buyer.auth), 200) == first
    assert listed(client, buyer, "/onboards") == [first]
    assert len(listed(client, buyer, "/entities")) == 1
    assert len(outbox("invitation_accepted")) == mails


# --- methods -----------------------------------------------------------------------------------

METHOD_NOT_ALLOWED = [
    ("DELETE", "/onboards", "GET, HEAD, OPTIONS, POST"),
    ("PUT", "/onboards", "GET, HEAD, OPTIONS, POST"),
    ("PATCH", f"/onboards/{UNKNOWN}", "GET, HEAD, OPTIONS, PUT"),
    ("DELETE", f"/onboards/{UNKNOWN}", "GET, HEAD, OPTIONS, PUT"),
    ("POST", f"/onboards/{UNKNOWN}", "GET, HEAD, OPTIONS, PUT"),
    ("GET", "/onboard/buyer", "OPTIONS, POST"),
    ("PUT", "/invitations", "GET, HEAD, OPTIONS"),
    ("GET", "/invitations/recipient", "OPTIONS, POST"),  # a literal path wins over /invitations/{id}
    ("GET", "/invitations/source", "OPTIONS, POST"),
    ("PUT", f"/invitations/{UNKNOWN}", "DELETE, GET, HEAD, OPTIONS"),
    ("GET", f"/invitations/{UNKNOWN}/accept", "OPTIONS, POST"),
    ("POST", f"/invitations/{UNKNOWN}/resend", "OPTIONS, PUT"),
    ("POST", "/connections", "GET, HEAD, OPTIONS"),
    ("DELETE", f"/connections/{UNKNOWN}", "GET, HEAD, OPTIONS"),
    ("PUT", "/entities", "GET, HEAD, OPTIONS, POST"),
    ("PATCH", f"/entities/{UNKNOWN}", "DELETE, GET, HEAD, OPTIONS, PUT"),
    ("DELETE", "/flows", "GET, HEAD, OPTIONS, POST"),
    ("PATCH", f"/flows/{UNKNOWN}", "DELETE, GET, HEAD, OPTIONS, PUT"),
    ("POST", "/health", "GET, HEAD, OPTIONS"),
]


@pytest.mark.parametrize(("method", "path", "allow"), METHOD_NOT_ALLOWED,
                         ids=[f"{m} {p.replace(UNKNOWN, '{id}')}" for m, p, _ in METHOD_NOT_ALLOWED])
def test_wrong_method_is_405_with_allow(client, buyer, method, path, allow):
    response = client.request(method, path, headers=buyer.auth)
    problem(response, 405)
    assert set(response.headers["allow"].split(", ")) == set(allow.split(", ")), response.headers


# --- every error is a problem ------------------------------------------------------------------

def create_expired(client: TestClient, buyer: Party, invitation_id: str) -> Response:
    expire(invitation_id)
    return client.post("/onboards", json={"invitation_id": invitation_id}, headers=buyer.auth)


# One request of each kind of failure, from a fresh state with an invitation from the seller to the buyer.
ERROR_CASES: dict[str, tuple[int, Callable[[TestClient, Party, Party, Party, dict], Response]]] = {
    "no credentials": (401, lambda c, s, b, o, e: c.get("/onboards")),
    "revoked-looking key": (401, lambda c, s, b, o, e: c.get("/onboards", headers=basic_auth("f" * 40))),
    "malformed Authorization": (401, lambda c, s, b, o, e: c.get("/onboards", headers={"Authorization": "Basic ?"})),
    "schema violation": (400, lambda c, s, b, o, e: c.post("/onboards", json={"invitationId": 1}, headers=b.auth)),
    "not JSON": (400, lambda c, s, b, o, e: c.post("/onboards", content=b"{", headers=json_headers(b))),
    "not UTF-8": (400, lambda c, s, b, o, e: c.post("/onboards", content=b'"\xff"', headers=json_headers(b))),
    "empty body": (400, lambda c, s, b, o, e: c.post("/onboards", content=b"", headers=json_headers(b))),
    "bad path id": (400, lambda c, s, b, o, e: c.get("/onboards/xyz", headers=b.auth)),
    "unknown query parameter": (400, lambda c, s, b, o, e: c.get("/onboards?x=1", headers=b.auth)),
    "limit too big": (400, lambda c, s, b, o, e: c.get("/onboards?limit=1001", headers=b.auth)),
    "unknown onboard": (404, lambda c, s, b, o, e: c.get(f"/onboards/{UNKNOWN}", headers=b.auth)),
    "foreign invitation": (404, lambda c, s, b, o, e: c.post(
        "/onboards", json={"invitation_id": e["invitation_id"]}, headers=o.auth)),
    "wrong method": (405, lambda c, s, b, o, e: c.delete("/onboards", headers=b.auth)),
    "seller onboards own invitation": (409, lambda c, s, b, o, e: c.post(
        "/onboards", json={"invitation_id": e["invitation_id"]}, headers=s.auth)),
    "invite own address": (409, lambda c, s, b, o, e: c.post(
        "/invitations/recipient", json={"email": s.email}, headers=s.auth)),
    "expired invitation": (410, lambda c, s, b, o, e: create_expired(c, b, e["invitation_id"])),
    "too large": (413, lambda c, s, b, o, e: c.post(
        "/onboards", content=b" " * (2 * 1024 * 1024), headers=json_headers(b))),
    "too large, chunked": (413, lambda c, s, b, o, e: c.post(
        "/onboards", content=chunks(b" " * (2 * 1024 * 1024)), headers=json_headers(b))),
    "text/plain": (415, lambda c, s, b, o, e: c.post(
        "/onboards", content=b"{}", headers={**b.auth, "Content-Type": "text/plain"})),
    "flow entity not found": (404, lambda c, s, b, o, e: c.post(
        "/flows", json={"name": "x", "steps": [{"type": "recipient", "entity": {"id": UNKNOWN}}]}, headers=b.auth)),
}


@pytest.mark.parametrize("case", ERROR_CASES.values(), ids=ERROR_CASES.keys())
def test_every_error_is_a_problem(client, seller, buyer, outsider, case):
    status, send = case
    entity = invite(client, seller, buyer.email)
    response = send(client, seller, buyer, outsider, entity)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].split(";")[0].strip() == PROBLEM
    body = response.json()
    assert body["status"] == response.status_code
    assert body["error"] == body["detail"] and body["detail"]
    assert isinstance(body["type"], str) and isinstance(body["title"], str) and body["title"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    if status == 401:
        assert response.headers["www-authenticate"] == 'Basic realm="onboards"'
    if status == 405:
        assert response.headers["allow"]
    assert listed(client, buyer, "/onboards") == []


# --- problem types -------------------------------------------------------------------------------


def test_each_409_cause_has_a_type_of_its_own_that_the_served_docs_resolve(client, seller, buyer):
    _entity, _flow, onboard = ready_to_complete(client, seller, buyer)
    completed = put_status(client, buyer, onboard, "completed")
    assert completed.status_code == 200, completed.text
    illegal = problem(put_status(client, buyer, completed.json(), "in_progress"), 409)
    again = problem(client.post("/onboard/buyer", json={"connection_id": onboard["connection_id"]},
                                headers=buyer.auth), 409)
    assert illegal["type"] == "/docs/problems#illegal-transition"
    assert again["type"] == "/docs/problems#already-set-up"
    page = client.get("/docs/problems")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for body in (illegal, again):
        assert f'id="{body["type"].partition("#")[2]}"' in page.text


def test_a_bad_id_quotes_the_pattern_as_the_spec_writes_it(client, seller):
    body = problem(client.get(f"/onboards/{UNKNOWN[:23]}g", headers=seller.auth), 400)
    assert "^[0-9a-fA-F]{24}$" in body["detail"] and "\\Z" not in body["detail"]
    assert body["type"] == "/docs/problems#invalid-request"


def test_a_recursive_schema_is_checked_without_recursing_for_ever():
    # connexion's resolved references share parts of a schema, and a schema that names itself is a cycle:
    # each part is ordered once, the cycle kept, and a body is checked as deep as it goes.
    node: dict[str, Any] = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^a$"}}}
    node["properties"]["child"] = node
    found, more = validation.checks(node, Draft4Validator).errors({"child": {"child": {"name": "b"}}})
    assert [list(error.absolute_path) for error in found] == [["child", "child", "name"]] and not more


def parser_depth(text: str) -> int:
    """How deep json's parser nests `text` before it ends or stops on an error: its pure-Python scanner, which
    reads as the C one does, with each array and object counted."""
    decoder: Any = json.JSONDecoder()  # its scanner's parts are attributes typeshed does not declare
    depth = deepest = 0

    def counted(parse: Callable[..., Any]) -> Callable[..., Any]:
        def parse_nested(*args: Any) -> Any:
            nonlocal depth, deepest
            depth += 1
            deepest = max(deepest, depth)
            try:
                return parse(*args)
            finally:
                depth -= 1

        return parse_nested

    decoder.parse_array, decoder.parse_object = counted(decoder.parse_array), counted(decoder.parse_object)
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]  # typeshed lacks it
    with contextlib.suppress(json.JSONDecodeError):
        decoder.decode(text)
    return deepest


# Texts made of JSON's pieces, escapes included, most of them invalid; and valid texts whose strings hold them.
PIECES = st.lists(st.sampled_from(["[", "]", "{", "}", ",", ":", '"', "\\\\", '\\"', "\\", "a", " "]), max_size=40)
STRINGS = st.text(alphabet='[]{}"\\a', max_size=6)
VALUES = st.recursive(STRINGS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(STRINGS, inner, max_size=3),
                      max_leaves=12)


@settings(max_examples=1500, deadline=None)
@given(text=PIECES.map("".join) | VALUES.map(json.dumps))
def test_too_deep_says_what_the_parser_would_nest(text):
    # Never less than the parser nests before it stops; on a text it parses, exactly what it nests.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(validation, "MAX_NESTING", 3)
        found = validation.too_deep(text)
    deeper = parser_depth(text) > 3
    assert found or not deeper
    with contextlib.suppress(json.JSONDecodeError):
        json.loads(text)
        assert found == deeper


@pytest.mark.parametrize(("text", "deep"), [
    ('{"a": ' + "[" * 64 + "]" * 64 + "}", True),
    ("[" * 64 + "]" * 64, False),
    ('["' + "[" * 100 + '"]', False),  # brackets inside a string are text
    ('["\\"' + "[" * 100 + '"]', False),  # an escaped quote does not end the string
    ('["\\\\", ' + "[" * 70, True),  # an escaped backslash does
    ('["' + "[" * 100, False),  # an unterminated string runs to the end
    ("[]]" + "[" * 100, False),  # the parser stops at the bracket that closes nothing
])
def test_too_deep_at_the_limit(text, deep):
    assert validation.too_deep(text) is deep

"""What a client developer meets around the API (issue 29): a spec every generator takes (links, nullable
enums, exclusive variants), write schemas that take what reads give, lists whose cap a client can see,
whose sandbox clock governs each rule, and LeadConduit's members served or listed as differences.
(`make clients` runs the generators themselves: tools/clients.py.)"""

import re
from collections.abc import Iterator
from dataclasses import replace

import pytest
from starlette.testclient import TestClient

from onboards.app import create_app, load_spec
from onboards.config import Settings
from onboards.specs import CHECKOUT
from tests.helpers import basic_auth, migrated, ready_to_complete

SPEC = load_spec()
SCHEMAS = SPEC["components"]["schemas"]
TOKEN = "sandbox-token-for-clocks-0123456789"


def walk(node, path=""):
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{path}/{index}")


def test_every_links_body_is_a_runtime_expression():
    """openapi-generator refuses a link whose requestBody is not a string."""
    bodies = [(path, link["requestBody"]) for path, node in walk(SPEC["paths"]) if path.split("/")[-2:-1] == ["links"]
              for link in [node] if "requestBody" in link]
    assert bodies and all(isinstance(body, str) and body.startswith("$response.body") for _, body in bodies), bodies


def test_a_nullable_enum_is_one_schema_whose_enum_takes_null():
    """One form every generator reads as "this enum or null": `nullable` with `null` among the values, named
    by a title; never a oneOf of the enum and a null schema."""
    assert "NullValue" not in SCHEMAS
    for name in ("EntityConnected", "EntitySource", "EntityRecipient"):
        schema = SCHEMAS[name]
        assert schema["nullable"] is True and schema["enum"][-1] is None and schema["title"] == name
    assert not [path for path, node in walk(SPEC) if "oneOf" in node and any(
        "enum" in option and None in option["enum"] for option in node["oneOf"])]


def test_buyer_setup_request_is_one_of_two_variants_each_with_its_required_member():
    variants = [SCHEMAS[ref["$ref"].rsplit("/", 1)[1]] for ref in SCHEMAS["BuyerSetupRequest"]["oneOf"]]
    assert [v["required"] for v in variants] == [["connection_id"], ["invitation_id"]]
    # Exclusive: a body naming both ids is the first variant only.
    assert "connection_id" not in variants[1]["properties"] and all(v["additionalProperties"] is False
                                                                    for v in variants)


@pytest.mark.parametrize("body", ["connection", "invitation", "both"])
def test_each_buyer_setup_variant_is_accepted(client, seller, buyer, body):
    entity, _, onboard = ready_to_complete(client, seller, buyer)
    ids = {"connection": {"connection_id": onboard["connection_id"]},
           "invitation": {"invitation_id": entity["invitation_id"]},
           "both": {"connection_id": onboard["connection_id"], "invitation_id": entity["invitation_id"]}}[body]
    response = client.post("/onboard/buyer", json=ids, headers=buyer.auth)
    assert response.status_code == 200, response.text


def write_schema_types(schema: dict) -> list[str]:
    """Where a write schema's read-only member is typed looser than what the read gives."""
    return [path for path, node in walk(schema) if str(node.get("description")).startswith("Read-only")
            and node.get("type") == "array" and node.get("items") == {"type": "object"}]


def test_write_schemas_type_what_reads_give():
    for name in ("EntityWrite", "AccountWrite", "FlowWrite", "OnboardUpdate", "UserSettingsWrite"):
        schema = SCHEMAS[name]
        assert write_schema_types(schema) == [], name
        # A default makes some generators require the member.
        assert not [path for path, node in walk(schema) if "default" in node and "/properties/" in path], name
        stamps = [node for path, node in walk(schema) if path.endswith(("/created_at", "/updated_at"))
                  and "/properties/" in path]
        assert stamps and all(node.get("format") == "date-time" for node in stamps), name


def test_what_each_get_gives_each_put_takes(client, seller, buyer):
    entity, seller_flow, onboard = ready_to_complete(client, seller, buyer)
    user_id = client.get("/user", headers=buyer.auth).json()["id"]
    for party, path in ((buyer, f"/onboards/{onboard['id']}"), (seller, f"/flows/{seller_flow['id']}"),
                        (seller, f"/entities/{entity['id']}"), (buyer, "/account"),
                        (buyer, f"/user_settings/{user_id}")):
        got = client.get(path, headers=party.auth)
        put = client.put(path, json=got.json(), headers={**party.auth, "If-Match": got.headers["etag"]})
        assert put.status_code == 200 and put.json()["id"] == got.json()["id"], (path, put.text)


def test_a_list_says_its_total_and_is_capped_at_limit_as_the_spec_says(client, buyer):
    for n in range(105):
        client.post("/entities", json={"name": f"entity {n}"}, headers=buyer.auth)
    total = 105  # a new account has no entity of its own
    response = client.get("/entities", headers=buyer.auth)
    assert len(response.json()) == 100 and response.headers["x-total-count"] == str(total)
    assert 'rel="next"' in response.headers["link"]
    assert len(client.get("/entities?limit=1000", headers=buyer.auth).json()) == total
    for path in ("/onboards", "/invitations", "/connections", "/entities", "/flows"):
        operation = SPEC["paths"][path]["get"]
        assert "X-Total-Count" in operation["responses"]["200"]["headers"], path
        assert "Difference from LeadConduit" in operation["description"], path


@pytest.fixture
def clocked(settings: Settings) -> Iterator[TestClient]:
    """Sandbox mode with the default resend cooldown (the other tests relax it)."""
    app = migrated(create_app(replace(settings, sandbox=True, sandbox_token=TOKEN, resend_cooldown_seconds=300),
                              send_outbox=False))
    with TestClient(app) as test_client:
        yield test_client


def sandbox_party(client: TestClient, name: str) -> dict:
    made = client.post("/sandbox/accounts", json={"name": name, "email": f"{name.lower()}@example.com"},
                       headers={"X-Sandbox-Token": TOKEN})
    assert made.status_code == 201, made.text
    return {**made.json(), "auth": basic_auth(made.json()["api_key"])}


def advance(client: TestClient, party: dict, seconds: int) -> None:
    moved = client.post(f"/sandbox/accounts/{party['account_id']}/clock", json={"seconds": seconds},
                        headers={"X-Sandbox-Token": TOKEN})
    assert moved.status_code == 200


def test_the_inviters_clock_governs_an_invitations_expiry_and_resend_cooldown_not_the_invitees(clocked):
    seller, buyer = sandbox_party(clocked, "Seller"), sandbox_party(clocked, "Buyer")
    entity = clocked.post("/invitations/recipient", json={"email": buyer["email"]}, headers=seller["auth"]).json()
    resend = f"/invitations/{entity['entity']['id']}/resend"
    advance(clocked, buyer, 8 * 86400)
    assert clocked.put(resend, headers=seller["auth"]).status_code == 429  # the cooldown: the inviter's clock
    advance(clocked, seller, 600)
    assert clocked.put(resend, headers=seller["auth"]).status_code == 200
    invitation = {"invitation_id": entity["entity"]["invitation_id"]}
    onboard = clocked.post("/onboards", json=invitation, headers=buyer["auth"])
    assert onboard.status_code == 201  # eight days on the invitee's clock expire nothing
    late = sandbox_party(clocked, "Late")
    old = clocked.post("/invitations/recipient", json={"email": late["email"]}, headers=seller["auth"]).json()
    advance(clocked, seller, 8 * 86400)
    gone = clocked.post("/onboards", json={"invitation_id": old["entity"]["invitation_id"]}, headers=late["auth"])
    assert gone.status_code == 410  # eight days on the inviter's clock do


def test_the_docs_say_whose_clock_governs_each_rule():
    text = (CHECKOUT / "docs" / "differences.md").read_text() + (CHECKOUT / "README.md").read_text()
    for rule in ("expiry", "cooldown", "rate limits", "timestamps"):
        assert re.search(rf"{rule}[^\n]*clock", text, re.IGNORECASE), rule


def test_extensions_of_the_onboard_are_marked():
    assert SCHEMAS["Onboard"]["properties"]["reason"].get("x-extension") is True
    assert SCHEMAS["OnboardStatus"].get("x-extension") is True


REFERENCE_MEMBERS = {
    "account": ["type", "state", "features", "subscriptions", "data_retention_in_days", "api_key", "billing_type",
                "financial_state", "lead_ping_enabled", "product_id", "pricing_components"],
    "user": ["first_name", "last_name", "superuser", "user_admin", "role_string", "phone", "permissions",
             "products", "api_key", "membership", "company_name"],
    "flow": ["caps", "acceptance_criteria", "pricing", "destinations", "ping_enabled", "firehose", "errors"],
    "step": ["notes", "rule_set", "feedback", "retry_enabled"],
    "source": ["acceptance_criteria", "credential_id", "authentication_required", "feedback"],
}


def test_every_leadconduit_member_not_served_is_listed_as_a_difference():
    differences = (CHECKOUT / "docs" / "differences.md").read_text()
    missing = [f"{kind}.{member}" for kind, members in REFERENCE_MEMBERS.items() for member in members
               if f"`{member}`" not in differences]
    assert missing == []
    assert "docs/differences.md" in (CHECKOUT / "README.md").read_text()

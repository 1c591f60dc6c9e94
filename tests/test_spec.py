"""openapi.yaml itself: valid, its examples valid, and the seed page's examples accepted."""

import re
from typing import Any

import pytest
from jsonschema import Draft4Validator
from openapi_spec_validator import validate

from models.accounts import EMAIL
from onboards import problems
from onboards.app import SPEC as SPEC_PATH
from onboards.app import load_spec, problem_types
from onboards.sandbox import load_spec as load_sandbox_spec
from onboards.validation import MAX_CONTAINERS

SPEC = load_spec()
SPEC_TEXT = SPEC_PATH.read_text()
SANDBOX_TEXT = (SPEC_PATH.parent / "sandbox.yaml").read_text()

# The request and response of the page this project started from (LeadConduit's "Create a new onboard").
SEED_REQUEST = {"invitation_id": "64b8f0f5e4b0c3a1d5e6f7a8"}
SEED_RESPONSE = {
    "invitation_id": "64b8f0f5e4b0c3a1d5e6f7a9", "id": "5fd4371e940df5a34a3888b2",
    "account_id": "64b8f0f5e4b0c3a1d5e6f7a8", "connection_id": "64b8f0f5e4b0c3a1d5e6f7aa",
    "flow_id": "64b8f0f5e4b0c3a1d5e6f7ab", "status": "created",
    "created_at": "2023-11-07T05:31:56Z", "updated_at": "2023-11-07T05:31:56Z",
}


def resolve(node: Any) -> Any:
    """The schema with every local $ref replaced by its target, and OpenAPI's `nullable` in JSON Schema terms."""
    if isinstance(node, dict):
        if "$ref" in node:
            target: Any = SPEC
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            return resolve(target)
        resolved = {k: resolve(v) for k, v in node.items() if k not in ("example", "nullable")}
        if node.get("nullable") and "type" in node:
            resolved["type"] = [node["type"], "null"]
        if node.get("nullable") and "enum" in node:  # OpenAPI 3.0: a nullable enum admits null too
            resolved["enum"] = [*node["enum"], None]
        return resolved
    if isinstance(node, list):
        return [resolve(item) for item in node]
    return node


def schema_of(name: str) -> dict:
    return resolve({"$ref": f"#/components/schemas/{name}"})


def examples() -> list[tuple[str, Any, dict]]:
    """Every media-type example in the spec, with the schema it illustrates."""
    found = []
    for path, item in SPEC["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            bodies = [("request", operation.get("requestBody", {}))]
            bodies += [(status, response) for status, response in operation["responses"].items()]
            for where, body in bodies:
                if "$ref" in body:
                    body = SPEC["components"]["responses"][body["$ref"].rsplit("/", 1)[1]]
                for media in body.get("content", {}).values():
                    if "example" in media:
                        found.append((f"{method.upper()} {path} {where}", media["example"], resolve(media["schema"])))
    for name, schema in SPEC["components"]["schemas"].items():
        if "example" in schema and schema.get("type") == "object":
            found.append((f"schema {name}", schema["example"], schema_of(name)))
    return found


def test_spec_is_valid_openapi_3_0() -> None:
    assert SPEC["openapi"] == "3.0.3"
    validate(SPEC)


@pytest.mark.parametrize(("where", "example", "schema"), examples(), ids=[e[0] for e in examples()])
def test_every_example_matches_its_schema(where: str, example: Any, schema: dict) -> None:
    errors = [e.message for e in Draft4Validator(schema, format_checker=Draft4Validator.FORMAT_CHECKER)
              .iter_errors(example)]
    assert errors == []


def test_seed_examples_validate() -> None:
    assert list(Draft4Validator(schema_of("OnboardCreate")).iter_errors(SEED_REQUEST)) == []
    assert list(Draft4Validator(schema_of("Onboard")).iter_errors(SEED_RESPONSE)) == []


def test_every_operation_has_a_camel_case_id_and_a_handler_module() -> None:
    for item in SPEC["paths"].values():
        for method, operation in item.items():
            if method != "parameters":
                assert re.fullmatch("[a-z]+(?:[A-Z][a-z]+)*", operation["operationId"]), operation["operationId"]
                assert operation["x-openapi-router-controller"].startswith("handlers."), operation["operationId"]


def test_leadconduits_own_operation_ids_are_kept() -> None:
    ids = {op["operationId"] for item in SPEC["paths"].values() for m, op in item.items() if m != "parameters"}
    assert {"createInvitationRecipient", "createInvitationSource"} <= ids


def test_seed_request_sent_as_is_passes_validation(client, buyer) -> None:
    response = client.post("/onboards", json=SEED_REQUEST, headers=buyer.auth)
    # Accepted by validation: the invitation simply does not exist in this database.
    assert response.status_code == 404
    assert response.json()["detail"] == "invitation not found"


def test_the_address_rules_are_the_models_own():
    pattern = load_spec()["components"]["schemas"]["InvitationRequest"]["properties"]["email"]["pattern"]
    sandbox = load_sandbox_spec()["components"]["schemas"]["SandboxAccountRequest"]["properties"]["email"]["pattern"]
    assert pattern == sandbox == f"^{EMAIL.pattern}$"


def containers(schema: dict) -> int:
    """The most arrays and objects a value of `schema` can hold, itself included."""
    schema = resolve(schema)
    if schema.get("type") == "array":
        return 1 + schema["maxItems"] * containers(schema["items"])
    if schema.get("type") == "object":
        return 1 + sum(containers(member) for member in schema.get("properties", {}).values())
    alternatives = schema.get("oneOf") or schema.get("anyOf") or schema.get("allOf")
    return max(map(containers, alternatives)) if alternatives else 0


def test_every_body_the_spec_admits_holds_fewer_containers_than_the_parser_reads():
    bodies = [operation["requestBody"]["content"]["application/json"]["schema"]
              for item in SPEC["paths"].values() for operation in item.values()
              if isinstance(operation, dict) and "requestBody" in operation]
    largest = max(map(containers, bodies))
    assert 20_000 < largest <= MAX_CONTAINERS


def test_every_problem_type_is_listed_in_the_spec_with_its_status_and_none_else():
    listed = {name: status for name, status, _meaning in problem_types(SPEC)}
    answered = {name: status for status, name in problems.TYPES.values()}
    answered |= {name: status for status, name in problems.BY_STATUS.items()}
    answered |= {problems.CONCURRENT_CHANGE: 409, problems.UNSTORABLE: 400, problems.BUSY: 503,
                 problems.PER_CLIENT: 429, problems.BODY_MEMORY: 503}
    assert set(answered) == problems.all_types()
    assert listed == answered
    examples = re.findall(r"type: /docs/problems#([a-z-]+)", SPEC_TEXT + SANDBOX_TEXT)
    assert examples and set(examples) <= set(listed)


def test_the_served_documents_carry_nothing_of_the_implementation(client, sandbox_client):
    for http, prefix in ((client, ""), (sandbox_client, ""), (sandbox_client, "/sandbox")):
        for kind in ("json", "yaml"):
            text = http.get(f"{prefix}/openapi.{kind}").text
            assert "x-openapi-router-controller" not in text and "handlers." not in text
    assert "x-openapi-router-controller" in SPEC_TEXT  # what connexion routes by, in the file only

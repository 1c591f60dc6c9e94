"""schemathesis fuzzes every operation in-process against openapi.yaml, with response validation on."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig


@pytest.fixture
def api_schema(app, seller):
    # Auth through schemathesis's own config, so that its negative cases can leave it out. A generated body over
    # MAX_BODY_BYTES gets the documented 413 before it is parsed: accepted as schemathesis.toml explains.
    config = SchemathesisConfig.from_dict({
        "auth": {"basic": {"username": "API", "password": seller.key}},
        "checks": {"negative_data_rejection": {"expected-statuses": [
            "400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429", "5xx"]}},
        # A generated If-Match names no current ETag: the documented 412 (schemathesis.toml says why).
        "operations": [{"include-operation-id": ["updateAccount", "updateUserSettings", "resendInvitation"],
                        "checks": {"positive_data_acceptance": {"expected-statuses": [
                            "2xx", "3xx", "401", "403", "404", "409", "412", "429", "5xx"]}}},
                       # A generated Idempotency-Key used again with another body: the documented 422 (likewise).
                       {"include-operation-id": [
                           "createOnboard", "completeBuyerSetup", "createInvitationRecipient", "createInvitationSource",
                           "acceptInvitation", "declineInvitation", "createEntity", "createFlow", "createUserSettings"],
                        "checks": {"positive_data_acceptance": {"expected-statuses": [
                            "2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]}}}]})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


# The suite runs a fixed set of cases, the same every run; for a deeper, random exploration:
# SCHEMATHESIS_EXAMPLES=500 SCHEMATHESIS_EXPLORE=1 make unit PYTEST_ARGS=tests/test_schemathesis.py
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "40"))
EXPLORE = os.environ.get("SCHEMATHESIS_EXPLORE") == "1"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=not EXPLORE)
def test_every_operation_conforms(case) -> None:
    case.call_and_validate()

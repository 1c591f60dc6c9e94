"""schemathesis fuzzes every operation in-process against openapi.yaml, with response validation on."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig


@pytest.fixture
def api_schema(app, seller):
    # Auth through schemathesis's own config, so that its negative cases can leave it out.
    config = SchemathesisConfig.from_dict({"auth": {"basic": {"username": "API", "password": seller.key}}})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "40"))  # e.g. 500 for a deeper run than the suite's


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case) -> None:
    case.call_and_validate()

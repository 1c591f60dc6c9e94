"""schemathesis fuzzes every operation in-process against openapi.yaml, with response validation on."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from tests.conftest import Party


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_conforms(case, seller: Party) -> None:
    case.call_and_validate(headers=seller.auth)

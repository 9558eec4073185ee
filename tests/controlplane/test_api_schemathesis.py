"""Schemathesis against /api/schema/ with a tenant's key, over real HTTP: no 5xx, and
every response's status, content type and body as the schema documents them. Each
operation gets a few Hypothesis examples (max_examples below), so the whole suite stays
within a CI minute or two."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from tests import suites
from tests.execution.bundles import agent_with_bundle

pytestmark = pytest.mark.django_db(transaction=True)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES_PER_OPERATION = 8


def test_it_answers_every_operation_as_documented(live_server, acme, make_key, settings):
    settings.AUTH_FAILURES_PER_ADDRESS = 10**6  # generated requests must not lock the key out
    agent_with_bundle(acme, name="echo", code="def main(ctx, input):\n    return input\n")
    headers = {"Authorization": f"Bearer {make_key(acme, 'admin')}"}
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) > 30 and any(op.path == "/v1/traces" for op in operations)
    failures = []
    for operation in operations:

        @examples(
            max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
            database=None, suppress_health_check=list(HealthCheck),
        )  # fmt: skip
        @given(case=operation.as_strategy())
        def check(case):
            response = case.call(base_url=live_server.url, headers=headers, timeout=30)
            suites.seen("schemathesis", response.status_code)
            case.validate_response(response, checks=CHECKS)

        try:
            check()
        except Exception as exc:  # noqa: BLE001 - collect every operation's failure
            failures.append(f"{operation.label}: {str(exc)[:1500]}")
    assert failures == [], "\n\n".join(failures)

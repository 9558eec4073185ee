"""Every URL pattern of the API and the UI, probed with every method by acme for
globex's objects: each answer is what a missing object gets (404, or 405 for a method the
view has not), and never globex's data. A pattern added without an entry here, in
OBJECTS or EXEMPT, fails test_it_covers_every_url_pattern."""

import json

import pytest
from django.urls import URLResolver, get_resolver

from alerts.models import Alert, AlertRule, WebhookEndpoint
from controlplane import services as controlplane_services
from controlplane.models import Membership
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services as execution_services
from tests import suites
from tests.execution.bundles import agent_with_bundle
from tracing.ingest.decode import decode_request
from tracing.ingest.pipeline import spans_ingest
from tracing.retention.models import ErasureRequest, LegalHold

METHODS = ("get", "post", "put", "patch", "delete")
SECRET = "globex-secret-name"

# Patterns whose placeholders name an object: each is probed with globex's.
OBJECTS = {
    "api/v1/api-keys/<int:key_id>/revoke",
    "api/v1/agents/<str:agent_ref>/versions",
    "api/v1/runs/<int:run_id>",
    "api/v1/runs/<int:run_id>/cancel",
    "api/v1/runs/<int:run_id>/steps",
    "api/v1/runs/<int:run_id>/cost",
    "api/v1/runs/<int:run_id>/events",
    "api/v1/runs/<int:run_id>/reconcile",
    "api/v1/runs/<int:run_id>/replay",
    "api/v1/runs/<int:run_id>/fork",
    "api/v1/runs/<int:run_id>/lineage",
    "api/v1/playground/<str:span_id>",
    "api/v1/traces/<str:trace_id>",
    "api/v1/traces/<str:trace_id>/mark",
    "api/v1/spans/<str:span_id>",
    "api/v1/sessions/<path:session_id>",
    "api/v1/sessions/<path:session_id>/messages",
    "api/v1/budgets/<int:budget_id>",
    "api/v1/legal-holds/<int:hold_id>",
    "api/v1/erasure-requests/<int:request_id>",
    "api/v1/alert-rules/<int:rule_id>",
    "api/v1/alerts/<int:alert_id>/acknowledge",
    "api/v1/alerts/<int:alert_id>/resolve",
    "api/v1/alerts/<int:alert_id>/deliveries",
    "api/v1/webhook-endpoints/<int:endpoint_id>",
    "api/v1/webhook-endpoints/<int:endpoint_id>/test",
    "api/v1/webhook-endpoints/<int:endpoint_id>/deliveries",
    "t/<slug:tenant_slug>/traces/<str:trace_id>/",
    "t/<slug:tenant_slug>/traces/<str:trace_id>/mark",
    "t/<slug:tenant_slug>/traces/<str:trace_id>/spans/<str:span_id>",
    "t/<slug:tenant_slug>/traces/<str:trace_id>/spans/<str:span_id>/playground",
    "t/<slug:tenant_slug>/sessions/<path:session_id>/",
    "t/<slug:tenant_slug>/runs/<int:run_id>/",
    "t/<slug:tenant_slug>/runs/<int:run_id>/cancel",
    "t/<slug:tenant_slug>/agents/<int:agent_id>/",
    "t/<slug:tenant_slug>/agents/<int:agent_id>/versions",
    "t/<slug:tenant_slug>/settings/members/<int:membership_id>/role",
    "t/<slug:tenant_slug>/settings/members/<int:membership_id>/remove",
    "t/<slug:tenant_slug>/settings/keys/<int:key_id>/revoke",
    "t/<slug:tenant_slug>/alerts/<int:alert_id>/acknowledge",
    "t/<slug:tenant_slug>/alerts/<int:alert_id>/resolve",
    "t/<slug:tenant_slug>/settings/alert-rules/<int:rule_id>/",
    "t/<slug:tenant_slug>/settings/alert-rules/<int:rule_id>/delete",
    "t/<slug:tenant_slug>/settings/webhook-endpoints/<int:endpoint_id>/",
    "t/<slug:tenant_slug>/settings/webhook-endpoints/<int:endpoint_id>/test",
    "t/<slug:tenant_slug>/settings/webhook-endpoints/<int:endpoint_id>/delete",
}
# Every UI pattern under /t/<slug>/ is also probed with globex's slug (acme's user is
# not a member): the tenant is the object.
UI_TENANT = "t/<slug:tenant_slug>/"

EXEMPT = {
    "api/v1/health": "no tenant: the platform's own health",
    "api/schema/": "no tenant: the OpenAPI document",
    "api/docs/": "no tenant: Swagger UI",
    "^(?:api|v1)/": "the JSON 404 for unknown paths",
    "v1/traces": "OTLP ingest: writes into the key's own tenant only",
    "v1/logs": "OTLP ingest: writes into the key's own tenant only",
    "v1/metrics": "OTLP ingest: writes into the key's own tenant only",
    "": "home: redirects to the user's own tenant",
    "login/": "no tenant yet",
    "logout/": "no tenant",
    "api/v1/tenant": "the caller's own tenant; no id in the path",
    "api/v1/api-keys": "collection of the caller's tenant; no id in the path",
    "api/v1/audit": "collection of the caller's tenant; no id in the path",
    "api/v1/agents": "collection of the caller's tenant; no id in the path",
    "api/v1/runs": "collection of the caller's tenant; no id in the path",
    "api/v1/tools": "collection of the caller's tenant; no id in the path",
    "api/v1/credentials": "collection of the caller's tenant; no id in the path",
    "api/v1/allowed-hosts": "collection of the caller's tenant; no id in the path",
    "api/v1/redaction-policy": "the caller's tenant's policy; no id in the path",
    "api/v1/traces": "search within the caller's tenant; no id in the path",
    "api/v1/sessions": "collection of the caller's tenant; no id in the path",
    "api/v1/prices": "the platform's price book with the caller's tenant's own prices in "
    "place; no id in the path (tests/retention/test_storage_prices.py: one tenant's "
    "storage prices are neither shown to nor charged to another)",
    "api/v1/budgets": "collection of the caller's tenant; no id in the path",
    "api/v1/playground": "runs a call from a span named in the body; another tenant's: "
    "404 (tests/replay/test_playground_api.py)",
    "api/v1/budgets/check": "checks the caller's tenant's budgets; no id in the path",
    "api/v1/budgets/settings": "the caller's tenant's budget settings; no id in the path",
    "api/v1/usage": "the caller's tenant's usage; no id in the path",
    "api/v1/metrics": "the caller's tenant's metric series; no id in the path "
    "(tests/tracing/test_metrics_api.py: another tenant's points are not read)",
    "api/v1/statements/<str:month>": "a month of the caller's own tenant, not an object",
    "api/v1/alert-rules": "collection of the caller's tenant; no id in the path",
    "api/v1/alerts": "collection of the caller's tenant; no id in the path",
    "api/v1/webhook-endpoints": "collection of the caller's tenant; no id in the path",
    "api/v1/retention": "the caller's tenant's policy; no id in the path",
    "api/v1/storage": "the caller's tenant's bytes and cost per tier; no id in the path "
    "(tests/retention/test_storage_prices.py: priced at the caller's own prices only)",
    "api/v1/legal-holds": "collection of the caller's tenant; no id in the path",
    "api/v1/erasure-requests": "collection of the caller's tenant; no id in the path",
}


def url_patterns(patterns=None, prefix=""):
    for p in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(p, URLResolver):
            if str(p.pattern) == "admin/":
                continue  # Django's admin: staff only, across tenants by design
            yield from url_patterns(p.url_patterns, prefix + str(p.pattern))
        else:
            yield prefix + str(p.pattern)


def test_it_covers_every_url_pattern():
    patterns = set(url_patterns())
    ui = {p for p in patterns if p.startswith(UI_TENANT)}
    covered = OBJECTS | set(EXEMPT) | ui
    assert patterns - covered == set(), "add the new pattern to OBJECTS or EXEMPT"
    assert (OBJECTS | set(EXEMPT)) - patterns == set(), "stale entries"


@pytest.fixture
def globex_objects(globex):
    """One of each kind of object, globex's."""
    agent = agent_with_bundle(
        globex, name="globex-agent", code="def main(ctx, input):\n    return 1\n"
    )
    key, _ = controlplane_services.api_key_create(tenant=globex, name=SECRET, scopes=["read"])
    doc = {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": "5b8efff798038103d269b633813fc60c", "spanId": "eee19b7ec3c1b174",
        "name": SECRET, "startTimeUnixNano": "1700000000000000000",
        "endTimeUnixNano": "1700000001000000000",
        "attributes": [{"key": "gen_ai.conversation.id", "value": {"stringValue": "globex-conv"}}],
    }]}]}]}  # fmt: skip
    spans_ingest(
        tenant_id=globex.id, request=decode_request(json.dumps(doc).encode(), "application/json")
    )
    from billing.models import Budget

    with tenant_scope(globex):
        run = execution_services.run_create(
            tenant=globex, agent=agent, version=None, input=None, limits=None, actor=Actor.system()
        )
        budget = Budget.objects.create(tenant=globex, scope="tenant", cap_nusd=10**9)
        endpoint = WebhookEndpoint.objects.create(
            tenant=globex, url=f"https://{SECRET}.example/", secret="whsec_" + SECRET
        )
        rule = AlertRule.objects.create(tenant=globex, detector="loop", agent=SECRET)
        alert = Alert.objects.create(
            tenant=globex, rule=rule, detector="loop", cause=SECRET, summary=SECRET
        )
        hold = LegalHold.objects.create(tenant=globex, scope="session", value=SECRET)
        erasure = ErasureRequest.objects.create(tenant=globex, session_id=SECRET)
    return {
        "hold_id": hold.id, "request_id": erasure.id,
        "agent_id": agent.id, "agent_ref": agent.name, "run_id": run.id, "other_id": run.id, "key_id": key.id, "budget_id": budget.id,
        "rule_id": rule.id, "alert_id": alert.id, "endpoint_id": endpoint.id,
        "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174",
        "session_id": "globex-conv",
        "membership_id": Membership.objects.unscoped().get(tenant=globex).id,
    }  # fmt: skip


MISSING = {
    "hold_id": 987654321, "request_id": 987654321,
    "agent_id": 987654321, "agent_ref": "no-such-agent", "run_id": 987654321, "other_id": 987654321, "key_id": 987654321, "budget_id": 987654321,
    "rule_id": 987654321, "alert_id": 987654321, "endpoint_id": 987654321,
    "trace_id": "f" * 32, "span_id": "e" * 16, "session_id": "no-such-session",
    "membership_id": 987654321,
}  # fmt: skip


def fill(pattern: str, values: dict, slug: str) -> str:
    path = "/" + pattern
    for name, value in {**values, "tenant_slug": slug}.items():
        for converter in ("int", "str", "path", "slug"):
            path = path.replace(f"<{converter}:{name}>", str(value))
    assert "<" not in path, path
    return path


def probe(client, method: str, path: str, headers: dict):
    response = getattr(client, method)(path, **headers)
    suites.seen("cross-tenant matrix", response.status_code)
    return response


def test_it_answers_acme_for_globex_objects_as_for_missing_ones(
    client, acme, globex, globex_objects, make_key
):
    api = {"HTTP_AUTHORIZATION": f"Bearer {make_key(acme, 'admin')}"}
    client.force_login(acme.owner)
    failures = []
    ui_patterns = sorted(p for p in url_patterns() if p.startswith(UI_TENANT))
    cases = [(p, "acme") for p in sorted(OBJECTS)] + [(p, "globex") for p in ui_patterns]
    for pattern, slug in cases:
        headers = {} if pattern.startswith("t/") else api
        theirs = fill(pattern, globex_objects, slug)
        missing = fill(pattern, MISSING, "no-such-tenant" if slug == "globex" else slug)
        for method in METHODS:
            got = probe(client, method, theirs, headers)
            baseline = probe(client, method, missing, headers)
            if (
                got.status_code not in (404, 405)
                or got.status_code != baseline.status_code
                or SECRET.encode() in got.content
            ):
                failures.append(
                    f"{method.upper()} {theirs}: {got.status_code}, missing: {baseline.status_code}"
                )
    assert failures == []

import json

import httpx
import pytest

from controlplane.tenancy import tenant_scope
from tests.tracing.test_otlp_http import one_span_request
from tracing import selectors
from tracing.models import Span

pytestmark = pytest.mark.django_db(transaction=True)


def send(live_server, key, span_id, **attrs):
    body = one_span_request("5b8efff798038103d269b633813fc60c", span_id, **attrs)
    resp = httpx.post(
        f"{live_server.url}/v1/traces", json=body, headers={"Authorization": f"Bearer {key}"}
    )
    assert resp.status_code == 200, resp.text


def test_it_applies_the_tenants_rules_to_later_spans(api, live_server, acme, globex, make_key):
    admin, ingest = make_key(acme, "admin"), make_key(acme, "ingest")
    long_note = "Employee EMP-004211 asked about jane@example.com. " + "context " * 60
    send(
        live_server,
        ingest,
        "0000000000000001",
        note=long_note,
        secret="s3cret",
        raw="a@b.co and more",
    )

    policy = {
        "custom_patterns": [{"name": "employee", "pattern": r"EMP-\d{6}"}],
        "drop_keys": ["secret"],
        "never_scan_keys": ["raw"],
    }
    resp = api.request("PUT", "/api/v1/redaction-policy", key=admin, json=policy)
    assert resp.status_code == 200 and resp.json()["version"] == 1
    assert api.get("/api/v1/redaction-policy", key=admin).json()["custom_patterns"] == [
        {"name": "EMPLOYEE", "pattern": r"EMP-\d{6}"}
    ]
    send(
        live_server,
        ingest,
        "0000000000000002",
        note=long_note,
        secret="s3cret",
        raw="a@b.co and more",
    )

    with tenant_scope(acme):
        before = selectors.span_detail(span=Span.objects.get(span_id=1))
        after = selectors.span_detail(span=Span.objects.get(span_id=2))
    # The same long note seen before the change is scanned again under the new rules.
    assert (
        "EMP-004211" in before["attributes"]["note"] and "[EMAIL:" in before["attributes"]["note"]
    )
    assert "[EMPLOYEE:" in after["attributes"]["note"] and "[EMAIL:" in after["attributes"]["note"]
    assert before["attributes"]["secret"] == "s3cret" and "secret" not in after["attributes"]
    assert after["attributes"]["raw"] == "a@b.co and more"
    assert after["redactions"] == {"EMPLOYEE": 1, "EMAIL": 1}

    # Another tenant is untouched by acme's rules.
    assert api.get("/api/v1/redaction-policy", key=make_key(globex, "admin")).json()["version"] == 0


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        (
            {
                "custom_patterns": [{"name": "x", "pattern": "("}],
                "drop_keys": [],
                "never_scan_keys": [],
            },
            "does not compile",
        ),
        (
            {
                "custom_patterns": [{"name": "x", "pattern": "a*"}],
                "drop_keys": [],
                "never_scan_keys": [],
            },
            "empty string",
        ),
        (
            # Python's re takes a lookahead; RE2, which ingest runs, does not.
            {
                "custom_patterns": [{"name": "x", "pattern": "EMP(?=-)"}],
                "drop_keys": [],
                "never_scan_keys": [],
            },
            "does not compile: invalid perl operator",
        ),
        (
            {
                "custom_patterns": [{"name": "1x", "pattern": "a"}],
                "drop_keys": [],
                "never_scan_keys": [],
            },
            "must be a word",
        ),
    ],
)
def test_it_refuses_a_bad_rule_and_keeps_the_old_ones(api, acme, make_key, policy, message):
    resp = api.request("PUT", "/api/v1/redaction-policy", key=make_key(acme, "admin"), json=policy)
    assert resp.status_code == 400
    assert message in json.dumps(resp.json())
    assert api.get("/api/v1/redaction-policy", key=make_key(acme, "admin")).json()["version"] == 0


def test_it_needs_the_admin_scope(api, acme, make_key):
    assert api.get("/api/v1/redaction-policy", key=make_key(acme, "read")).status_code == 403


INFRASTRUCTURE = {
    "server.address": "10.20.30.40",
    "server.port": "8443",
    "net.peer.name": "203.0.113.7",
    "network.peer.address": "2001:db8::17",
    "url.full": "https://ops:hunter2secret@10.20.30.40:8443/v1/messages?notify=jane@example.com",
    "client.address": "198.51.100.23",  # the caller's address: personal data
}


def test_it_leaves_infrastructure_attributes_alone_unless_the_tenant_asks(
    api, live_server, acme, make_key
):
    admin, ingest = make_key(acme, "admin"), make_key(acme, "ingest")
    send(live_server, ingest, "0000000000000011", **INFRASTRUCTURE)
    policy = {"custom_patterns": [], "drop_keys": [], "never_scan_keys": []}
    turned_on = api.request(
        "PUT", "/api/v1/redaction-policy", key=admin, json={**policy, "scan_infrastructure": True}
    )
    assert turned_on.status_code == 200 and turned_on.json()["scan_infrastructure"] is True
    send(live_server, ingest, "0000000000000012", **INFRASTRUCTURE)

    with tenant_scope(acme):
        default = selectors.span_detail(span=Span.objects.get(span_id=0x11))["attributes"]
        scanned = selectors.span_detail(span=Span.objects.get(span_id=0x12))["attributes"]
    assert default["server.address"] == "10.20.30.40"
    assert default["net.peer.name"] == "203.0.113.7"
    assert default["network.peer.address"] == "2001:db8::17"
    url = default["url.full"]
    assert url.startswith("https://ops:[PASSWORD:") and "@10.20.30.40:8443/v1/messages?" in url
    assert "notify=[EMAIL:" in url and "jane@example.com" not in url
    assert default["client.address"].startswith("[IP:")
    for key in ("server.address", "net.peer.name", "network.peer.address", "client.address"):
        assert scanned[key].startswith("[IP:"), key
    assert "10.20.30.40" not in scanned["url.full"]

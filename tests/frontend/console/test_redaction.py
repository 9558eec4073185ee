"""Settings › Redaction: the tenant's rules, edited in a form, and the "test this text" box."""

import re

from controlplane.models import AuditEvent
from tracing.models import RedactionPolicy

URL = "/t/acme/settings/redaction/"
HX = {"HTTP_HX_REQUEST": "true"}
RULES = {
    "custom_patterns": "EMPLOYEE_ID = EMP-\\d{6}\n\nTICKET = T#[0-9]{4}",
    "drop_keys": "user.secret\n",
    "never_scan_keys": "build.sha",
}


def test_it_saves_rules_through_the_service_and_audits_them(client, acme):
    client.force_login(acme.owner)
    resp = client.post(URL, RULES, follow=True)
    assert "Saved as version 1" in resp.content.decode()
    policy = RedactionPolicy.all_tenants.get(tenant=acme)
    assert policy.custom_patterns == [
        {"name": "EMPLOYEE_ID", "pattern": "EMP-\\d{6}"},
        {"name": "TICKET", "pattern": "T#[0-9]{4}"},
    ]
    assert policy.drop_keys == ["user.secret"] and policy.never_scan_keys == ["build.sha"]
    event = AuditEvent.all_tenants.get(tenant=acme, action="redaction_policy.update")
    assert event.actor_user == acme.owner and event.data["patterns"] == ["EMPLOYEE_ID", "TICKET"]
    html = client.get(URL).content.decode()
    assert "EMPLOYEE_ID = EMP-\\d{6}\nTICKET = T#[0-9]{4}</textarea>" in html


def test_it_shows_what_the_saved_rules_would_redact(client, acme, acme_viewer):
    client.force_login(acme.owner)
    client.post(URL, RULES)
    client.force_login(acme_viewer)  # trying a text is a read: viewers may
    text = "EMP-004211 wrote from ann@example.com about T#1234"
    resp = client.post(f"{URL}test", {"text": text}, **HX)
    html = resp.content.decode()
    assert resp.status_code == 200 and "<html" not in html
    stored = html.split('<pre class="code">')[1].split("</pre>")[0]
    assert "EMP-004211" not in stored and "ann@example.com" not in stored and "T#1234" not in stored
    assert 'title="EMPLOYEE_ID redacted before storage"' in stored
    for kind in ("EMAIL × 1", "EMPLOYEE_ID × 1", "TICKET × 1"):
        assert kind in html
    # Without htmx the same form answers with the whole page.
    page = client.post(f"{URL}test", {"text": "nothing to see"}).content.decode()
    assert "<html" in page and "Nothing would be redacted." in page


def test_it_tests_against_another_tenants_rules_never(client, acme, globex):
    client.force_login(globex.owner)
    client.post("/t/globex/settings/redaction/", RULES)
    client.force_login(acme.owner)
    html = client.post(f"{URL}test", {"text": "EMP-004211"}, **HX).content.decode()
    assert "EMP-004211" in html and "Nothing would be redacted." in html
    assert client.post("/t/globex/settings/redaction/test", {"text": "x"}).status_code == 404
    assert client.get("/t/globex/settings/redaction/").status_code == 404


def test_it_shows_bad_rules_in_the_form_and_keeps_the_old_ones(client, acme):
    client.force_login(acme.owner)
    cases = [
        ({"custom_patterns": "EMPLOYEE_ID EMP-\\d+"}, "line 1: write NAME = pattern"),
        ({"custom_patterns": "A = a\nB = ("}, "line 2: pattern does not compile"),
        ({"custom_patterns": "LOOK = EMP(?=-)"}, "line 1: pattern does not compile: invalid perl"),
        ({"custom_patterns": "1X = a"}, "line 1: name must be a word like EMPLOYEE_ID"),
        ({"custom_patterns": "ANY = a*"}, "line 1: pattern matches the empty string"),
        ({"custom_patterns": "G = (?P<g>a)"}, "line 1: pattern must not name groups"),
    ]
    for data, message in cases:
        resp = client.post(URL, data)
        html = resp.content.decode()
        assert resp.status_code == 400, data
        assert message in html and 'id="redaction-policy"' in html, data
    assert not RedactionPolicy.all_tenants.filter(tenant=acme).exists()


def test_it_asks_for_a_text_to_test(client, acme):
    client.force_login(acme.owner)
    resp = client.post(f"{URL}test", {"text": ""}, **HX)
    assert resp.status_code == 400 and "This field is required." in resp.content.decode()
    resp = client.post(f"{URL}test", {"text": "x" * 20_001}, **HX)
    assert resp.status_code == 400 and "at most 20000 characters" in resp.content.decode()


def test_it_shows_a_viewer_the_rules_without_the_form_and_refuses_their_save(
    client, acme, acme_viewer, acme_member
):
    client.force_login(acme.owner)
    client.post(URL, RULES)
    for user in (acme_viewer, acme_member):
        client.force_login(user)
        html = client.get(URL).content.decode()
        assert 'id="redaction-rules"' in html and "EMPLOYEE_ID = EMP-\\d{6}" in html
        assert 'id="redaction-policy"' not in html and 'id="redaction-test"' in html
        assert client.post(URL, {"custom_patterns": ""}).status_code == 403
    assert RedactionPolicy.all_tenants.get(tenant=acme).version == 1


def test_it_turns_the_scan_of_infrastructure_attributes_on_and_off(client, acme):
    client.force_login(acme.owner)
    client.post(URL, {**RULES, "scan_infrastructure": "on"})
    assert RedactionPolicy.all_tenants.get(tenant=acme).scan_infrastructure is True
    box = re.search(
        r'<input type="checkbox" name="scan_infrastructure"[^>]*>', client.get(URL).content.decode()
    )
    assert box and " checked" in box.group(0)
    client.post(URL, RULES)  # an unticked box is not sent
    policy = RedactionPolicy.all_tenants.get(tenant=acme)
    assert policy.scan_infrastructure is False and policy.version == 2

"""The console's settings in Chromium, as a tenant owner who is not platform staff:
members, API keys (a key shown once) and the redaction test box."""

import re

import pytest
from playwright.sync_api import expect

from controlplane import services
from tests.browser.conftest import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_manages_members_keys_and_redaction_as_an_ordinary_owner(live_server, page, shot, acme):
    assert not acme.owner.is_staff and not acme.owner.is_superuser
    base = f"{live_server.url}/t/acme"
    log_in(page, live_server.url, "alice@acme.test")
    page.click("nav.mainnav >> text=Settings")
    expect(page).to_have_url(f"{base}/settings/members/")
    expect(page.locator("nav.subnav a[aria-current=page]")).to_have_text("Members")

    # Members: add a new person, who gets a first password once; change their role.
    page.fill("#add-member [name=email]", "nina@example.com")
    page.select_option("#add-member [name=role]", "viewer")
    page.click("#add-member button[type=submit]")
    expect(page.locator("#added")).to_contain_text("nina@example.com was added as viewer")
    password = page.locator("#new-password").inner_text().strip()
    assert len(password) >= 12
    nina = page.locator('#members tr[data-user="nina@example.com"]')
    nina.locator("select[name=role]").select_option("member")
    nina.locator("button", has_text="Change").click()
    expect(page.locator(".notice-ok")).to_have_text("nina@example.com is now member.")
    expect(page.locator("#new-password")).to_have_count(0)
    # The only owner cannot step down.
    alice = page.locator('#members tr[data-user="alice@acme.test"]')
    alice.locator("select[name=role]").select_option("admin")
    alice.locator("button", has_text="Change").click()
    expect(page.locator('#members tr[data-user="alice@acme.test"] .field-error')).to_contain_text(
        "a tenant always keeps an owner"
    )
    shot("20-settings-members")

    # API keys: created with its scopes, shown once, then revoked.
    page.click("nav.subnav >> text=API keys")
    expect(page).to_have_url(f"{base}/settings/keys/")
    page.fill("#create-key [name=name]", "exporter")
    page.check("#create-key input[value=read]")
    page.click("#create-key button[type=submit]")
    raw = page.locator("#new-key").inner_text().strip()
    key = services.api_key_authenticate(raw_key=raw)
    assert key is not None and key.scopes == ["ingest", "read"]
    shot("21-settings-key-created")
    page.goto(f"{base}/settings/keys/")
    expect(page.locator("#new-key")).to_have_count(0)
    assert raw not in page.content()
    row = page.locator(f'#keys tr[data-key="{key.prefix}"]')
    expect(row).to_contain_text("ingest, read")
    expect(row.locator("td").nth(4)).not_to_have_text("never")  # authenticated above
    row.locator("button", has_text="Revoke").click()
    expect(page.locator(f'#keys tr[data-key="{key.prefix}"] .pill')).to_have_text("revoked")
    assert services.api_key_authenticate(raw_key=raw) is None

    # Redaction: the test box answers in place, through the tenant's saved rules.
    page.click("nav.subnav >> text=Redaction")
    box = page.locator("#redaction-test")
    box.locator("textarea").fill("Ticket EMP-004211 from ann@example.com")
    box.locator("button", has_text="Test").click()
    result = page.locator("#redaction-result")
    expect(result.locator(".redacted")).to_have_count(1)
    expect(result).to_contain_text("EMAIL × 1")
    expect(result.locator("pre")).not_to_contain_text("ann@example.com")
    expect(page).to_have_url(f"{base}/settings/redaction/")  # no page load
    page.fill("#redaction-policy [name=custom_patterns]", "EMPLOYEE_ID = EMP-\\d{6}")
    page.click("#redaction-policy button[type=submit]")
    expect(page.locator(".notice-ok")).to_contain_text("Saved as version 1")
    box.locator("textarea").fill("Ticket EMP-004211 from ann@example.com")
    box.locator("button", has_text="Test").click()
    expect(result.locator(".redacted")).to_have_count(2)
    expect(result).to_contain_text("EMPLOYEE_ID × 1")
    expect(result.locator("pre")).not_to_contain_text(re.compile("EMP-004211|ann@example.com"))
    shot("22-settings-redaction")

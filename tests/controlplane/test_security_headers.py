"""Production headers: a Content-Security-Policy the UI lives within, HSTS and Secure
cookies over HTTPS (also behind a proxy that says so), JSON 404s under /api/ and /v1/
with DEBUG on or off."""

import re
from pathlib import Path

import pytest

from tests.conftest import PASSWORD

TEMPLATES = Path(__file__).resolve().parents[2] / "frontend" / "templates"
PRESENT = TEMPLATES.parent / "present.py"


def test_it_sends_a_content_security_policy_without_inline_script(client, acme):
    policy = client.get("/login/")["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["script-src"] == "'self'" and directives["style-src"] == "'self'"
    assert "'unsafe-inline'" not in policy and "style-src-attr" not in directives
    assert directives["frame-ancestors"] == "'none'" and directives["object-src"] == "'none'"
    client.force_login(acme.owner)
    page = client.get("/t/acme/traces/")
    assert page.status_code == 200 and page["Content-Security-Policy"] == policy


def test_it_keeps_script_styles_and_handlers_out_of_the_templates():
    """What the policy would block: inline <script>, <style>, style attributes and on*=
    handlers, in the templates and in the HTML the trace tree is written as."""
    found = []
    sources = [*TEMPLATES.rglob("*.html"), PRESENT]
    for source in sources:
        text = source.read_text()
        for pattern in (
            r"<script(?![^>]*\ssrc=)[^>]*>",
            r"<style\b",
            r"\sstyle\s*=",
            r"\son[a-z]+\s*=",
            "hx-on",
        ):
            found += [f"{source.name}: {m}" for m in re.findall(pattern, text)]
    assert found == []


def login(client, acme, **extra):
    acme.owner.set_password(PASSWORD)
    acme.owner.save()
    return client.post("/login/", {"username": acme.owner.username, "password": PASSWORD}, **extra)


def test_it_marks_cookies_secure_and_sends_hsts_over_https(client, acme, settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    response = login(client, acme, secure=True)
    assert response.status_code == 302
    assert response.cookies["sessionid"]["secure"] is True
    assert response.cookies["csrftoken"]["secure"] is True
    assert response["Strict-Transport-Security"] == "max-age=31536000"


def test_it_trusts_the_proxy_header_only_as_configured(client, acme, settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000
    plain = login(client, acme, HTTP_X_FORWARDED_PROTO="https")
    assert not plain.cookies["sessionid"]["secure"]
    assert "Strict-Transport-Security" not in plain
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    client.logout()
    proxied = login(client, acme, HTTP_X_FORWARDED_PROTO="https")
    assert proxied.cookies["sessionid"]["secure"] is True
    assert "Strict-Transport-Security" in proxied


@pytest.mark.parametrize("debug", [True, False])
@pytest.mark.parametrize("path", ["/api/nope", "/api/v1/nope/deeper", "/v1/profiles", "/v1/"])
def test_it_answers_unknown_api_paths_with_json_404(client, settings, debug, path):
    settings.DEBUG = debug
    response = client.get(path)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "detail": f"no such endpoint: {path}"}

"""Playwright for Python driving Debian's Chromium (never a downloaded browser)."""

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import PASSWORD

# Playwright's sync API keeps an asyncio loop running in this thread, which makes
# Django refuse database calls from test code here; the loop is Playwright's, not a
# Django async view's, so those calls are safe (pytest-playwright documents the same).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# Background networking off: this machine has no network but the loopback, and
# Chromium's own update and sync requests would only fail and slow it down.
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@pytest.fixture(scope="session")
def chromium():
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        if CI:
            pytest.fail(f"{CHROMIUM} is missing and CI=true: browser tests must run")
        pytest.skip(f"{CHROMIUM} is not installed (make test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors, refused = [], []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # Chromium reports what the Content-Security-Policy blocked on the console
    # ("Refused to apply inline style ...", "Refused to execute inline script ...").
    page.on(
        "console",
        lambda msg: refused.append(msg.text) if "Content Security Policy" in msg.text else None,
    )
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not refused, f"the Content-Security-Policy refused {len(refused)}: {refused[:2]}"


@pytest.fixture
def shot(page):
    """shot(name): keep a full-page screenshot in test-artifacts/ for people to look at."""
    ARTIFACTS.mkdir(exist_ok=True)

    def take(name: str):
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    return take


def log_in(page, base_url: str, user: str, password: str = PASSWORD):
    page.goto(f"{base_url}/login/")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.click("button[type=submit]")

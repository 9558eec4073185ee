"""The playground page: a chat span opened from the trace view as a form, edited and run
through the same service as the API, with its refusals shown and its new trace linked
both ways."""

import re
import uuid

import pytest

from billing.models import Budget
from controlplane import tenantcache
from controlplane.tenancy import tenant_scope
from replay.models import PlaygroundRun
from tests.billing.conftest import price_book  # noqa: F401 - the seed prices
from tests.replay.test_playground_api import (  # noqa: F401 - fixtures
    MODEL,
    _fast_playground,
    external_call,
    hexes,
    managed_call,
)
from tracing.models import Span


def url(source) -> str:
    return f"/t/acme/traces/{source[0]}/spans/{source[1]}/playground"


def form_of(page: str, **changes) -> dict:
    """What the page's form would post, read back from its HTML, with `changes`."""
    data = {
        "model": re.search(r'name="model" id="pg-model" value="([^"]*)"', page)[1],
        "system": re.search(r'name="system"[^>]*>([^<]*)</textarea>', page)[1],
        "role": re.findall(r'<option value="(\w+)" selected>', page),
        "format": re.findall(r'name="format" value="(\w+)"', page),
        "content": [
            c.replace("&quot;", '"').replace("&#x27;", "'")
            for c in re.findall(r'<textarea name="content"[^>]*>([^<]*)</textarea>', page)
        ],
        "max_tokens": re.search(r'name="max_tokens"[^>]*value="([^"]*)"', page)[1],
        "action": "run",
    }
    data.update(changes)
    return data


@pytest.fixture
def external(acme, traced):
    """The second chat span of an OpenLLMetry-traced conversation (text, tool_use and
    tool_result turns)."""
    return external_call(acme, "openllmetry", traced)


def test_it_offers_the_playground_on_chat_spans_to_those_who_may_run(
    client,
    acme,
    acme_viewer,
    managed_call,  # noqa: F811 - the imported fixture
):
    trace_id, span_id = managed_call
    client.force_login(acme.owner)
    detail = client.get(f"/t/acme/traces/{trace_id}/spans/{span_id}", HTTP_HX_REQUEST="true")
    assert f'href="{url(managed_call)}"' in detail.content.decode()
    with tenant_scope(acme):
        spans = Span.objects.filter(trace_id=uuid.UUID(hex=trace_id))
        (root,) = [s for s in spans if hexes(s) != managed_call]
    root_detail = client.get(
        f"/t/acme/traces/{trace_id}/spans/{hexes(root)[1]}", HTTP_HX_REQUEST="true"
    )
    assert "Open in playground" not in root_detail.content.decode()
    assert client.get(url(hexes(root))).status_code == 400  # not an LLM call
    client.force_login(acme_viewer)
    detail = client.get(f"/t/acme/traces/{trace_id}/spans/{span_id}", HTTP_HX_REQUEST="true")
    assert "Open in playground" not in detail.content.decode()
    page = client.get(url(managed_call)).content.decode()
    assert "may read this call but not run it" in page and 'id="pg-run"' not in page
    assert client.post(url(managed_call), {"action": "run"}).status_code == 403


def test_it_opens_an_external_agents_call_as_a_form(client, acme, external):
    client.force_login(acme.owner)
    page = client.get(url(external)).content.decode()
    data = form_of(page)
    assert data["system"] == "Be brief."
    assert data["role"] == ["user", "assistant", "user"]
    assert data["format"] == ["text", "blocks", "blocks"]
    assert '"tool_use"' in data["content"][1] and '"tool_result"' in data["content"][2]
    assert data["max_tokens"] == "200"
    assert "lookup_order" in page  # the tools
    assert "claude-test" in page and data["model"] != "claude-test"  # no price: a note
    assert f'<option value="{MODEL}">' in page  # the models it can run


def test_it_runs_an_edited_call_and_links_the_new_trace_both_ways(
    client, acme, external, django_capture_on_commit_callbacks
):
    client.force_login(acme.owner)
    data = form_of(client.get(url(external)).content.decode())
    data["content"][2] = data["content"][2].replace("shipped", "lost")
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(url(external), {**data, "model": MODEL})
    page = response.content.decode()
    assert response.status_code == 200, page
    assert "The tool returned: lost" in page
    with tenant_scope(acme):
        run = PlaygroundRun.objects.get()
    assert (run.model, run.source_trace_id, run.source_span_id) == (MODEL, *external)
    assert f'id="pg-new-trace" href="/t/acme/traces/{run.trace_id}/"' in page
    assert re.search(r'id="pg-cost">\$0\.\d+', page)
    new_trace = client.get(f"/t/acme/traces/{run.trace_id}/").content.decode()
    back = f'href="/t/acme/traces/{external[0]}/?span={external[1]}"'
    assert 'id="trace-playground-source"' in new_trace and back in new_trace
    source = client.get(f"/t/acme/traces/{external[0]}/?span={external[1]}").content.decode()
    assert f'href="/t/acme/traces/{run.trace_id}/"' in source  # its runs, on its panel


def test_it_adds_and_removes_messages_without_a_call(client, acme, external):
    client.force_login(acme.owner)
    data = form_of(client.get(url(external)).content.decode())
    added = client.post(url(external), {**data, "action": "add"}).content.decode()
    assert form_of(added)["role"] == ["user", "assistant", "user", "assistant"]
    removed = client.post(url(external), {**form_of(added), "action": "remove-1"})
    assert form_of(removed.content.decode())["role"] == ["user", "user", "assistant"]
    with tenant_scope(acme):
        assert PlaygroundRun.objects.count() == 0


@pytest.mark.parametrize(
    ("change", "shown"),
    [
        ({"model": "gpt-nonesuch"}, "&#x27;gpt-nonesuch&#x27; is not a model with a price"),
        ({"temperature": "hot"}, "must be a number, not &#x27;hot&#x27;"),
        ({"temperature": "7"}, "must be a number from 0 to 1"),
        ({"max_tokens": "1.5"}, "must be a whole number"),
        (
            {"role": ["user", "assistant"], "content": ["hi", "{x"], "format": ["text", "blocks"]},
            "[1]: the content blocks are not JSON",
        ),
        ({"content": ["   "]}, "[0].content is empty"),
        ({"tools": "[{"}, "not JSON"),
        ({"role": ["assistant"]}, "the first message must be the user"),
    ],
)
def test_it_shows_bad_input_beside_its_field(
    client,
    acme,
    managed_call,  # noqa: F811 - the imported fixture
    change,
    shown,
):
    client.force_login(acme.owner)
    data = form_of(client.get(url(managed_call)).content.decode(), **change)
    response = client.post(url(managed_call), data)
    assert response.status_code == 400
    assert shown in response.content.decode()


def test_it_says_why_a_call_was_refused_or_failed(
    client,
    acme,
    managed_call,  # noqa: F811 - the imported fixture
    settings,
    messages_api,
):
    client.force_login(acme.owner)
    data = form_of(client.get(url(managed_call)).content.decode())
    messages_api.failures = [{"status": 400, "count": 1}]
    failed = client.post(url(managed_call), data)
    assert failed.status_code == 502 and "The model API failed" in failed.content.decode()
    assert 'id="pg-new-trace"' in failed.content.decode()  # recorded all the same

    with tenant_scope(acme):
        Budget.objects.create(tenant=acme, scope="agent", agent="playground", cap_nusd=10)
    tenantcache.reset()
    spent = client.post(url(managed_call), data)
    assert spent.status_code == 402 and "agent &#x27;playground&#x27;" in spent.content.decode()
    with tenant_scope(acme):
        Budget.objects.all().delete()
    tenantcache.reset()

    settings.PLAYGROUND_LLM_PER_MINUTE = 1
    assert client.post(url(managed_call), data).status_code == 200
    limited = client.post(url(managed_call), data)
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert "rate limit of 1 calls a minute" in limited.content.decode()


def test_it_hides_another_tenants_span(client, acme, globex, traced):
    source = external_call(globex, "openllmetry", traced)
    client.force_login(acme.owner)
    assert client.get(url(source)).status_code == 404
    assert client.post(url(source), {"action": "run", "model": MODEL}).status_code == 404
    assert client.get(url(("zz", source[1]))).status_code == 404
    with tenant_scope(globex):
        assert PlaygroundRun.objects.count() == 0

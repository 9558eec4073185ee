"""The web UI's views through Django's test client: tenancy, pages and fragments."""

import re

import pytest
from django.conf import settings

from tests.tracing.searchdata import BASE_NS, conversation_trace, in_process_provider, index_queue

HX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def traces(acme, globex, settings, django_capture_on_commit_callbacks):
    with index_queue(settings) as drain:
        with django_capture_on_commit_callbacks(execute=True):
            provider = in_process_provider(acme)
            ids = {
                "first": conversation_trace(provider, start_ns=BASE_NS),
                "second": conversation_trace(
                    provider,
                    user="Thanks! And the refund?",
                    answer="Refund issued.",
                    error=True,
                    start_ns=BASE_NS + 10**10,
                ),
                "globex": conversation_trace(in_process_provider(globex), session="g-1"),
            }
        drain()
    return ids


def test_it_sends_anonymous_people_to_log_in(client, acme):
    resp = client.get("/t/acme/traces/")
    assert resp.status_code == 302 and resp["Location"].startswith("/login/?next=")
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="password"' in page.content


def test_it_logs_in_and_lands_on_the_tenants_traces(client, acme):
    resp = client.post(
        "/login/", {"username": "alice@acme.test", "password": "correct horse battery staple"}
    )
    assert resp.status_code == 302
    resp = client.get("/")
    assert resp.status_code == 302 and resp["Location"] == "/t/acme/traces/"
    client.post("/logout/")
    bad = client.post("/login/", {"username": "alice@acme.test", "password": "wrong"})
    assert b"do not match" in bad.content


def test_it_lists_traces_and_serves_the_rows_fragment_from_the_same_url(client, acme, traces):
    client.force_login(acme.owner)
    page = client.get("/t/acme/traces/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "<html" in html and 'id="search"' in html
    assert html.index(traces["second"]) < html.index(traces["first"])  # newest first
    assert traces["globex"] not in html
    fragment = client.get("/t/acme/traces/", {"status": "error"}, **HX)
    text = fragment.content.decode()
    assert "<html" not in text and traces["second"] in text and traces["first"] not in text
    assert fragment["Vary"] and "HX-Request" in fragment["Vary"]
    bad = client.get("/t/acme/traces/", {"status": "sideways"}, **HX)
    assert bad.status_code == 400 and "status" in bad.content.decode()


def test_it_counts_matching_traces_errors_and_new_ones(client, acme, traces):
    client.force_login(acme.owner)
    from tracing.models import Trace

    first = Trace.all_tenants.filter(trace_id=traces["first"]).get()
    resp = client.get("/t/acme/traces/counts", {"seen": str(first.id)}, **HX)
    text = re.sub(r"\s+", " ", resp.content.decode())
    assert "<strong>2</strong> traces" in text and "<strong>1</strong> with errors" in text
    assert "1 new" in text
    resp = client.get("/t/acme/traces/counts", {"q": "refund"}, **HX)
    assert "<strong>1</strong> trace" in resp.content.decode()
    for seen in ("²", "9" * 30, "-1"):
        resp = client.get("/t/acme/traces/counts", {"seen": seen}, **HX)
        assert resp.status_code == 400 and "seen" in resp.content.decode()


def test_it_shows_a_trace_with_its_tree_and_a_span_conversation(client, acme, traces):
    client.force_login(acme.owner)
    page = client.get(f"/t/acme/traces/{traces['first']}/")
    html = page.content.decode()
    assert page.status_code == 200 and 'role="tree"' in html
    spans = re.findall(r'data-span="([0-9a-f]{16})" data-depth="(\d)"', html)
    assert [d for _, d in spans] == ["0", "1", "1", "1"]
    last_chat = spans[3][0]
    detail = client.get(f"/t/acme/traces/{traces['first']}/spans/{last_chat}", **HX)
    text = detail.content.decode()
    assert detail.status_code == 200 and "<html" not in text
    for role in ("role-system", "role-user", "role-assistant", "role-tool"):
        assert role in text
    assert "lookup_order" in text and "221B Baker Street" in text
    assert 'class="redacted"' in text and "jane.doe" not in text
    assert "It has shipped." in text
    # The same URL without htmx opens the trace with that span selected.
    full = client.get(f"/t/acme/traces/{traces['first']}/spans/{last_chat}")
    assert full.status_code == 302 and full["Location"].endswith(f"?span={last_chat}")
    deep = client.get(full["Location"]).content.decode()
    assert 'class="detail"' in deep and "It has shipped." in deep
    for offset in ("²", "9" * 30):
        resp = client.get(f"/t/acme/traces/{traces['first']}/", {"offset": offset}, **HX)
        assert resp.status_code == 400 and "offset" in resp.content.decode()


def test_it_answers_404_for_another_tenants_trace_span_and_session(client, acme, traces):
    client.force_login(acme.owner)
    assert client.get(f"/t/acme/traces/{traces['globex']}/").status_code == 404
    assert (
        client.get(f"/t/acme/traces/{traces['globex']}/spans/{'ab' * 8}", **HX).status_code == 404
    )
    assert client.get("/t/acme/sessions/g-1/").status_code == 404
    # A tenant the user is not a member of is a 404 too, never a 403.
    assert client.get("/t/globex/traces/").status_code == 404
    assert client.get(f"/t/globex/traces/{traces['globex']}/").status_code == 404
    assert client.get("/t/acme/traces/not-a-trace-id/").status_code == 404


def test_it_lets_a_viewer_read_but_not_create_keys(client, acme, acme_viewer, traces):
    client.force_login(acme_viewer)
    assert client.get("/t/acme/traces/").status_code == 200
    assert client.get(f"/t/acme/traces/{traces['second']}/").status_code == 200
    assert client.get("/t/acme/sessions/conv-1/").status_code == 200
    setup = client.get("/t/acme/setup/").content.decode()
    assert "ask an owner or admin" in setup
    assert client.post("/t/acme/setup/key").status_code == 403


def test_it_follows_a_session_as_one_conversation(client, acme, traces):
    client.force_login(acme.owner)
    listing = client.get("/t/acme/sessions/").content.decode()
    assert "conv-1" in listing and "g-1" not in listing
    page = client.get("/t/acme/sessions/conv-1/").content.decode()
    assert page.index("Where is my order?") < page.index("Thanks! And the refund?")
    assert page.count("You are a helpful support agent.") == 1  # shown once, not per trace
    assert page.count("Refund issued.") == 1


def test_it_shows_new_tenants_how_to_send_their_first_trace(client, acme):
    client.force_login(acme.owner)
    page = client.get("/t/acme/traces/").content.decode()
    assert "Send your first trace" in page
    assert "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://testserver/v1/traces" in page
    grpc_port = settings.OTLP_GRPC_ADDRESS.rpartition(":")[2]
    assert f"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://testserver:{grpc_port}\n" in page
    assert "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc" in page
    created = client.post("/t/acme/setup/key")
    text = created.content.decode()
    key = re.search(r"Bearer%20(fd_[A-Za-z0-9_-]+)", text).group(1)
    assert created["Cache-Control"] == "no-store"
    from controlplane.services import api_key_authenticate

    assert api_key_authenticate(raw_key=key).scopes == ["ingest"]


def test_it_switches_between_the_users_tenants(client, acme, globex):
    from controlplane.models import Role
    from tests.factories import MembershipFactory

    MembershipFactory(tenant=globex, user=acme.owner, role=Role.VIEWER)
    client.force_login(acme.owner)
    page = client.get("/t/acme/traces/").content.decode()
    assert 'href="/t/globex/traces/"' in page
    assert client.get("/t/globex/traces/").status_code == 200
    # The API's session authentication follows the tenant opened last.
    assert client.get("/api/v1/tenant").json()["slug"] == "globex"
    assert client.get("/").headers["Location"] == "/t/globex/traces/"

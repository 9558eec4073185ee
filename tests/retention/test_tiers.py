"""A trace moves hot → warm → cold → deleted and reads back the same in each tier,
against PostgreSQL and the S3-compatible server (file store and SQLite in the SQLite
pass), with the clock set by --as-of."""

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from alerts.models import Alert
from billing.models import UsageDaily
from controlplane.blobstore import get_blob_store
from controlplane.tenancy import tenant_scope
from execution.models import Agent, AgentVersion, Run
from replay.models import JournalStep
from tests.retention.helpers import POLICY, age, apply, read_whole, send_trace, tier_of
from tracing.models import Payload, Span, Trace
from tracing.query.filters import TraceFilters
from tracing.query.traces import traces_filtered
from tracing.retention.models import StorageUsage, Tier, TraceMark

pytestmark = pytest.mark.django_db(transaction=True)


def set_policy(api, key, **days):
    response = api.request("PUT", "/api/v1/retention", key=key, json={**POLICY, **days})
    assert response.status_code == 200, response.text


def found_by_text(tenant, words: str) -> set[str]:
    with tenant_scope(tenant):
        return {t.trace_id.hex for t in traces_filtered(TraceFilters(q=words))}


def found_by_attribute(tenant) -> set[str]:
    with tenant_scope(tenant):
        filters = TraceFilters(attrs=[("gen_ai.provider.name", "anthropic")])
        return {t.trace_id.hex for t in traces_filtered(filters)}


def bucket_keys(prefix: str) -> list[str]:
    return sorted(get_blob_store().list(prefix))


def test_it_reads_a_trace_back_the_same_in_every_tier(api, client, acme, make_key):
    key = make_key(acme, "admin")
    set_policy(api, key)
    trace = send_trace(acme, steps=3)
    hot = read_whole(api, key, trace)
    assert found_by_text(acme, "Baker Street") == {trace}
    assert found_by_attribute(acme) == {trace}

    assert "1 traces to warm" in apply(acme, days_ahead=1.5)
    assert tier_of(acme, trace) == Tier.WARM
    assert not Span.objects.unscoped().filter(tenant=acme).exists()  # one object instead
    assert read_whole(api, key, trace) == hot
    assert api.get(f"/api/v1/traces/{trace}", key=key).json()["trace"]["tier"] == "warm"
    assert found_by_text(acme, "Baker Street") == {trace}  # warm traces are still searched
    assert found_by_attribute(acme) == {trace}
    client.force_login(acme.owner)
    assert "Warm" in client.get(f"/t/{acme.slug}/traces/{trace}/").content.decode()
    storage = {row["tier"]: row for row in api.get("/api/v1/storage", key=key).json()}
    assert storage["warm"]["traces"] == 1 and storage["warm"]["blob_bytes"] > 0
    assert storage["hot"]["traces"] == 0
    # Billing prices it per GB-month: the day's storage cost is not zero.
    assert UsageDaily.all_tenants.filter(tenant=acme, kind="storage", cost_nusd__gt=0).exists()

    assert "1 to cold" in apply(acme, days_ahead=4)
    row = Trace.all_tenants.get(tenant=acme, trace_id=trace)
    assert row.tier == Tier.COLD and row.archive["storage_class"] == "GLACIER_IR"
    assert row.archive["key"].endswith(".cold.zst")
    assert bucket_keys(f"t/{acme.id}/bundles/") == [row.archive["key"]]  # the warm one went
    if settings.BLOB_STORE["backend"] == "s3":
        s3 = get_blob_store().client
        head = s3.head_object(
            Bucket=settings.BLOB_STORE["bucket"], Key=get_blob_store().prefix + row.archive["key"]
        )
        assert head["StorageClass"] == "GLACIER_IR"
    assert read_whole(api, key, trace) == hot
    cold = api.get(f"/api/v1/traces/{trace}", key=key).json()["trace"]
    assert (cold["tier"], cold["text_archived"]) == ("cold", True)
    assert found_by_text(acme, "Baker Street") == set()  # listed by summary only
    assert found_by_attribute(acme) == set()
    client.force_login(acme.owner)
    page = client.get(f"/t/{acme.slug}/traces/{trace}/").content.decode()
    assert "Cold" in page and "its text is no longer searched" in page
    assert "cold: text archived" in client.get(f"/t/{acme.slug}/traces/").content.decode()
    listed = api.get("/api/v1/traces", key=key).json()["items"]
    assert [t["trace_id"] for t in listed] == [trace]

    assert "1 deleted" in apply(acme, days_ahead=7)
    assert found_by_text(acme, "Baker Street") == set()
    assert found_by_attribute(acme) == set()
    assert api.get(f"/api/v1/traces/{trace}", key=key).status_code == 404
    assert bucket_keys(f"t/{acme.id}/") == []
    with tenant_scope(acme):
        assert not Payload.objects.exists()
        assert StorageUsage.objects.get(tier=Tier.HOT).db_bytes == 0


def test_it_keeps_a_conversation_whole_when_one_trace_of_the_session_goes_warm(api, acme, make_key):
    key = make_key(acme, "admin")
    set_policy(api, key, warm_days=10)
    first = send_trace(acme, steps=2, session="shared")
    # The next trace of the session resends the first's conversation and goes on.
    second = send_trace(acme, steps=4, session="shared")
    with tenant_scope(acme):
        stored = Payload.objects.count()
    age(acme, first, days=3)
    age(acme, second, days=-2)
    first_hot, second_hot = read_whole(api, key, first), read_whole(api, key, second)
    # Two days on, past the day of grace payloads get: only what the hot trace reads stays.
    assert "1 traces to warm" in apply(acme, days_ahead=2)
    assert (tier_of(acme, first), tier_of(acme, second)) == (Tier.WARM, Tier.HOT)
    assert read_whole(api, key, second) == second_hot
    assert read_whole(api, key, first) == first_hot
    # Payloads the hot trace reads stay; the warm trace's own left the database.
    with tenant_scope(acme):
        kept = Payload.objects.count()
        assert 0 < kept <= stored
    assert "1 traces to warm" in apply(acme, days_ahead=4)
    with tenant_scope(acme):
        assert not Payload.objects.exists()  # nothing hot reads any now
    assert bucket_keys(f"t/{acme.id}/blobs/") == []
    assert read_whole(api, key, first) == first_hot
    assert read_whole(api, key, second) == second_hot


def test_it_keeps_held_and_marked_traces_past_their_days(api, acme, make_key):
    key = make_key(acme, "admin")
    set_policy(api, key)
    held = send_trace(acme, session="held-session")
    marked = send_trace(acme, session="marked")
    plain = send_trace(acme, session="plain")
    hold = api.post(
        "/api/v1/legal-holds", key=key, json={"scope": "session", "value": "held-session"}
    )
    assert hold.status_code == 201
    assert api.request("PUT", f"/api/v1/traces/{marked}/mark", key=key).status_code == 200
    apply(acme, days_ahead=10)
    assert tier_of(acme, plain) is None
    assert tier_of(acme, held) == Tier.COLD  # cheaper, but not deleted
    assert tier_of(acme, marked) == Tier.COLD  # kept for extended_days (30)
    apply(acme, days_ahead=31)
    assert tier_of(acme, marked) is None
    assert not TraceMark.all_tenants.filter(tenant=acme).exists()  # gone with its trace
    assert tier_of(acme, held) == Tier.COLD
    assert api.delete(f"/api/v1/legal-holds/{hold.json()['id']}", key=key).status_code == 204
    apply(acme, days_ahead=31)
    assert tier_of(acme, held) is None


def test_it_finishes_a_move_to_cold_killed_after_its_switch(api, acme, make_key, monkeypatch):
    key = make_key(acme, "admin")
    set_policy(api, key)
    trace = send_trace(acme)
    apply(acme, days_ahead=1.5)
    hot_then_warm = read_whole(api, key, trace)
    from tracing.retention import tiers

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the process died right after the transaction

    monkeypatch.setattr(tiers, "_unlist", killed)
    with pytest.raises(KeyboardInterrupt):
        apply(acme, days_ahead=4)
    monkeypatch.undo()
    assert tier_of(acme, trace) == Tier.COLD
    # Not yet taken out of SQLite's index; PostgreSQL's search skips a cold trace at once.
    unlisted = {trace} if connection.vendor == "sqlite" else set()
    assert found_by_text(acme, "Baker Street") == unlisted
    apply(acme, days_ahead=4)
    assert found_by_text(acme, "Baker Street") == set()
    row = Trace.all_tenants.get(tenant=acme, trace_id=trace)
    assert "stale" not in row.archive
    assert bucket_keys(f"t/{acme.id}/bundles/") == [row.archive["key"]]
    assert read_whole(api, key, trace) == hot_then_warm


def test_it_reads_and_counts_late_and_resent_spans_of_an_archived_trace_once(api, acme, make_key):
    import json

    from tests.tracing.test_otlp_http import one_span_request
    from tracing.ingest.decode import decode_request
    from tracing.ingest.pipeline import spans_ingest

    def send(span_id: str, words: str):
        doc = one_span_request(trace, span_id, **{"gen_ai.tool.call.result": words})
        body = decode_request(json.dumps(doc).encode(), "application/json")
        return spans_ingest(tenant_id=acme.id, request=body)

    def counted() -> tuple[int, int]:
        summary = api.get(f"/api/v1/traces/{trace}", key=key).json()["trace"]
        row = Trace.all_tenants.get(tenant=acme, trace_id=trace)
        assert summary["span_count"] == row.span_count
        return row.span_count, Span.all_tenants.filter(tenant=acme, trace_id=trace).count()

    key = make_key(acme, "admin")
    set_policy(api, key)
    trace = "3" * 32
    send("eee19b7ec3c1b174", "first words")
    # The span's own start (2023-11-14) is what retention ages: as of a day and a half on.
    started = Trace.all_tenants.get(tenant=acme, trace_id=trace).start_time
    apply(acme, days_ahead=(started - timezone.now()).total_seconds() / 86400 + 1.5)
    assert tier_of(acme, trace) == Tier.WARM
    resent = send("eee19b7ec3c1b174", "first words")  # an exporter's retry, after the move
    assert (resent.accepted, resent.duplicates) == (0, 1)
    assert send("aaa19b7ec3c1b175", "late words").accepted == 1
    assert counted() == (2, 1)  # the bundle's span and the late one's row
    spans = api.get(f"/api/v1/traces/{trace}", key=key).json()["spans"]
    assert sorted(s["span_id"] for s in spans) == ["aaa19b7ec3c1b175", "eee19b7ec3c1b174"]
    late = api.get(f"/api/v1/spans/aaa19b7ec3c1b175?trace_id={trace}", key=key).json()
    assert late["tool_call_result"] == "late words"

    apply(acme, days_ahead=(started - timezone.now()).total_seconds() / 86400 + 4)
    assert tier_of(acme, trace) == Tier.COLD
    assert send("eee19b7ec3c1b174", "first words").duplicates == 1
    assert send("aaa19b7ec3c1b175", "late words").duplicates == 1  # a row still
    assert counted() == (2, 1)


def test_it_finds_a_span_of_an_archived_trace_without_its_trace_id(api, acme, make_key):
    key = make_key(acme, "admin")
    set_policy(api, key)
    trace = send_trace(acme, steps=2)
    spans = api.get(f"/api/v1/traces/{trace}", key=key).json()["spans"]
    span_id = spans[0]["children"][0]["span_id"]
    hot = api.get(f"/api/v1/spans/{span_id}", key=key).json()

    apply(acme, days_ahead=1.5)
    assert tier_of(acme, trace) == Tier.WARM
    warm = api.get(f"/api/v1/spans/{span_id}", key=key)
    assert warm.status_code == 200, warm.text
    assert warm.json() == hot
    row = Trace.all_tenants.get(tenant=acme, trace_id=trace)
    assert len(row.archive["span_ids"]) == row.archive["spans"]

    apply(acme, days_ahead=4)
    assert tier_of(acme, trace) == Tier.COLD
    assert api.get(f"/api/v1/spans/{span_id}", key=key).json() == hot
    assert api.get(f"/api/v1/spans/{'e' * 16}", key=key).status_code == 404
    # Archived before rows listed their span ids: the next run reads them from the bundle.
    row = Trace.all_tenants.get(tenant=acme, trace_id=trace)
    Trace.all_tenants.filter(pk=row.pk).update(
        archive={k: v for k, v in row.archive.items() if k != "span_ids"}
    )
    assert api.get(f"/api/v1/spans/{span_id}", key=key).status_code == 404
    apply(acme, days_ahead=4)
    assert api.get(f"/api/v1/spans/{span_id}", key=key).json() == hot


def test_it_keeps_traces_held_by_id_or_tenant_wide_and_alerted_ones_past_their_days(
    api, acme, make_key
):
    key = make_key(acme, "admin")
    set_policy(api, key)
    held, alerted = send_trace(acme, session="held"), send_trace(acme, session="alerted")
    plain = send_trace(acme, session="plain")
    by_id = api.post("/api/v1/legal-holds", key=key, json={"scope": "trace", "value": held})
    assert by_id.status_code == 201, by_id.text
    with tenant_scope(acme):
        Alert.objects.create(
            tenant=acme, detector="loop", cause="loop", trace_id=alerted, summary="a loop"
        )
    apply(acme, days_ahead=10)
    assert tier_of(acme, plain) is None
    assert (tier_of(acme, held), tier_of(acme, alerted)) == (Tier.COLD, Tier.COLD)
    tenant_wide = api.post("/api/v1/legal-holds", key=key, json={"scope": "tenant"})
    assert tenant_wide.status_code == 201, tenant_wide.text
    assert api.delete(f"/api/v1/legal-holds/{by_id.json()['id']}", key=key).status_code == 204
    apply(acme, days_ahead=31)
    assert tier_of(acme, alerted) == Tier.COLD  # held by the tenant's hold now
    assert tier_of(acme, held) == Tier.COLD
    path = f"/api/v1/legal-holds/{tenant_wide.json()['id']}"
    assert api.delete(path, key=key).status_code == 204
    apply(acme, days_ahead=31)
    assert (tier_of(acme, held), tier_of(acme, alerted)) == (None, None)


def test_it_moves_an_agents_traces_by_the_agents_own_days(api, acme, make_key):
    key = make_key(acme, "admin")
    set_policy(api, key, agents={"support": {"hot_days": 5}})
    trace = send_trace(acme)  # the support agent's
    assert "0 traces to warm" in apply(acme, days_ahead=1.5)
    assert tier_of(acme, trace) == Tier.HOT
    set_policy(api, key, agents={"billing": {"hot_days": 5}})
    assert "1 traces to warm" in apply(acme, days_ahead=1.5)
    assert tier_of(acme, trace) == Tier.WARM


def test_it_deletes_a_managed_runs_journal_with_its_trace_and_keeps_the_run(api, acme, make_key):
    key = make_key(acme, "admin")
    set_policy(api, key)
    trace = send_trace(acme)
    with tenant_scope(acme):
        agent = Agent.objects.create(tenant=acme, name="support")
        version = AgentVersion.objects.create(
            tenant=acme,
            agent=agent,
            version=1,
            bundle_sha256="0" * 64,
            bundle_format="zip",
            bundle_size=1,
            manifest={},
        )
        run = Run.objects.create(
            tenant=acme, agent=agent, version=version, status="succeeded", trace_id=trace
        )
        for step in (1, 2):
            JournalStep.objects.create(
                tenant=acme, run=run, step=step, kind="llm", request_hash=f"h{step}"
            )
    Trace.all_tenants.filter(tenant=acme, trace_id=trace).update(run_id=str(run.pk))
    assert "1 traces to warm" in apply(acme, days_ahead=1.5)
    assert JournalStep.all_tenants.filter(run=run).count() == 2  # kept while the trace is
    out = apply(acme, days_ahead=7)
    assert "1 deleted" in out and "2 journal steps" in out
    assert not JournalStep.all_tenants.filter(run=run).exists()
    assert Run.all_tenants.filter(pk=run.pk, status="succeeded").exists()

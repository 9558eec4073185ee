"""Removal: an erasure request takes a session's or a user's text out of search and
storage; deleting a tenant leaves nothing of it in the database or the bucket (listed);
a retention run SIGKILLed mid-batch and run again leaves every trace readable once."""

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.conf import settings
from django.core.management import call_command
from django.utils import timezone

from controlplane.blobstore import get_blob_store
from controlplane.tenancy import TenantModel, tenant_scope
from tests.execution.bundles import agent_with_bundle
from tests.retention.helpers import POLICY, age, apply, send_trace, tier_of
from tests.tracing.test_otlp_http import one_span_request
from tests.workers import _database_url
from tracing.ingest.decode import decode_request
from tracing.ingest.pipeline import spans_ingest
from tracing.models import Payload, Trace
from tracing.query.filters import TraceFilters
from tracing.query.traces import traces_filtered
from tracing.retention.models import RemovalRecord, Tier
from tracing.retention.tasks import erasure_run
from tracing.search.index import search_index_spans

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]


def found(tenant, words: str) -> set[str]:
    with tenant_scope(tenant):
        return {t.trace_id.hex for t in traces_filtered(TraceFilters(q=words))}


def send_user_span(
    tenant, trace_hex: str, user: str, words: str, *, key="user.id", span="eee19b7ec3c1b174"
) -> None:
    doc = one_span_request(trace_hex, span, **{key: user, "gen_ai.tool.call.result": words})
    spans_ingest(
        tenant_id=tenant.id, request=decode_request(json.dumps(doc).encode(), "application/json")
    )
    with tenant_scope(tenant):
        search_index_spans(tenant_id=tenant.id, spans=[(trace_hex, span)])


def erase(api, key, tenant, body: dict) -> dict:
    made = api.post("/api/v1/erasure-requests", key=key, json=body)
    assert made.status_code == 202, made.text
    erasure_run(tenant_id=tenant.id, request_id=made.json()["id"])  # as the worker would
    status = api.get(f"/api/v1/erasure-requests/{made.json()['id']}", key=key)
    assert status.status_code == 200
    return status.json()


def test_it_erases_a_sessions_text_from_search_in_every_tier(api, acme, make_key):
    key = make_key(acme, "admin")
    assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 200
    warm = send_trace(acme, session="erase-me")
    apply(acme, days_ahead=1.5)
    assert tier_of(acme, warm) == Tier.WARM
    # The same texts again, whose payloads the run above collected: stored again.
    hot = send_trace(acme, session="erase-me")
    other_hex = "0af7651916cd43dd8448eb211c80319c"
    send_user_span(acme, other_hex, "someone-else", "zanzibar quartermaster")
    assert found(acme, "Baker Street") == {warm, hot}
    status = erase(api, key, acme, {"session_id": "erase-me"})
    assert status["status"] == "done"
    assert status["removed"]["counts"]["traces"] == 2
    assert sorted(status["removed"]["trace_ids"]) == sorted([warm, hot])
    assert "Baker" not in json.dumps(status)  # counts and ids, never content
    assert found(acme, "Baker Street") == set()
    assert found(acme, "zanzibar") == {other_hex}  # another's text stays found
    assert tier_of(acme, warm) is None and tier_of(acme, hot) is None
    assert RemovalRecord.objects.filter(tenant_id_value=acme.id, action="erasure").exists()


def test_it_erases_an_end_users_traces_by_user_id(api, acme, make_key):
    key = make_key(acme, "admin")
    mine, theirs = "1" * 32, "2" * 32
    send_user_span(acme, mine, "u-77", "platypus invoice")
    send_user_span(acme, theirs, "u-78", "wombat receipt")
    status = erase(api, key, acme, {"user_id": "u-77"})
    assert status["removed"]["trace_ids"] == [mine]
    assert found(acme, "platypus") == set() and found(acme, "wombat") == {theirs}


def test_it_erases_a_hot_trace_by_the_user_attributes_of_its_spans(api, acme, make_key):
    key = make_key(acme, "admin")
    mine, theirs = "6" * 32, "7" * 32
    send_user_span(acme, mine, "u-a", "platypus invoice")
    # A second span names another end user: only the trace's attributes say so.
    send_user_span(acme, mine, "u-b", "koala ledger", key="enduser.id", span="aaa19b7ec3c1b175")
    send_user_span(acme, theirs, "u-c", "wombat receipt", key="enduser.id")
    assert Trace.all_tenants.get(tenant=acme, trace_id=mine).user_id == "u-a"
    status = erase(api, key, acme, {"user_id": "u-b"})
    assert status["removed"]["trace_ids"] == [mine]
    assert found(acme, "koala") == set() and found(acme, "wombat") == {theirs}
    assert erase(api, key, acme, {"user_id": "u-b"})["removed"]["trace_ids"] == []


def test_it_erases_a_cold_trace_by_the_user_attributes_of_its_spans(api, acme, make_key):
    key = make_key(acme, "admin")
    assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 200
    mine, theirs = "4" * 32, "5" * 32
    send_user_span(acme, mine, "u-a", "platypus invoice")
    # A second span names another end user: the trace's user column keeps the first.
    send_user_span(acme, mine, "u-b", "koala ledger", key="enduser.id", span="aaa19b7ec3c1b175")
    send_user_span(acme, theirs, "u-c", "wombat receipt", key="enduser.id")
    started = Trace.all_tenants.get(tenant=acme, trace_id=mine).start_time
    apply(acme, days_ahead=(started - timezone.now()).total_seconds() / 86400 + 4)
    assert (tier_of(acme, mine), tier_of(acme, theirs)) == (Tier.COLD, Tier.COLD)
    row = Trace.all_tenants.get(tenant=acme, trace_id=mine)
    assert row.user_id == "u-a" and row.archive["users"] == ["u-a", "u-b"]
    # Traces archived before rows listed their users get the list from their bundle.
    Trace.all_tenants.filter(pk=row.pk).update(
        archive={k: v for k, v in row.archive.items() if k not in ("users", "span_ids")}
    )
    apply(acme, days_ahead=(started - timezone.now()).total_seconds() / 86400 + 4)
    assert Trace.all_tenants.get(pk=row.pk).archive["users"] == ["u-a", "u-b"]

    status = erase(api, key, acme, {"user_id": "u-b"})
    assert status["removed"]["trace_ids"] == [mine]
    assert tier_of(acme, mine) is None and tier_of(acme, theirs) == Tier.COLD
    assert erase(api, key, acme, {"user_id": "u-c"})["removed"]["trace_ids"] == [theirs]


def bucket_listing() -> dict[str, list[str]]:
    """Every object in the bucket (or the blob folder), listed from the store itself
    rather than through the code that deletes, keyed by the tenant prefix it sits under."""
    store = get_blob_store()
    if settings.BLOB_STORE["backend"] == "s3":
        pages = store.client.get_paginator("list_objects_v2").paginate(
            Bucket=settings.BLOB_STORE["bucket"], Prefix=store.prefix
        )
        keys = [o["Key"][len(store.prefix) :] for page in pages for o in page.get("Contents", [])]
    else:
        root = Path(settings.BLOB_STORE["root"])
        keys = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    by_tenant: dict[str, list[str]] = {}
    for key in sorted(keys):
        by_tenant.setdefault("/".join(key.split("/")[:2]), []).append(key)
    return by_tenant


def kinds(keys: list[str]) -> set[str]:
    """What each object is, by the shape of its key: payloads, the warm and cold bundles
    of retention, agent bundles."""
    out = set()
    for key in keys:
        if "/blobs/" in key:
            out.add("payload")
        elif key.endswith((".warm.zst", ".cold.zst")):
            out.add(key.rsplit(".", 2)[1])
        elif "/bundles/" in key and key.endswith((".tar.gz", ".zip")):
            out.add("agent bundle")
        else:
            out.add(key)  # a kind this test does not know: named in the failure
    return out


def test_it_deletes_a_tenant_from_every_tier_and_the_bucket(api, acme, globex, make_key):
    tenant_id = acme.id
    for tenant in (acme, globex):
        key = make_key(tenant, "admin")
        assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 200
        agent_with_bundle(tenant, name="echo", code="def main(ctx, input):\n    return input\n")
        cold = send_trace(tenant, session="a")
        age(tenant, cold, days=3)  # past hot (1) and warm (2): straight to cold
        warm = send_trace(tenant, session="b")
        age(tenant, warm, days=0.5)
        apply(tenant, days_ahead=1)
        hot = send_trace(tenant, session="c")
        # A tool result too large to keep in its row: a payload object in the bucket.
        send_user_span(tenant, hot, "u-a", secrets.token_hex(4096))
        assert [tier_of(tenant, t) for t in (cold, warm, hot)] == [Tier.COLD, Tier.WARM, Tier.HOT]
    before = bucket_listing()
    # Each tenant owns objects of every kind before: payloads, a warm and a cold bundle,
    # its agent's bundle.
    every_kind = {"payload", "warm", "cold", "agent bundle"}
    assert kinds(before[f"t/{tenant_id}"]) == every_kind
    assert kinds(before[f"t/{globex.id}"]) == every_kind
    with tenant_scope(globex):
        kept = {t.trace_id.hex for t in Trace.objects.all()}

    out = StringIO()
    call_command("delete_tenant", acme.slug, "--yes", stdout=out)
    assert "removed" in out.getvalue()

    after = bucket_listing()
    assert f"t/{tenant_id}" not in after, after.get(f"t/{tenant_id}")
    assert not [k for keys in after.values() for k in keys if f"/{tenant_id}/" in k]
    # Everything another tenant stored is still there, object for object.
    assert after == {k: v for k, v in before.items() if k != f"t/{tenant_id}"}
    for model in apps.get_models():
        if issubclass(model, TenantModel):
            left = model.all_tenants.filter(tenant_id=tenant_id).count()
            assert left == 0, f"{model.__name__} keeps {left} rows of the deleted tenant"
    record = RemovalRecord.objects.get(tenant_id_value=tenant_id, action="tenant.delete")
    assert record.counts["traces"] == 3
    # Its bundles and payload objects as they were removed, what remained (the agent's
    # bundle) when the prefix was emptied: every object it had, once.
    counts = record.counts
    assert (counts["bundles"], counts["payload_blobs"], counts["objects"]) == (2, 1, 1)
    with tenant_scope(globex):
        assert {t.trace_id.hex for t in Trace.objects.all()} == kept
        assert Payload.objects.exists()


@pytest.mark.postgres
def test_it_leaves_every_trace_readable_once_after_a_sigkill_mid_batch(api, acme, make_key):
    key = make_key(acme, "admin")
    assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 200
    traces = [send_trace(acme, session=f"s{i}", steps=1) for i in range(30)]
    expected = {t: api.get(f"/api/v1/traces/{t}", key=key).json()["spans"] for t in traces}
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(settings.DATABASES["default"]),
        "PYTHONPATH": str(ROOT),
        "RETENTION_BATCH": "4",
    }
    when = (timezone.now() + timedelta(days=1.5)).isoformat()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "apply_retention", "--tenant", acme.slug, "--as-of", when],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if Trace.all_tenants.filter(tenant=acme, tier=Tier.WARM).count() >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    moved = Trace.all_tenants.filter(tenant=acme, tier=Tier.WARM).count()
    assert 0 < moved < len(traces), "the kill landed mid-run"
    apply(acme, days_ahead=1.5)
    for trace in traces:
        assert tier_of(acme, trace) == Tier.WARM
        assert api.get(f"/api/v1/traces/{trace}", key=key).json()["spans"] == expected[trace]

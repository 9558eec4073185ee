"""Attribute filters (attr=, the model filter, an erasure's user ids): PostgreSQL reads
them from the search index's segments, SQLite from tracing_traceattribute; both find
the same traces, and no full-text query reaches an attribute."""

import importlib
import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from controlplane.tenancy import tenant_scope
from tests.billing.helpers import send
from tests.tracing.otlp import provider_for
from tracing.models import SearchBlock, Span, Trace, TraceAttribute, attribute_pair
from tracing.query.filters import TraceFilters, span_hex
from tracing.query.traces import traces_filtered
from tracing.retention.models import Tier
from tracing.search.attributes import attribute_term
from tracing.search.index import search_index_spans
from tracing.search.segments import rows_holding, segments_merge

pytestmark = pytest.mark.django_db


def _trace(tenant, *spans: dict, index: bool = True) -> str:
    """One trace of spans (attributes each; the first the root), each sent in a request
    of its own in that order, then indexed in one batch: one segment on PostgreSQL."""
    exporter = InMemorySpanExporter()
    tracer = provider_for(exporter).get_tracer("t")
    with tracer.start_as_current_span("invoke_agent", attributes=spans[0]) as root:
        trace_id = root.get_span_context().trace_id
        for attrs in spans[1:]:
            with tracer.start_as_current_span("chat", attributes=attrs):
                pass
    finished = exporter.get_finished_spans()
    for span in [finished[-1], *finished[:-1]]:  # the root ends last; send it first
        send(tenant, [span])
    trace_hex = f"{trace_id:032x}"
    if index:
        with tenant_scope(tenant):
            ids = Span.objects.filter(trace_id=uuid.UUID(trace_hex)).values_list("span_id")
            search_index_spans(
                tenant_id=tenant.id, spans=[(trace_hex, span_hex(s)) for (s,) in ids]
            )
    return trace_hex


def found(tenant, **filters) -> set[str]:
    with tenant_scope(tenant):
        return {t.trace_id.hex for t in traces_filtered(TraceFilters(**filters))}


def _segments(tenant) -> int:
    return SearchBlock.all_tenants.filter(tenant=tenant).values("segment").distinct().count()


def test_it_finds_traces_by_attribute_across_segments_and_after_a_merge(acme, globex):
    tiers = ["gold", "free", "gold", "free", "gold", "free"]
    traces = [_trace(acme, {"customer.tier": tier, "region": "eu"}) for tier in tiers]
    theirs = _trace(globex, {"customer.tier": "gold"})
    gold = {t for t, tier in zip(traces, tiers, strict=True) if tier == "gold"}
    if connection.vendor == "postgresql":
        assert _segments(acme) == 3  # six batches: four merged into one, two since
        assert TraceAttribute.all_tenants.count() == 0
    assert found(acme, attrs=[("customer.tier", "gold")]) == gold
    assert found(acme, attrs=[("customer.tier", "gold"), ("region", "eu")]) == gold
    assert found(acme, attrs=[("customer.tier", "gold"), ("region", "us")]) == set()
    assert found(acme, attrs=[("customer.tier", "silver")]) == set()
    assert found(globex, attrs=[("customer.tier", "gold")]) == {theirs}
    if connection.vendor == "postgresql":
        segments_merge(tenant_id=acme.id, everything=True)
        assert _segments(acme) == 1
    assert found(acme, attrs=[("customer.tier", "gold")]) == gold
    assert found(acme, attrs=[("customer.tier", "free")]) == set(traces) - gold


def test_it_finds_a_trace_with_attributes_and_no_text(acme):
    trace = _trace(acme, {"customer.tier": "gold"})
    assert found(acme, attrs=[("customer.tier", "gold")]) == {trace}


def test_it_matches_the_model_filter_on_any_spans_request_or_response_model(acme):
    def chat(request, response):
        return {"gen_ai.request.model": request, "gen_ai.response.model": response}

    # The first span's model is each trace's own; the others only the index knows.
    asked = _trace(acme, chat("m-first", "m-first"), chat("m-x", "m-y"))
    answered = _trace(acme, chat("m-first", "m-first"), chat("m-z", "m-x"))
    other = _trace(acme, chat("m-other", "m-other"))
    with tenant_scope(acme):
        assert set(Trace.objects.values_list("model", flat=True)) == {"m-first", "m-other"}
    assert found(acme, model="m-x") == {asked, answered}  # either key: a union
    assert found(acme, model="m-y") == {asked}
    assert found(acme, model="m-first") == {asked, answered}
    assert found(acme, model="m-other") == {other}
    assert found(acme, model="m-x", attrs=[("gen_ai.response.model", "m-x")]) == {answered}


@pytest.mark.postgres  # SQLite takes a trace's rows out when it goes cold (test_tiers.py)
def test_it_finds_no_cold_or_removed_trace_and_a_merge_drops_them(acme):
    kept, cold, gone = (_trace(acme, {"customer.tier": "gold"}) for _ in range(3))
    Trace.all_tenants.filter(trace_id=cold).update(tier=Tier.COLD)
    rows = dict(Trace.all_tenants.filter(tenant=acme).values_list("trace_id", "id"))
    Trace.all_tenants.filter(trace_id=gone).delete()
    assert found(acme, attrs=[("customer.tier", "gold")]) == {kept}
    term = attribute_term(attribute_pair("customer.tier", "gold"))
    assert len(rows_holding(tenant_id=acme.id, terms=[term])) == 3  # until a merge
    segments_merge(tenant_id=acme.id, everything=True)
    assert rows_holding(tenant_id=acme.id, terms=[term]) == [rows[uuid.UUID(kept)]]
    assert found(acme, attrs=[("customer.tier", "gold")]) == {kept}


def test_it_never_matches_an_attribute_by_full_text(acme):
    pair = attribute_pair("customer.tier", "gold")
    term = attribute_term(pair)
    tagged = _trace(acme, {"customer.tier": "gold"})
    # A text spelling the attribute's term, control character and all.
    spelled = _trace(acme, {"gen_ai.tool.call.result": f"see {term} and \x01{term[1:5]}"})
    assert found(acme, attrs=[("customer.tier", "gold")]) == {tagged}
    hex_digits = term[1:]
    assert found(acme, q=term) == {spelled}  # the digits are a word of the text
    for hostile in (term, "\x01", "\x01\x00" + hex_digits, f"\x01{hex_digits[:4]}", "\x01 gold"):
        assert tagged not in found(acme, q=hostile + " see"), repr(hostile)
    if connection.vendor == "postgresql":
        from tracing.search.fulltext import _lexemes

        # Even given the control characters, the tokeniser drops them.
        lexemes = _lexemes([term, "\x01", "\x01\x02x", f"\x01{hex_digits[:4]}\x1b[0m"])
        assert lexemes and not any(lexeme.startswith("\x01") for lexeme in lexemes)


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


@pytest.mark.django_db(transaction=True)
def test_the_migration_moves_attribute_rows_into_segments(acme, globex, monkeypatch):
    migration = importlib.import_module("tracing.migrations.0030_trace_attributes_in_segments")
    monkeypatch.setattr(migration, "CHUNK", 2)  # several segments a tenant
    postgres = connection.vendor == "postgresql"
    _migrate(("tracing", "0029_span_columns_aligned"))
    try:
        ours = [_trace(acme, {"gen_ai.operation.name": "chat"}, index=False) for _ in range(3)]
        theirs = _trace(globex, {"gen_ai.operation.name": "chat"}, index=False)
        gold, eu = attribute_pair("customer.tier", "gold"), attribute_pair("region", "eu")
        rows = [TraceAttribute(tenant=acme, pair=gold, trace_id=t) for t in ours]
        rows += [
            TraceAttribute(tenant=acme, pair=eu, trace_id=ours[0]),
            TraceAttribute(tenant=globex, pair=gold, trace_id=theirs),
            # A trace removed since: nothing to move.
            TraceAttribute(tenant=acme, pair=gold, trace_id=uuid.uuid4()),
        ]
        if postgres:  # a cold trace's rows, as PostgreSQL may have kept them
            cold = _trace(acme, {"gen_ai.operation.name": "chat"}, index=False)
            Trace.all_tenants.filter(trace_id=cold).update(tier=Tier.COLD)
            rows.append(TraceAttribute(tenant=acme, pair=gold, trace_id=cold))
        TraceAttribute.all_tenants.bulk_create(rows)
    finally:
        _migrate(("tracing", "0030_trace_attributes_in_segments"))
    assert found(acme, attrs=[("customer.tier", "gold")]) == set(ours)
    assert found(acme, attrs=[("customer.tier", "gold"), ("region", "eu")]) == {ours[0]}
    assert found(globex, attrs=[("customer.tier", "gold")]) == {theirs}
    if postgres:
        assert TraceAttribute.all_tenants.count() == 0
        assert _segments(acme) == 2  # four rows moved, two a segment
        term = attribute_term(gold)
        ids = dict(Trace.all_tenants.values_list("trace_id", "id"))
        assert rows_holding(tenant_id=acme.id, terms=[term]) == sorted(
            ids[uuid.UUID(t)] for t in ours
        )  # the cold trace was not moved
    else:
        assert TraceAttribute.all_tenants.count() == len(rows)

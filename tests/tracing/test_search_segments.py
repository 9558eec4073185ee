"""PostgreSQL's inverted index: prefixes found across blocks and segments, merges that
keep every posting of a searched trace and drop the others."""

import uuid

import pytest
from django.utils import timezone

from tracing.models import SearchBlock, Trace
from tracing.retention.models import Tier
from tracing.search import segments
from tracing.search.segments import rows_matching, segment_add, segments_merge

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def traces(tenant, n: int) -> list[int]:
    now = timezone.now()
    return [
        Trace.all_tenants.create(
            tenant=tenant, trace_id=uuid.uuid4(), start_time=now, end_time=now, start_ns=0, end_ns=0
        ).id
        for _ in range(n)
    ]


def found(tenant, *prefixes: str) -> list[int]:
    return rows_matching(tenant_id=tenant.id, prefixes=list(prefixes))


def test_it_finds_prefixes_across_blocks_segments_and_merges(acme, globex, monkeypatch):
    monkeypatch.setattr(segments, "BLOCK_POSTINGS", 2)  # a block every term or two
    monkeypatch.setattr(segments, "FANOUT", 3)
    a, b, c, d = traces(acme, 4)
    (theirs,) = traces(globex, 1)
    phantom = 2**40 + 7  # a row id no trace has (removed since): the search's join drops it
    batches = [
        {a: {"refund", "réfund", "order4471"}, b: {"refunded", "parcel"}},
        {c: {"ref", "parcel", "zebra"}, phantom: {"refund"}},
        {a: {"refund", "parcel"}},  # a redelivered or later batch of a trace
        {d: {"refunds", "zebra"}},
    ]
    segment_add(tenant_id=globex.id, terms_by_row={theirs: {"refund", "parcel"}})
    for batch in batches[:2]:
        segment_add(tenant_id=acme.id, terms_by_row=batch)
    assert found(acme, "ref") == [a, b, c, phantom]
    assert found(acme, "refund", "parc") == [b]  # a is yet to send its parcel
    assert found(acme, "réf") == [a] and found(acme, "order44") == [a]
    assert found(acme, "zebra", "refund") == [] and found(acme, "q") == []
    for batch in batches[2:]:  # the third segment: merged into one
        segment_add(tenant_id=acme.id, terms_by_row=batch)
    levels = set(SearchBlock.all_tenants.filter(tenant=acme).values_list("segment", "level"))
    assert {level for _, level in levels} == {0, 1}
    assert found(acme, "refund") == [a, b, d]  # the phantom merged away
    assert found(acme, "parcel") == [a, b, c] and found(acme, "zebra") == [c, d]
    assert found(globex, "refund") == [theirs]


def test_a_merge_drops_traces_gone_or_cold_and_keeps_warm_ones(acme):
    hot, warm, cold, gone = traces(acme, 4)
    segment_add(tenant_id=acme.id, terms_by_row={r: {"platypus"} for r in (hot, warm, cold)})
    segment_add(tenant_id=acme.id, terms_by_row={gone: {"platypus"}, hot: {"wombat"}})
    Trace.all_tenants.filter(id=warm).update(tier=Tier.WARM)
    Trace.all_tenants.filter(id=cold).update(tier=Tier.COLD)
    Trace.all_tenants.filter(id=gone).delete()
    assert segments_merge(tenant_id=acme.id, everything=True) == 1
    assert found(acme, "platypus") == [hot, warm] and found(acme, "wombat") == [hot]
    assert SearchBlock.all_tenants.filter(tenant=acme).values("segment").distinct().count() == 1

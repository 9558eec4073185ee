"""Full-text search matches a trace when its texts hold every term between them, on
both backends; a late span's texts join its trace; a removed trace's terms leave."""

import json

import pytest
from django.db import connection

from controlplane.tenancy import tenant_scope
from tests.tracing.test_otlp_http import one_span_request
from tracing.ingest.decode import decode_request
from tracing.ingest.pipeline import spans_ingest
from tracing.models import Trace
from tracing.query.filters import TraceFilters
from tracing.query.traces import traces_filtered
from tracing.retention.tiers import trace_remove
from tracing.search.index import search_index_spans
from tracing.search.segments import rows_matching, segments_merge

pytestmark = pytest.mark.django_db

MINE, THEIRS = "a1" * 16, "b2" * 16


def send_span(tenant, trace_hex: str, span_hex: str, words: str) -> None:
    doc = one_span_request(trace_hex, span_hex, **{"gen_ai.tool.call.result": words})
    spans_ingest(
        tenant_id=tenant.id, request=decode_request(json.dumps(doc).encode(), "application/json")
    )
    with tenant_scope(tenant):
        search_index_spans(tenant_id=tenant.id, spans=[(trace_hex, span_hex)])


def found(tenant, words: str) -> set[str]:
    with tenant_scope(tenant):
        return {t.trace_id.hex for t in traces_filtered(TraceFilters(q=words))}


def test_it_matches_terms_spread_over_a_traces_texts(acme, globex):
    send_span(acme, MINE, "1" * 16, "platypus invoice")
    send_span(acme, MINE, "2" * 16, "wombat receipt")
    send_span(acme, THEIRS, "3" * 16, "platypus receipt")
    send_span(globex, "c3" * 16, "4" * 16, "platypus wombat")
    assert found(acme, "platypus wombat") == {MINE}  # in two of its texts
    assert found(acme, "platy rece") == {MINE, THEIRS}
    assert found(acme, "invoice wombat receipt") == {MINE}
    assert found(acme, "invoice zebra") == set()


def test_it_adds_a_late_spans_texts_to_its_trace_and_can_run_twice(acme):
    send_span(acme, MINE, "1" * 16, "platypus invoice")
    assert found(acme, "platypus") == {MINE} and found(acme, "kangaroo") == set()
    send_span(acme, MINE, "2" * 16, "kangaroo parcel")  # another batch, later
    assert found(acme, "platypus kangaroo") == {MINE}
    with tenant_scope(acme):
        search_index_spans(tenant_id=acme.id, spans=[(MINE, "1" * 16), (MINE, "2" * 16)])
    assert found(acme, "invoice parcel") == {MINE}


def test_it_takes_a_removed_traces_terms_out(acme):
    send_span(acme, MINE, "1" * 16, "platypus invoice")
    send_span(acme, MINE, "2" * 16, "kangaroo parcel")
    send_span(acme, THEIRS, "3" * 16, "platypus receipt")
    with tenant_scope(acme):
        removed = trace_remove(tenant_id=acme.id, trace=Trace.objects.get(trace_id=MINE))
    assert removed.search_documents == 1
    assert found(acme, "platypus") == {THEIRS}
    assert found(acme, "kangaroo") == found(acme, "invoice") == set()
    if connection.vendor == "sqlite":  # the postings themselves are gone, not just hidden
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT rowid FROM tracing_searchtrace WHERE tracing_searchtrace MATCH %s",
                ['"kangaroo" OR "invoice" OR "platypus"'],
            )
            assert cursor.fetchall() == [(Trace.all_tenants.get(trace_id=THEIRS).id,)]
    else:  # a merge drops them
        segments_merge(tenant_id=acme.id, everything=True)
        theirs = Trace.all_tenants.get(trace_id=THEIRS).id
        assert rows_matching(tenant_id=acme.id, prefixes=["platypus"]) == [theirs]
        assert rows_matching(tenant_id=acme.id, prefixes=["kangaroo"]) == []
    send_span(acme, MINE, "5" * 16, "kangaroo again")  # the same trace id, a new row
    assert found(acme, "kangaroo") == {MINE} and found(acme, "invoice") == set()


def test_a_trace_of_many_distinct_words_keeps_every_term(acme):
    """A long trace of distinct words (code, identifiers, hashes) holds more terms than
    a tsvector could (1 MB): every one of them is found, and so are the traces indexed
    in the same batch."""
    import random
    import string

    rng = random.Random(20)

    def words(n: int) -> str:
        return " ".join("".join(rng.choices(string.ascii_lowercase, k=10)) for _ in range(n))

    first = "platypus " + words(9000)
    send_span(acme, MINE, "1" * 16, first)
    for n in range(2, 13):
        send_span(acme, MINE, f"{n:016x}", words(9000))
    assert found(acme, "platypus") == {MINE}
    last = words(9000)
    doc = one_span_request(THEIRS, "f" * 16, **{"gen_ai.tool.call.result": "wombat receipt"})
    late = one_span_request(MINE, "e" * 16, **{"gen_ai.tool.call.result": last})
    for request in (doc, late):
        spans_ingest(
            tenant_id=acme.id,
            request=decode_request(json.dumps(request).encode(), "application/json"),
        )
    with tenant_scope(acme):
        search_index_spans(tenant_id=acme.id, spans=[(MINE, "e" * 16), (THEIRS, "f" * 16)])
    assert found(acme, "wombat receipt") == {THEIRS}
    assert found(acme, "platypus") == {MINE}
    assert found(acme, f"{first.split()[-1]} {last.split()[-1]}") == {MINE}

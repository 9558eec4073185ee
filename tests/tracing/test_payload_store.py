"""Messages are stored once: a conversation resent on every step grows storage linearly."""

import pytest
from django.db.models import Count, Sum
from django.db.models.functions import Length

from controlplane import tenantcache
from controlplane.blobstore import get_blob_store
from controlplane.tenancy import tenant_scope
from tests.factories import TenantFactory
from tests.tracing.otlp import agent_trace, ingest_in_batches, provider_for
from tracing import selectors
from tracing.exporter import InProcessSpanExporter
from tracing.ingest.payloads import blob_key
from tracing.models import Payload, PayloadKind, Span


def stored(tenant, steps: int) -> dict:
    provider = provider_for(InProcessSpanExporter(tenant.id))
    agent_trace(provider, steps=steps)
    provider.shutdown()
    with tenant_scope(tenant):
        rows = Payload.objects.values("kind").annotate(n=Count("digest"), size=Sum(Length("data")))
        return {r["kind"]: (r["n"], r["size"]) for r in rows}


@pytest.mark.django_db(transaction=True)
def test_it_grows_with_the_conversation_not_its_square():
    short = stored(TenantFactory(), steps=8)
    long = stored(TenantFactory(), steps=32)
    # Four times the steps: about four times the messages and lists, not sixteen.
    for kind in (PayloadKind.MESSAGE, PayloadKind.LIST):
        assert long[kind][0] <= 4 * short[kind][0] + 2
        assert long[kind][1] <= 4.5 * short[kind][1]


@pytest.mark.django_db(transaction=True)
def test_it_reads_back_every_step_of_a_long_conversation(acme):
    provider = provider_for(InProcessSpanExporter(acme.id))
    _, conversation = agent_trace(provider, steps=12)
    provider.shutdown()
    tenantcache.reset()  # read from the database and blob store, not from memory
    with tenant_scope(acme):
        chats = list(Span.objects.filter(labels__operation="chat").order_by("start_ns"))
        for step, chat in enumerate(chats):
            messages = selectors.span_detail(span=chat)["input_messages"]
            assert messages[1:] == conversation[1 : 2 * step + 1]


@pytest.mark.django_db(transaction=True)
def test_it_keeps_large_payloads_in_the_blob_store_per_tenant(acme, globex):
    import base64
    import json
    import random

    from tests.tracing.test_otlp_http import one_span_request
    from tracing.ingest.decode import decode_request
    from tracing.ingest.pipeline import spans_ingest

    # Does not compress to 1 KiB; seeded, so the same text every run.
    noise = base64.b64encode(random.Random(5).randbytes(1800)).decode()
    body = json.dumps(
        one_span_request(
            "5b8efff798038103d269b633813fc60c",
            "eee19b7ec3c1b174",
            **{"gen_ai.tool.call.result": noise},
        )
    ).encode()
    for tenant in (acme, globex):
        spans_ingest(tenant_id=tenant.id, request=decode_request(body, "application/json"))
    with tenant_scope(acme):
        payload = Payload.objects.get(data__isnull=True)
        span = Span.objects.get()
        assert selectors.span_detail(span=span)["tool_call_result"] == noise
    with tenant_scope(globex):
        other = Payload.objects.get(data__isnull=True)
    # Same text, two tenants: two copies under two prefixes, with unrelated digests.
    assert payload.digest != other.digest
    assert get_blob_store().exists(blob_key(acme.id, payload.digest))
    assert blob_key(acme.id, payload.digest).startswith(f"t/{acme.id}/blobs/")


@pytest.mark.django_db(transaction=True)
def test_it_trains_a_tenant_dictionary_and_still_reads_older_payloads(acme):
    from tracing.ingest import dictionaries
    from tracing.models import PayloadDictionary

    provider = provider_for(InProcessSpanExporter(acme.id))
    _, first = agent_trace(provider, steps=2)  # too little to train on
    with tenant_scope(acme):
        assert not PayloadDictionary.objects.exists()
    agent_trace(provider, steps=120)  # enough samples: dictionaries are trained
    provider.shutdown()
    purposes = PayloadDictionary.Purpose
    with tenant_scope(acme):
        trained = dict(PayloadDictionary.objects.values_list("purpose", "serial"))
    assert sorted(trained) == [purposes.PAYLOAD, purposes.SPAN_DETAIL]
    assert sorted(trained.values()) == [1, 2]
    tenantcache.reset()
    with tenant_scope(acme):
        chats = list(Span.objects.filter(labels__operation="chat").order_by("start_ns"))
        assert selectors.span_detail(span=chats[1])["input_messages"][1:] == first[1:3]
        assert len(selectors.span_detail(span=chats[-1])["input_messages"]) == 2 * 120 - 1
        # Span details from before the detail dictionary are JSON; later ones are frames.
        assert bytes(chats[0].detail_packed)[:1] == b"{"
        compact = dictionaries.COMPACT | trained[purposes.SPAN_DETAIL]
        assert bytes(chats[-1].detail_packed)[0] == compact
        assert stored_refs(chats[-1])["in"] and stored_refs(chats[0])["in"]


@pytest.mark.django_db(transaction=True)
def test_it_trains_a_tenants_first_dictionary_once_when_workers_offer_at_once(acme, monkeypatch):
    """Web workers are processes: each has its own samples and its own lock, so only the
    tenant's turn in the database keeps them from storing a dictionary each."""
    import contextlib
    import threading
    import time

    import zstandard
    from django.db import connection

    from tracing.ingest import dictionaries
    from tracing.models import PayloadDictionary

    monkeypatch.setattr(dictionaries, "_lock", contextlib.nullcontext())  # as if two processes
    real_train = zstandard.train_dictionary

    calls = []

    def slow_train(*args, **kwargs):
        # Slow, and slower for a second caller: without the tenant's turn both workers
        # would train at once, the second finishing after the first stored its own.
        calls.append(1)
        time.sleep(0.3 * len(calls))
        return real_train(*args, **kwargs)

    monkeypatch.setattr(zstandard, "train_dictionary", slow_train)
    serials = []

    def worker(n):
        samples = [
            f"order {i} of worker {n}, to warehouse {i % 7} on day {i % 30}".encode() * 8
            for i in range(400)
        ]  # each worker its own traffic
        try:
            serials.append(dictionaries.train(acme.id, samples))
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert serials == [1, 1]
    with tenant_scope(acme):
        assert PayloadDictionary.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_batch_that_trains_the_detail_dictionary_is_stored_with_it(acme):
    from tracing.ingest import dictionaries

    spans, _, _ = recorded(steps=120)
    ingest_in_batches(acme, spans, [])  # one batch, enough to train on
    with tenant_scope(acme):
        heads = {bytes(d)[0] for d in Span.objects.values_list("detail_packed", flat=True)}
    assert heads == {dictionaries.COMPACT | 2}  # the payload dictionary is serial 1


@pytest.mark.django_db
def test_it_reads_every_stored_body_form(acme):
    """Bodies kept as they are, standard zstd frames (written before compact frames)
    and compact frames all read back."""
    import zstandard

    from tracing.ingest import dictionaries

    samples = [f"s{i} the order of {i * 7} parcels for user {i % 13}".encode() for i in range(400)]
    serial = dictionaries.train(acme.id, samples)
    body = b"s" + b" ".join(samples[:40])
    standard = zstandard.ZstdCompressor(
        dict_data=dictionaries._load(acme.id, "serial", serial)
    ).compress(body)
    compact = dictionaries.Packer(acme.id, dictionaries.Purpose.PAYLOAD, serial).pack(body)
    plain = dictionaries.Packer(acme.id, dictionaries.Purpose.PAYLOAD, None).pack(body)
    assert standard[:4] == dictionaries.ZSTD_MAGIC
    assert compact[0] == dictionaries.COMPACT | serial and len(compact) < len(standard)
    assert plain[0] == dictionaries.COMPACT  # no dictionary
    tenantcache.reset()
    for stored in (body, standard, compact, plain):
        assert dictionaries.unpack(acme.id, stored) == body
    tiny = dictionaries.Packer(acme.id, dictionaries.Purpose.PAYLOAD, serial).pack(b"sok")
    assert tiny == b"sok"  # a frame would be larger: kept as it is


def recorded(**trace):
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = provider_for(memory)
    trace_id, conversation = agent_trace(provider, **trace)
    provider.shutdown()
    return list(memory.get_finished_spans()), trace_id, conversation


def stored_refs(span) -> dict:
    return selectors.span_stored_detail(span=span)["refs"]


def list_rows() -> int:
    return Payload.objects.filter(kind__in=(PayloadKind.LIST, PayloadKind.SPAN_LIST)).count()


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_batchs_conversation_in_its_chat_spans(acme):
    """Inside a batch each chat span's input is its predecessor's input and output plus
    what is new: no list row a step, only where a later batch or trace goes on."""
    from tracing.query.sessions import session_conversation, session_traces

    spans, _, conversation = recorded(steps=12, session="conv-batches")
    ingest_in_batches(acme, spans, [7, 10])  # chains that cross batches, mid-step too
    later, _, again = recorded(steps=3, session="conv-batches")  # resends from the start
    ingest_in_batches(acme, later, [])
    tenantcache.reset()
    with tenant_scope(acme):
        chats = list(Span.objects.filter(labels__operation="chat").order_by("start_ns"))
        for step, chat in enumerate(chats[:12]):
            messages = selectors.span_detail(span=chat)["input_messages"]
            assert messages[1:] == conversation[1 : 2 * step + 1]
        assert [selectors.span_detail(span=c)["input_messages"][1:] for c in chats[12:]] == [
            again[1 : 2 * step + 1] for step in range(3)
        ]
        forms = [stored_refs(c)["in"] for c in chats[:12]]
        assert sum(isinstance(f, dict) and "p" in f for f in forms) >= 8
        # One list row per trace and batch (four batches), not one a step.
        assert list_rows() <= 4
        # The session shows the first trace's conversation (up to its last reply) once.
        shown = session_conversation(traces=session_traces(session_id="conv-batches"))
        assert shown[0]["messages"][1:] == conversation[1 : 2 * 12]


@pytest.mark.django_db(transaction=True)
def test_it_chains_a_batch_whose_later_steps_come_first(acme):
    spans, _, conversation = recorded(steps=5)
    ingest_in_batches(acme, list(reversed(spans)), [])
    tenantcache.reset()
    with tenant_scope(acme):
        chats = list(Span.objects.filter(labels__operation="chat").order_by("start_ns"))
        assert all("p" in stored_refs(c)["in"] for c in chats[1:])
        for step, chat in enumerate(chats):
            messages = selectors.span_detail(span=chat)["input_messages"]
            assert messages[1:] == conversation[1 : 2 * step + 1]
        assert list_rows() == 1


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_list_two_traces_share_in_one_batch_as_a_row(acme):
    first, _, conversation = recorded(steps=3)
    second, _, _ = recorded(steps=3)  # the same conversation, another trace
    ingest_in_batches(acme, first + second, [])
    tenantcache.reset()
    with tenant_scope(acme):
        chats = list(Span.objects.filter(labels__operation="chat").order_by("start_ns"))
        assert len(chats) == 6
        for chat in chats:
            assert isinstance(stored_refs(chat)["in"], str)  # stored once, as a row
            messages = selectors.span_detail(span=chat)["input_messages"]
            assert messages[1:] == conversation[1 : len(messages)]


@pytest.mark.django_db(transaction=True)
def test_it_indexes_messages_held_in_chat_spans(acme):
    from django.db import connection

    from tracing.search.fulltext import traces_matching_sql
    from tracing.search.index import search_index_spans

    spans, _, _ = recorded(steps=6)
    ingest_in_batches(acme, spans, [])
    last_chat = [s for s in spans if s.name.startswith("chat")][-1]
    with tenant_scope(acme):
        # Only the last chat span: the user's question reaches the index through its
        # input, a chain back through every chat span of the batch.
        assert isinstance(stored_refs(Span.objects.get(span_id=_signed(last_chat)))["in"], dict)
        search_index_spans(
            tenant_id=acme.id,
            spans=[(f"{last_chat.context.trace_id:032x}", f"{last_chat.context.span_id:016x}")],
        )
        sql, params = traces_matching_sql(acme.id, "where is my order")
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            assert cursor.fetchall()


def _signed(span) -> int:
    return int.from_bytes(span.context.span_id.to_bytes(8, "big"), "big", signed=True)

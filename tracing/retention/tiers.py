"""Moving one trace between tiers, and collecting the payloads nothing reads any more.

Each move is built and verified before anything is removed, and switches the trace's
tier in one transaction, so a move killed at any point leaves the trace readable in
exactly one place (see README.md):

    hot ─▶ warm   pack spans + payloads → put bundle → read back, sha256 → one
                  transaction: tier, archive, lists other traces continue made whole,
                  span rows deleted
    warm ─▶ cold  copy the bundle with the cold storage class → read back, sha256,
                  class → tier and key in one transaction → old object deleted
    any ─▶ gone   tier DELETING (unreadable) → search entries, journal, costs, spans,
                  bundle → the trace row; a DELETING trace is finished by the next run
"""

import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from billing.models import SpanCost
from controlplane.blobstore import BlobNotFound, get_blob_store
from controlplane.models import Tenant
from execution.models import Run
from replay.services import run_journal_delete
from tracing.ingest.payloads import INLINE_MAX, blob_key
from tracing.ingest.rows import uuid_param, write_turn
from tracing.models import Payload, PayloadKind, Span, Trace
from tracing.retention.bundles import (
    bundle_key,
    bundle_pack,
    bundle_unpack,
    bundle_verified,
    is_list_of_other_trace,
    list_body,
    sha256,
)
from tracing.retention.models import USER_KEYS, Tier, TraceMark
from tracing.search.index import search_traces_forget
from tracing.selectors import Conversations, PayloadReader, span_stored_detail


@dataclass
class Closure:
    """What reading a set of spans touches: payload rows (digest -> kind, body) and
    the conversations walked through them."""

    reader: PayloadReader
    conversations: Conversations
    spans: list[Span] = field(default_factory=list)


def spans_closure(*, tenant_id: int, spans: list[Span], reader=None) -> Closure:
    """Every payload the spans read: their values, origins, messages (with their long
    strings) and the stored lists their conversations go through."""
    reader = reader or PayloadReader(tenant_id)
    conversations = Conversations(reader)
    refs_of, direct = {}, []
    for span in spans:
        detail = span_stored_detail(span=span)
        refs = detail.get("refs", {})
        refs_of[(span.trace_id, span.span_id)] = refs
        if detail.get("origin"):
            direct.append(detail["origin"])
        for key, ref in refs.items():
            if key == "out":
                direct.extend(ref)
            elif key != "in" and isinstance(ref, str):
                direct.append(ref)
    inputs = conversations.inputs(refs_of)
    reader.prefetch(direct + [d for messages in inputs.values() for d in messages])
    return Closure(reader=reader, conversations=conversations, spans=spans)


def _span_rows(trace_id: uuid.UUID) -> list[Span]:
    return list(Span.objects.filter(trace_id=trace_id).order_by("start_ns", "span_id"))


def archive_lists(spans: list[Span], reader: PayloadReader) -> dict:
    """What an archived trace's row lists so it is found without opening its bundle:
    its span ids (a span asked for without its trace) and the end users its spans or
    their resources name (an erasure by user id, once its search links are gone)."""
    users: set[str] = set()
    for span in spans:
        detail = span_stored_detail(span=span)
        attributes = dict(detail.get("attributes") or {})
        if detail.get("origin"):
            try:
                origin = reader.value(detail["origin"])
            except KeyError:
                origin = {}
            resource = origin.get("resource") if isinstance(origin, dict) else None
            attributes.update(resource if isinstance(resource, dict) else {})
        for key in USER_KEYS:
            value = attributes.get(key)
            if isinstance(value, str | int) and not isinstance(value, bool) and value != "":
                users.add(str(value)[:255])
    return {"span_ids": sorted({span.span_id for span in spans}), "users": sorted(users)}


def _bundle_of(tenant_id: int, trace: Trace) -> tuple[bytes, dict, Closure]:
    spans = _span_rows(trace.trace_id)
    closure = spans_closure(tenant_id=tenant_id, spans=spans)
    payloads = dict(closure.reader.rows)
    for digest, (kind, body) in list(payloads.items()):
        if is_list_of_other_trace(kind, body, trace.trace_id):
            items = closure.conversations.of_list(digest)
            payloads[digest] = (PayloadKind.LIST, list_body(items))
    data = bundle_pack(trace_id=trace.trace_id, spans=spans, payloads=payloads)
    listed = archive_lists(spans, closure.reader)
    return data, {"spans": len(spans), "payloads": len(payloads), **listed}, closure


def archive_listed(*, tenant_id: int, trace: Trace) -> None:
    """Give an archived trace's row the lists `archive_lists` makes, read from its
    bundle: traces archived before the row kept them."""
    bundle = bundle_unpack(tenant_id=tenant_id, data=get_blob_store().get(trace.archive["key"]))
    reader = PayloadReader(tenant_id)
    reader.archived.append(bundle.payloads)
    archive = {**trace.archive, **archive_lists(bundle.spans, reader)}
    Trace.objects.filter(pk=trace.pk, tier=trace.tier).update(archive=archive)


# Written as the partial index payload_span_list_trace is (migration 0023), the kind a
# literal: SQLite uses such an index only for the very same expression.
# Set in Trace.archive by a move to cold, taken off once the trace's texts have left
# search: a move killed in between is found by it on both backends (SQLite keeps no
# link rows to find it by).
SEARCH_LISTED = "search_listed"
# Set on a DELETING trace's row with the removal of its search entries, so a removal
# resumed after them does not remove them again.
SEARCH_FORGOTTEN = "search_forgotten"

_HELD_LISTS = (
    "SELECT digest FROM tracing_payload WHERE tenant_id = %s "  # noqa: S608 - a constant
    f"AND kind = {int(PayloadKind.SPAN_LIST)} AND substr(data, 1, 16) = %s"
)


def _lists_held_by(tenant_id: int, trace_id: uuid.UUID) -> dict[str, bytes]:
    """The SPAN_LIST payloads held by spans of the trace (other traces may continue
    them), each as the LIST body it stands for: the spans are about to go."""
    with connection.cursor() as cursor:
        cursor.execute(_HELD_LISTS, [tenant_id, trace_id.bytes])
        field_ = Payload._meta.get_field("digest")
        digests = [field_.to_python(row[0]) for row in cursor.fetchall()]
    if not digests:
        return {}
    conversations = Conversations(PayloadReader(tenant_id))
    return {d: list_body(conversations.of_list(d)) for d in digests}


def _delete_spans(tenant_id: int, trace_id: uuid.UUID) -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "DELETE FROM tracing_span WHERE tenant_id = %s AND trace_id = %s",
            [tenant_id, uuid_param(trace_id)],
        )
        return cursor.rowcount


def trace_archive(*, tenant_id: int, trace: Trace, tier: int) -> bool:
    """Hot to warm (or straight to cold). False if the trace was no longer hot."""
    storage_class = settings.RETENTION_COLD_STORAGE_CLASS if tier == Tier.COLD else None
    data, counts, closure = _bundle_of(tenant_id, trace)
    key = bundle_key(tenant_id, trace.trace_id, tier)
    store = get_blob_store()
    store.put(key, data, storage_class=storage_class)
    checksum = sha256(data)
    bundle_verified(tenant_id=tenant_id, key=key, expected=checksum, storage_class=storage_class)
    held = _lists_held_by(tenant_id, trace.trace_id)
    # Lists too long for a row go to the blob store first, as ingest does.
    bodies = {}
    for digest, body in held.items():
        if len(body) > INLINE_MAX:
            store.put(blob_key(tenant_id, digest), body)
            bodies[digest] = None
        else:
            bodies[digest] = body
    archive = {
        "key": key,
        "sha256": checksum,
        "bytes": len(data),
        "storage_class": storage_class or "STANDARD",
        **counts,
    }
    if tier == Tier.COLD:
        archive[SEARCH_LISTED] = True
    with transaction.atomic():
        if Trace.objects.filter(pk=trace.pk, tier=Tier.HOT).update(tier=tier, archive=archive) != 1:
            return False
        for digest, body in bodies.items():
            Payload.objects.filter(digest=digest, kind=PayloadKind.SPAN_LIST).update(
                kind=PayloadKind.LIST, data=body
            )
        _delete_spans(tenant_id, trace.trace_id)
    if tier == Tier.COLD:
        _forget_text(tenant_id, trace, closure.spans, closure.reader)
    return True


def _forget_text(tenant_id: int, trace: Trace, spans: list[Span], reader: PayloadReader) -> int:
    """A cold trace is listed by its summary only: its texts and attributes leave the
    search index (the bundle keeps them). The mark the move left comes off last, so a
    move killed in between is finished by the next run (job.py)."""
    # The removal and the mark's coming off commit together: SQLite's contentless index
    # told again to delete terms it deleted refuses ('database disk image is
    # malformed'), so a move killed after the removal must not find the mark still on.
    with write_turn(), transaction.atomic():
        forgotten = search_traces_forget(
            tenant_id=tenant_id, trace_ids=[trace.trace_id], spans=spans, reader=reader
        )
        row = Trace.objects.filter(pk=trace.pk).only("archive").first()
        if row is not None and row.archive and SEARCH_LISTED in row.archive:
            archive = {k: v for k, v in row.archive.items() if k != SEARCH_LISTED}
            Trace.objects.filter(pk=trace.pk).update(archive=archive)
    return forgotten


def trace_chill(*, tenant_id: int, trace: Trace) -> bool:
    """Warm to cold: the bundle copied into the cold storage class, verified, switched."""
    storage_class = settings.RETENTION_COLD_STORAGE_CLASS
    archive = dict(trace.archive)
    source = archive["key"]
    target = bundle_key(tenant_id, trace.trace_id, Tier.COLD)
    store = get_blob_store()
    store.copy(source, target, storage_class=storage_class)
    data = bundle_verified(
        tenant_id=tenant_id, key=target, expected=archive["sha256"], storage_class=storage_class
    )
    archive.update(key=target, storage_class=storage_class, stale=source)
    archive[SEARCH_LISTED] = True
    with transaction.atomic():
        if (
            Trace.objects.filter(pk=trace.pk, tier=Tier.WARM).update(
                tier=Tier.COLD, archive=archive
            )
            != 1
        ):
            return False
    _unlist(tenant_id, trace, data)
    stale_delete(trace_pk=trace.pk)
    return True


def _unlist(tenant_id: int, trace: Trace, data: bytes) -> int:
    bundle = bundle_unpack(tenant_id=tenant_id, data=data)
    reader = PayloadReader(tenant_id)
    reader.archived.append(bundle.payloads)
    return _forget_text(tenant_id, trace, bundle.spans + _span_rows(trace.trace_id), reader)


def trace_unlist(*, tenant_id: int, trace: Trace) -> int:
    """Take a cold trace's texts out of search (finishing a move killed before it)."""
    return _unlist(tenant_id, trace, get_blob_store().get(trace.archive["key"]))


def stale_delete(*, trace_pk: int) -> None:
    """Delete a moved bundle's old object, once its new one is the trace's."""
    trace = Trace.objects.filter(pk=trace_pk).only("archive").first()
    if trace is None or not trace.archive or "stale" not in trace.archive:
        return
    get_blob_store().delete([trace.archive["stale"]])
    archive = {k: v for k, v in trace.archive.items() if k != "stale"}
    Trace.objects.filter(pk=trace_pk).update(archive=archive)


@dataclass
class Removed:
    traces: int = 0
    spans: int = 0
    search_documents: int = 0
    journal_steps: int = 0
    bundles: int = 0
    trace_ids: list = field(default_factory=list)

    def add(self, other: "Removed") -> None:
        for name in ("traces", "spans", "search_documents", "journal_steps", "bundles"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.trace_ids += other.trace_ids

    def counts(self) -> dict:
        return {
            "traces": self.traces,
            "spans": self.spans,
            "search_documents": self.search_documents,
            "journal_steps": self.journal_steps,
            "bundles": self.bundles,
        }


def trace_remove(*, tenant_id: int, trace: Trace) -> Removed:
    """Delete a trace from every tier: search entries, its run's journal, its span
    costs, its span rows and bundle, then its row. Its payloads go with the next
    collection, when nothing else reads them."""
    Trace.objects.filter(pk=trace.pk).update(tier=Tier.DELETING)
    removed = Removed(trace_ids=[trace.trace_id.hex])
    reader = PayloadReader(tenant_id)
    spans = _span_rows(trace.trace_id)
    archive = trace.archive or {}
    if archive.get("key"):
        try:
            data = get_blob_store().get(archive["key"])
        except BlobNotFound:
            data = None  # a removal resumed after the bundle went (so did its search entries)
        if data is not None:
            bundle = bundle_unpack(tenant_id=tenant_id, data=data)
            reader.archived.append(bundle.payloads)
            spans += bundle.spans
    # A cold trace's bundled texts left search at the move; SQLite's contentless index
    # must not be told to delete terms it no longer holds (that corrupts it), so only
    # the rows stored since (late spans) are forgotten then.
    indexed = spans
    if archive.get("key", "").endswith(".cold.zst") and SEARCH_LISTED not in archive:
        indexed = [s for s in spans if not getattr(s, "archived", False)]
    if SEARCH_FORGOTTEN not in archive:  # else a removal resumed after its search part
        # With the mark that it is done, as a move to cold does (_forget_text): told
        # twice, SQLite's index refuses, and the trace would stay DELETING.
        with write_turn(), transaction.atomic():
            removed.search_documents = search_traces_forget(
                tenant_id=tenant_id, trace_ids=[trace.trace_id], spans=indexed, reader=reader
            )
            Trace.objects.filter(pk=trace.pk).update(archive={**archive, SEARCH_FORGOTTEN: True})
    if trace.run_id.isdigit():
        run_ids = list(Run.objects.filter(pk=int(trace.run_id)).values_list("pk", flat=True))
        removed.journal_steps = run_journal_delete(run_ids=run_ids)
    SpanCost.objects.filter(trace_id=trace.trace_id).delete()
    removed.spans = max(_delete_spans(tenant_id, trace.trace_id), 0) + sum(
        1 for s in spans if getattr(s, "archived", False)
    )
    if archive.get("key"):
        keys = [archive["key"], *([archive["stale"]] if "stale" in archive else [])]
        get_blob_store().delete(keys)
        removed.bundles = 1
    TraceMark.objects.filter(trace_hex=trace.trace_id.hex).delete()
    Trace.objects.filter(pk=trace.pk).delete()
    removed.traces = 1
    return removed


def payloads_collect(*, tenant_id: int, as_of: date) -> tuple[int, int]:
    """Delete the tenant's payloads that nothing left in the hot tier reads, and their
    blobs. Returns (rows, blobs) deleted.

    Mark and sweep: every span row still in the database is read for what it refers
    to (through conversations and messages' long strings), and a payload none of them
    reaches goes, unless seen since the day before `as_of`: ingest may be about to
    refer to it (it refreshes last_seen when it meets a payload again)."""
    cutoff = as_of - timedelta(days=1)
    old = set(Payload.objects.filter(last_seen__lt=cutoff).values_list("digest", flat=True))
    if not old:
        return 0, 0
    live: set[str] = set()
    trace_ids = list(Span.objects.order_by().values_list("trace_id", flat=True).distinct())
    for start in range(0, len(trace_ids), 200):
        spans = list(Span.objects.filter(trace_id__in=trace_ids[start : start + 200]))
        live |= spans_closure(tenant_id=tenant_id, spans=spans).reader.rows.keys()
    dead = sorted(old - live)
    if not dead:
        return 0, 0
    # Raised (and committed) before any row goes: an ingest batch that read the count
    # before sees it changed before it commits, and tries again (ingest/payloads.py).
    Tenant.objects.filter(pk=tenant_id).update(payload_sweeps=F("payload_sweeps") + 1)
    rows = blobs = 0
    store = get_blob_store()
    for start in range(0, len(dead), 500):
        chunk = dead[start : start + 500]
        in_blobs = list(
            Payload.objects.filter(digest__in=chunk, data__isnull=True).values_list(
                "digest", flat=True
            )
        )
        rows += Payload.objects.filter(digest__in=chunk, last_seen__lt=cutoff).delete()[0]
        # Ingest may have stored one of them again meanwhile (its blob is then new).
        back = set(Payload.objects.filter(digest__in=in_blobs).values_list("digest", flat=True))
        gone = [blob_key(tenant_id, d) for d in in_blobs if d not in back]
        store.delete(gone)
        blobs += len(gone)
    return rows, blobs

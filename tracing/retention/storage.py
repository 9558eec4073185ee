"""Storage accounting: bytes per tenant per tier, database and blob store apart.

Counted by each retention run (and after an erasure), so the figures are at most an
hour old. Database bytes are what the rows' stored values take (span details, inline
payloads, fixed columns at their width); blob bytes are the objects' sizes as the
store lists them. Agent bundles (execution/bundles.py, `t/{id}/bundles/{sha}.{fmt}`)
are the hot tier's blob bytes too, in STANDARD: counted from their versions' rows (one
object per distinct archive, as the store keeps them), and recounted on each upload.
"""

from collections import defaultdict

from django.db.models import Count, Sum
from django.db.models.functions import Length
from django.utils import timezone

from billing.storage import storage_day_record, storage_runs_record
from controlplane.blobstore import get_blob_store, tenant_key
from execution.models import AgentVersion, Run
from tracing.models import Payload, Span, Trace
from tracing.retention.models import StorageUsage, Tier

# Fixed columns of a row, at their width (ids, times, counts, header).
SPAN_ROW_BYTES = 90
TRACE_ROW_BYTES = 200
PAYLOAD_ROW_BYTES = 48


def storage_count(*, tenant_id: int, as_of=None) -> dict[int, dict]:
    """Count and store the tenant's bytes per tier; returns {tier: figures}."""
    figures: dict[int, dict] = {
        tier: {"traces": 0, "db_bytes": 0, "blob_bytes": 0, "places": defaultdict(int)}
        for tier in (Tier.HOT, Tier.WARM, Tier.COLD)
    }
    for tier, count in Trace.objects.values_list("tier").annotate(n=Count("id")):
        if tier in figures:
            figures[tier]["traces"] = count
            figures[tier]["db_bytes"] += count * TRACE_ROW_BYTES
    spans = Span.objects.aggregate(n=Count("span_id"), size=Sum(Length("detail_packed")))
    payloads = Payload.objects.aggregate(n=Count("digest"), size=Sum(Length("data")))
    hot = figures[Tier.HOT]
    hot["db_bytes"] += (spans["n"] or 0) * SPAN_ROW_BYTES + (spans["size"] or 0)
    hot["db_bytes"] += (payloads["n"] or 0) * PAYLOAD_ROW_BYTES
    hot["db_bytes"] += payloads["size"] or 0
    # The bytes by where they sit, for billing's price per place: every row in the
    # database, hot payload objects in STANDARD, each bundle in the class it was
    # stored as (a deployment may have changed RETENTION_COLD_STORAGE_CLASS since).
    store = get_blob_store()
    hot["blob_bytes"] = sum(size for _, size in store.sizes(tenant_key(tenant_id, "blobs") + "/"))
    hot["blob_bytes"] += agent_bundle_bytes()
    hot["places"]["STANDARD"] += hot["blob_bytes"]
    for tier, archive in Trace.objects.filter(tier__in=(Tier.WARM, Tier.COLD)).values_list(
        "tier", "archive"
    ):
        figures[tier]["blob_bytes"] += archive["bytes"]
        figures[tier]["places"][archive.get("storage_class") or "STANDARD"] += archive["bytes"]
    stored: dict[str, int] = defaultdict(int)
    for tier_figures in figures.values():
        tier_figures["places"]["database"] = tier_figures["db_bytes"]
        tier_figures["places"] = {k: v for k, v in tier_figures["places"].items() if v}
        for place, size in tier_figures["places"].items():
            stored[place] += size
    now = as_of or timezone.now()
    for tier, tier_figures in figures.items():
        StorageUsage.objects.update_or_create(
            tenant_id=tenant_id, tier=tier, defaults={**tier_figures, "updated_at": now}
        )
    storage_day_record(tenant_id=tenant_id, day=now.date(), stored=dict(stored))
    storage_runs_record(tenant_id=tenant_id, day=now.date(), stored=run_places())
    return figures


def run_places() -> dict[int, dict[str, int]]:
    """{run id: {place: bytes}} of each managed run's trace, counted as storage_count
    counts it: the trace's row, then its span rows (hot) or its bundle (warm, cold).
    Payloads are shared by content across traces and runs, so they stay the tenant's
    alone; a run's journal is not counted in storage at all. A run whose trace is gone
    has {}."""
    runs = dict(Run.objects.exclude(trace_id="").order_by("-pk").values_list("trace_id", "pk"))
    places: dict[int, dict[str, int]] = {run_id: {} for run_id in runs.values()}
    hot = {}
    traces = Trace.objects.filter(
        trace_id__in=list(runs), tier__in=(Tier.HOT, Tier.WARM, Tier.COLD)
    ).values_list("trace_id", "tier", "archive")
    for trace_id, tier, archive in traces:
        run_id = runs[trace_id.hex]
        placed = places[run_id] = defaultdict(int, database=TRACE_ROW_BYTES)
        if tier == Tier.HOT:
            hot[trace_id] = placed
        else:
            placed[archive.get("storage_class") or "STANDARD"] += archive["bytes"]
    spans = (
        Span.objects.filter(trace_id__in=list(hot))
        .values_list("trace_id")
        .annotate(n=Count("span_id"), size=Sum(Length("detail_packed")))
    )
    for trace_id, n, size in spans:
        hot[trace_id]["database"] += n * SPAN_ROW_BYTES + (size or 0)
    return {run_id: dict(placed) for run_id, placed in places.items()}


def agent_bundle_bytes() -> int:
    """The tenant's agent bundles' bytes: each archive once, however many versions
    upload it (the store keeps one object per hash and format)."""
    stored = AgentVersion.objects.values_list(
        "bundle_sha256", "bundle_format", "bundle_size"
    ).distinct()
    return sum(size for _, _, size in stored)

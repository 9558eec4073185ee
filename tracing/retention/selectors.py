"""Retention's reads: the policy in force, legal holds, erasure requests, storage,
and the archived traces found by what their rows list."""

import uuid

from django.conf import settings
from django.db import connection
from django.db.models import BooleanField, Q
from django.db.models.expressions import RawSQL

from billing.prices import plain, storage_prices, to_nusd, usd
from billing.storage import storage_month_usd
from controlplane.tenancy import current_tenant_id
from tracing.models import Trace
from tracing.retention.bundles import bundles_open
from tracing.retention.models import (
    ErasureRequest,
    LegalHold,
    RetentionPolicy,
    StorageUsage,
    Tier,
    TraceMark,
)
from tracing.retention.policy import Effective


def retention_policy_get() -> Effective:
    """The days in force for the tenant in scope (its plan's where it set none)."""
    return Effective(RetentionPolicy.objects.first())


def legal_hold_list():
    return LegalHold.objects.order_by("-created_at", "-id")


def legal_hold_get(*, hold_id: int) -> LegalHold | None:
    return LegalHold.objects.filter(pk=hold_id).first()


def trace_mark_get(*, trace_hex: str) -> TraceMark | None:
    """The user's mark keeping the trace longer, if it has one."""
    return TraceMark.objects.filter(trace_hex=trace_hex).first()


def erasure_request_list():
    return ErasureRequest.objects.order_by("-created_at", "-id")


def erasure_request_get(*, request_id: int) -> ErasureRequest | None:
    return ErasureRequest.objects.filter(pk=request_id).first()


def storage_usage() -> list[dict]:
    """Bytes per tier, database and blob store apart, as the last retention run
    counted them (every tier listed, zeros where the tenant has nothing), each with
    what it costs a month: per place (the database, each S3 class), at the tenant's
    storage prices, the prices billing's daily storage cost is charged at."""
    tenant_id = current_tenant_id()
    prices = storage_prices(tenant_id=tenant_id)
    rows = {row.tier: row for row in StorageUsage.objects.all()}
    out = []
    for tier in (Tier.HOT, Tier.WARM, Tier.COLD):
        row = rows.get(tier) or StorageUsage(tier=tier, updated_at=None)
        placed = _places_of(row)
        costs = {
            place: to_nusd(storage_month_usd(tenant_id=tenant_id, stored={place: size}))
            for place, size in placed.items()
        }
        db = costs.get("database", 0)
        blob = sum(costs.values()) - db
        places = [
            {
                "place": place,
                "bytes": size,
                "usd_per_gb_month": plain(prices[place]),
                "cost_usd_month": usd(costs[place]),
            }
            for place, size in placed.items()
        ]
        out.append(
            {
                "tier": tier.label.lower(),
                "traces": row.traces,
                "db_bytes": row.db_bytes,
                "blob_bytes": row.blob_bytes,
                "db_cost_usd_month": usd(db),
                "blob_cost_usd_month": usd(blob),
                "cost_usd_month": usd(db + blob),
                "places": places,
                "updated_at": row.updated_at.isoformat() if row.updated_at else None,
            }
        )
    return out


def _places_of(row: StorageUsage) -> dict[str, int]:
    """The tier's bytes by place; a row counted before rows split them has its blob
    bytes where that tier's objects are put now."""
    if row.places or not (row.db_bytes or row.blob_bytes):
        return dict(row.places)
    blob_class = settings.RETENTION_COLD_STORAGE_CLASS if row.tier == Tier.COLD else "STANDARD"
    return {k: v for k, v in {"database": row.db_bytes, blob_class: row.blob_bytes}.items() if v}


ARCHIVE_LISTS = ("span_ids", "users")  # what tiers.archive_lists puts in Trace.archive


def archived_listing(key: str, values: list):
    """The warm and cold traces whose archive lists any of `values` under `key`."""
    if key not in ARCHIVE_LISTS:
        raise ValueError(f"archives list no {key}")
    archived = Trace.objects.filter(tier__in=(Tier.WARM, Tier.COLD))
    if not values:
        return archived.none()
    if connection.vendor == "postgresql":
        # jsonb containment, which the GIN index trace_archive_span_ids serves.
        query = Q()
        for value in values:
            query |= Q(**{f"archive__{key}__contains": [value]})
        return archived.filter(query)
    marks = ", ".join(["%s"] * len(values))
    listed = RawSQL(  # noqa: S611 - key is one of ARCHIVE_LISTS, the values parameters
        f"EXISTS (SELECT 1 FROM json_each(tracing_trace.archive, '$.{key}') "  # noqa: S608
        f"WHERE json_each.value IN ({marks}))",
        list(values),
        output_field=BooleanField(),
    )
    return archived.alias(listed=listed).filter(listed=True)


def archived_span_keys(*, tenant_id: int, trace_ids) -> set[tuple[uuid.UUID, int]]:
    """(trace id, span id) of the spans held by those of the traces that are warm or cold,
    from the span ids their rows list; only an archive from before rows listed them is
    opened."""
    keys, unlisted = set(), []
    rows = Trace.objects.filter(
        trace_id__in=list(trace_ids), tier__in=(Tier.WARM, Tier.COLD)
    ).values_list("trace_id", "archive")
    for trace_id, archive in rows:
        if "span_ids" in archive:
            keys.update((trace_id, span_id) for span_id in archive["span_ids"])
        else:
            unlisted.append(trace_id)
    if unlisted:
        for bundle in bundles_open(tenant_id=tenant_id, trace_ids=unlisted):
            keys.update((bundle.trace_id, row["span_id"]) for row in bundle.rows)
    return keys

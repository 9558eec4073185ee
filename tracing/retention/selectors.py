"""Retention's reads: the policy in force, legal holds, erasure requests, storage."""

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
    counted them (every tier listed, zeros where the tenant has nothing)."""
    rows = {row.tier: row for row in StorageUsage.objects.all()}
    out = []
    for tier in (Tier.HOT, Tier.WARM, Tier.COLD):
        row = rows.get(tier)
        out.append(
            {
                "tier": tier.label.lower(),
                "traces": row.traces if row else 0,
                "db_bytes": row.db_bytes if row else 0,
                "blob_bytes": row.blob_bytes if row else 0,
                "updated_at": row.updated_at.isoformat() if row else None,
            }
        )
    return out

"""Tracing operations. Ingest itself lives in tracing/ingest (see its README)."""

import re
from datetime import timedelta

import orjson
import re2
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from controlplane.models import Tenant
from controlplane.services import Actor, ServiceError, audit_record
from tracing import selectors
from tracing.ingest import dictionaries
from tracing.ingest.pipeline import IngestResult, spans_ingest
from tracing.ingest.policy import setups as redaction_setups
from tracing.ingest.redact import compile_pattern
from tracing.models import Payload, PayloadDictionary, PayloadKind, RedactionPolicy, Span, Trace

__all__ = [
    "IngestResult",
    "spans_ingest",
    "redaction_policy_update",
    "dictionaries_due",
    "dictionaries_refresh",
]

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")


def _checked_patterns(patterns) -> list[dict]:
    if not isinstance(patterns, list):
        raise ServiceError("custom_patterns must be a list of {name, pattern}")
    checked = []
    for index, item in enumerate(patterns):
        if not isinstance(item, dict) or set(item) != {"name", "pattern"}:
            raise ServiceError(f"custom_patterns[{index}] must have exactly name and pattern")
        name, pattern = item["name"], item["pattern"]
        if not isinstance(name, str) or not _NAME.match(name):
            raise ServiceError(f"custom_patterns[{index}].name must be a word like EMPLOYEE_ID")
        try:
            compiled = re.compile(pattern)
            # Ingest runs the patterns with RE2, which refuses what it cannot run in
            # linear time (lookarounds, backreferences) that Python's re accepts.
            compile_pattern(pattern)
        except (re.error, re2.error, TypeError) as exc:
            reason = exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc
            raise ServiceError(
                f"custom_patterns[{index}].pattern does not compile: {reason}"
            ) from None
        if compiled.groupindex:
            raise ServiceError(f"custom_patterns[{index}].pattern must not name groups")
        if compiled.match(""):
            raise ServiceError(f"custom_patterns[{index}].pattern matches the empty string")
        checked.append({"name": name.upper(), "pattern": pattern})
    return checked


def _checked_keys(keys, field: str) -> list[str]:
    if not isinstance(keys, list) or not all(isinstance(k, str) and k for k in keys):
        raise ServiceError(f"{field} must be a list of attribute keys")
    return sorted(set(keys))


@transaction.atomic
def redaction_policy_update(
    *,
    tenant: Tenant,
    custom_patterns,
    drop_keys,
    never_scan_keys,
    actor: Actor,
    scan_infrastructure: bool | None = None,
) -> RedactionPolicy:
    """Replace the tenant's rules; `scan_infrastructure` None keeps what it was."""
    patterns = _checked_patterns(custom_patterns)
    drop = _checked_keys(drop_keys, "drop_keys")
    never = _checked_keys(never_scan_keys, "never_scan_keys")
    policy, _ = RedactionPolicy.all_tenants.select_for_update().get_or_create(tenant=tenant)
    policy.custom_patterns = patterns
    policy.drop_keys = drop
    policy.never_scan_keys = never
    if scan_infrastructure is not None:
        policy.scan_infrastructure = bool(scan_infrastructure)
    policy.version += 1
    policy.updated_at = timezone.now()
    policy.save()
    audit_record(
        tenant=tenant,
        actor=actor,
        action="redaction_policy.update",
        target=policy,
        data={
            "version": policy.version,
            "patterns": [p["name"] for p in patterns],
            "drop_keys": drop,
            "never_scan_keys": never,
            "scan_infrastructure": policy.scan_infrastructure,
        },
    )
    transaction.on_commit(lambda: redaction_setups.invalidate(tenant.pk))
    return policy


# A tenant's dictionaries are looked at again once their newest is this old.
DICTIONARY_REFRESH_AGE = timedelta(days=7)
# The traffic a refreshed dictionary is trained on: the latest traces, capped so a
# tenant of huge traces costs the worker a few MB, not its whole history.
RECENT_TRACES, MAX_SPANS, MAX_PAYLOADS = 300, 20_000, 5_000


def dictionaries_due() -> list[int]:
    """Tenants whose dictionaries were trained or last checked DICTIONARY_REFRESH_AGE ago.
    Spans tenants: a platform job (beat)."""
    rows = (
        PayloadDictionary.objects.unscoped()
        .values("tenant_id")
        .annotate(trained=Max("created_at"), checked=Max("checked_at"))
    )
    cutoff = timezone.now() - DICTIONARY_REFRESH_AGE
    return sorted(
        row["tenant_id"]
        for row in rows
        if max(row["trained"], row["checked"] or row["trained"]) < cutoff
    )


def dictionaries_refresh(*, tenant_id: int) -> dict[int, int | None]:
    """Train new dictionaries from the tenant's recent traces where they compress that
    traffic clearly better than the newest ones; purpose -> new serial or None. Runs in
    the tenant's scope (TenantTask)."""
    traces = Trace.objects.order_by("-start_time").values_list("trace_id", flat=True)
    spans = list(
        Span.objects.filter(trace_id__in=list(traces[:RECENT_TRACES])).only(
            "tenant_id", "trace_id", "span_id", "detail_packed"
        )[:MAX_SPANS]
    )
    details, digests = [], set()
    for span in spans:
        detail = selectors.span_stored_detail(span=span)
        if detail:
            details.append(orjson.dumps(detail))
        for ref in detail.get("refs", {}).values():
            if isinstance(ref, str):
                digests.add(ref)
            elif isinstance(ref, list):
                digests.update(ref)
            elif isinstance(ref, dict):
                digests.update(ref.get("i", []))
    # Inline payloads only: those in the blob store are the large, rare ones.
    payloads = []
    wanted = sorted(digests)[:MAX_PAYLOADS]
    for start in range(0, len(wanted), 500):
        rows = Payload.objects.filter(
            digest__in=wanted[start : start + 500],
            kind__in=(PayloadKind.VALUE, PayloadKind.MESSAGE),
            data__isnull=False,
        ).values_list("data", flat=True)
        payloads.extend(dictionaries.unpack(tenant_id, bytes(data)) for data in rows)
    purposes = PayloadDictionary.Purpose
    serials = {
        purposes.PAYLOAD: dictionaries.refresh(tenant_id, payloads, purposes.PAYLOAD),
        purposes.SPAN_DETAIL: dictionaries.refresh(tenant_id, details, purposes.SPAN_DETAIL),
    }
    PayloadDictionary.objects.update(checked_at=timezone.now())
    return serials

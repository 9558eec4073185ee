"""The retention run: what is due for each tenant, moved in bounded batches.

A run is safe to kill and run again at any point: each trace's move is verified and
switched in one transaction (tiers.py), a trace left DELETING is finished first, an
old object left by a move to cold is deleted, and payload collection is a fresh mark
and sweep each time.
"""

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from alerts.models import Alert
from controlplane.models import Tenant
from controlplane.tenancy import tenant_scope
from tracing.models import Trace
from tracing.retention import storage, tiers
from tracing.retention.models import LegalHold, Tier, TraceMark
from tracing.retention.selectors import retention_policy_get


@dataclass
class Report:
    warm: int = 0
    cold: int = 0
    deleted: tiers.Removed = field(default_factory=tiers.Removed)
    payload_rows: int = 0
    payload_blobs: int = 0

    def lines(self, slug: str) -> list[str]:
        removed = self.deleted
        return [
            f"{slug}: {self.warm} traces to warm, {self.cold} to cold, "
            f"{removed.traces} deleted ({removed.spans} spans, {removed.bundles} bundles, "
            f"{removed.search_documents} search documents, {removed.journal_steps} journal steps), "
            f"{self.payload_rows} payloads and {self.payload_blobs} payload blobs collected"
        ]


def _hex_ids(values) -> list[uuid.UUID]:
    out = []
    for value in values:
        try:
            out.append(uuid.UUID(hex=value))
        except (ValueError, TypeError):
            continue
    return out


class _Keep:
    """What must not be deleted (legal holds) or is kept longer (alerted, marked)."""

    def __init__(self):
        holds = list(LegalHold.objects.values_list("scope", "value"))
        self.tenant = any(scope == LegalHold.Scope.TENANT for scope, _ in holds)
        self.traces = _hex_ids(v for s, v in holds if s == LegalHold.Scope.TRACE)
        self.sessions = [v for s, v in holds if s == LegalHold.Scope.SESSION]
        self.extended = _hex_ids(
            list(TraceMark.objects.values_list("trace_hex", flat=True))
            + list(Alert.objects.exclude(trace_id="").values_list("trace_id", flat=True))
        )

    def held(self) -> Q:
        return Q(trace_id__in=self.traces) | Q(session_id__in=self.sessions)


def _groups(effective) -> list[tuple[Q, object]]:
    """(which traces, their days): each agent with its own days, then the rest."""
    named = list(effective.agents)
    groups = [(Q(agent_name=name), effective.of(name)) for name in named]
    groups.append((~Q(agent_name__in=named), effective.tenant))
    return groups


def _due(as_of: datetime, batch: int, keep: _Keep, effective):
    """The next batch of (trace, what to do), deletions first. Held traces past their
    deletion day still go cold."""
    for which, days in _groups(effective):
        if keep.tenant:
            break
        base = Trace.objects.filter(which, tier__in=(Tier.HOT, Tier.WARM, Tier.COLD))
        expired = base.filter(start_time__lt=as_of - timedelta(days=days.delete_after))
        expired = expired.exclude(keep.held()).exclude(trace_id__in=keep.extended)
        rows = list(expired.order_by("start_time")[:batch])
        longest = max(days.delete_after, days.extended_days)
        extended = base.filter(
            trace_id__in=keep.extended, start_time__lt=as_of - timedelta(days=longest)
        ).exclude(keep.held())
        rows += list(extended.order_by("start_time")[: batch - len(rows)])
        if rows:
            return [(trace, "delete") for trace in rows]
    for which, days in _groups(effective):
        if days.cold_days == 0 and not keep.tenant:
            # Nothing stays cold: past the warm days a trace is deleted, unless kept,
            # and a kept one waits warm.
            continue
        chill = Trace.objects.filter(
            which,
            tier__in=(Tier.HOT, Tier.WARM),
            start_time__lt=as_of - timedelta(days=days.cold_after),
        )
        rows = list(chill.order_by("start_time")[:batch])
        if rows:
            return [(trace, "cold") for trace in rows]
    for which, days in _groups(effective):
        if days.warm_days == 0:
            continue  # straight to cold (or deleted) when the hot days are over
        warm = Trace.objects.filter(
            which, tier=Tier.HOT, start_time__lt=as_of - timedelta(days=days.warm_after)
        )
        rows = list(warm.order_by("start_time")[:batch])
        if rows:
            return [(trace, "warm") for trace in rows]
    return []


def retention_apply(
    *, tenant_id: int, as_of: datetime | None = None, batch: int | None = None
) -> Report:
    """Everything due for one tenant as of `as_of` (now by default). Runs scoped."""
    as_of = as_of or timezone.now()
    batch = batch or settings.RETENTION_BATCH
    report = Report()
    effective = retention_policy_get()
    keep = _Keep()
    for trace in Trace.objects.filter(tier=Tier.DELETING):
        report.deleted.add(tiers.trace_remove(tenant_id=tenant_id, trace=trace))
    for pk in Trace.objects.filter(archive__has_key="stale").values_list("pk", flat=True):
        tiers.stale_delete(trace_pk=pk)
    # Archived before rows listed their span ids and users: read them from the bundle.
    for trace in Trace.objects.filter(tier__in=(Tier.WARM, Tier.COLD)).exclude(
        archive__has_key="span_ids"
    ):
        tiers.archive_listed(tenant_id=tenant_id, trace=trace)
    # A move to cold killed before its texts left search (the tier had switched).
    for trace in Trace.objects.filter(archive__has_key=tiers.SEARCH_LISTED, tier=Tier.COLD):
        tiers.trace_unlist(tenant_id=tenant_id, trace=trace)
    while work := _due(as_of, batch, keep, effective):
        for trace, action in work:
            if action == "delete":
                report.deleted.add(tiers.trace_remove(tenant_id=tenant_id, trace=trace))
            elif action == "cold" and trace.tier == Tier.WARM:
                report.cold += tiers.trace_chill(tenant_id=tenant_id, trace=trace)
            elif action == "cold":
                report.cold += tiers.trace_archive(tenant_id=tenant_id, trace=trace, tier=Tier.COLD)
            else:
                report.warm += tiers.trace_archive(tenant_id=tenant_id, trace=trace, tier=Tier.WARM)
    if report.warm or report.cold or report.deleted.traces:
        report.payload_rows, report.payload_blobs = tiers.payloads_collect(
            tenant_id=tenant_id, as_of=as_of.date()
        )
    storage.storage_count(tenant_id=tenant_id, as_of=as_of)
    return report


def tenants_apply(*, slug: str | None = None, as_of: datetime | None = None):
    """(tenant, report) for each active tenant, or the one named."""
    tenants = Tenant.objects.filter(is_active=True).order_by("pk")
    if slug:
        tenants = tenants.filter(slug=slug)
    for tenant in tenants:
        with tenant_scope(tenant):
            yield tenant, retention_apply(tenant_id=tenant.pk, as_of=as_of)

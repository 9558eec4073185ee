"""Erasure on request (a session's or an end user's traces) and tenant deletion.

Both remove from every tier through `tiers.trace_remove`, collect the payloads left
unreferenced at once (no grace day: the content must go), and leave a RemovalRecord
of counts and trace ids, never content.
"""

from datetime import timedelta

from django.db.models import Q
from django.utils import timezone

from controlplane.blobstore import get_blob_store, tenant_key
from controlplane.models import Tenant
from controlplane.tenancy import tenant_scope
from tracing.models import Trace, attribute_pairs
from tracing.retention import selectors, storage, tiers
from tracing.retention.models import USER_KEYS, ErasureRequest, LegalHold, RemovalRecord
from tracing.search.attributes import traces_having
from tracing.selectors import redaction_preview


def _user_traces(tenant_id: int, user_id: str) -> list[Trace]:
    """Traces naming the user in their user column or a user.id / enduser.id attribute:
    hot and warm ones through the search index's attribute links, cold ones (whose
    links went with their text) through the users their row lists."""
    # Stored values are redacted: an e-mail address as user.id is kept as [EMAIL:…].
    redacted, _ = redaction_preview(tenant_id=tenant_id, text=user_id)
    values = sorted({user_id, redacted})
    by_attribute = traces_having(tenant_id=tenant_id, pairs=attribute_pairs(USER_KEYS, values))
    found = {t.pk: t for t in Trace.objects.filter(Q(user_id__in=values) | by_attribute)}
    for trace in selectors.archived_listing("users", values):
        found.setdefault(trace.pk, trace)
    return list(found.values())


def _held(traces):
    holds = list(LegalHold.objects.values_list("scope", "value"))
    if any(scope == LegalHold.Scope.TENANT for scope, _ in holds):
        return traces
    trace_hexes = [v for s, v in holds if s == LegalHold.Scope.TRACE]
    sessions = [v for s, v in holds if s == LegalHold.Scope.SESSION]
    held_ids = {t.trace_id for t in traces if t.trace_id.hex in trace_hexes}
    return [t for t in traces if t.trace_id in held_ids or t.session_id in sessions]


def _remove_all(tenant_id: int, traces: list[Trace]) -> tiers.Removed:
    removed = tiers.Removed()
    for trace in traces:
        removed.add(tiers.trace_remove(tenant_id=tenant_id, trace=trace))
    return removed


def erasure_execute(*, tenant_id: int, request_id: int) -> None:
    claimed = ErasureRequest.objects.filter(
        pk=request_id, status__in=(ErasureRequest.Status.QUEUED, ErasureRequest.Status.RUNNING)
    ).update(status=ErasureRequest.Status.RUNNING)
    if claimed != 1:
        return  # done already (a redelivery)
    request = ErasureRequest.objects.get(pk=request_id)
    if request.session_id:
        traces = list(Trace.objects.filter(session_id=request.session_id))
    else:
        traces = _user_traces(tenant_id, request.user_id)
    held = _held(traces)
    held_ids = {t.pk for t in held}
    removed = _remove_all(tenant_id, [t for t in traces if t.pk not in held_ids])
    rows, blobs = tiers.payloads_collect(
        tenant_id=tenant_id, as_of=timezone.now().date() + timedelta(days=2)
    )
    counts = {**removed.counts(), "payloads": rows, "payload_blobs": blobs, "held": len(held)}
    request.removed = {
        "counts": counts,
        "trace_ids": removed.trace_ids,
        "held_trace_ids": [t.trace_id.hex for t in held],
    }
    request.status = ErasureRequest.Status.DONE
    request.finished_at = timezone.now()
    request.save(update_fields=["removed", "status", "finished_at"])
    RemovalRecord.objects.create(
        tenant_id_value=tenant_id,
        tenant_slug=Tenant.objects.get(pk=tenant_id).slug,
        action="erasure",
        counts=counts,
        trace_ids=removed.trace_ids,
    )
    storage.storage_count(tenant_id=tenant_id)


def tenant_erase(*, tenant: Tenant) -> RemovalRecord:
    """Delete a tenant and everything it stored, in every tier and the blob store
    (listed until empty), legal holds included: deleting the tenant is the decision.
    Returns the record of what went."""
    tenant_id, slug = tenant.pk, tenant.slug
    with tenant_scope(tenant):
        traces = list(Trace.objects.all())
        removed = _remove_all(tenant_id, traces)
        rows, blobs = tiers.payloads_collect(
            tenant_id=tenant_id, as_of=timezone.now().date() + timedelta(days=2)
        )
    store = get_blob_store()
    prefix = tenant_key(tenant_id) + "/"
    objects = 0
    while keys := list(store.list(prefix)):
        store.delete(keys)
        objects += len(keys)
    tenant.delete()  # every tenant row cascades: runs and journals, keys, audit, costs
    return RemovalRecord.objects.create(
        tenant_id_value=tenant_id,
        tenant_slug=slug,
        action="tenant.delete",
        counts={**removed.counts(), "payloads": rows, "payload_blobs": blobs, "objects": objects},
        trace_ids=removed.trace_ids,
    )

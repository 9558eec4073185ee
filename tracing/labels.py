"""Span labels: the few distinct services, agents, operations, providers, models and
tools a tenant's spans carry, each combination stored once (`SpanLabels`).

A span row holds the combination's id instead of the strings. A combination never
changes once written, so its id means the same thing for ever and both directions are
cached per process (`controlplane.tenantcache`: bounded, and filled only once the rows
are committed).
"""

import hashlib

from controlplane.tenantcache import TenantCache
from tracing.ingest.rows import insert_ignoring_conflicts
from tracing.models import LABEL_FIELDS, SpanLabels

EMPTY = dict.fromkeys(LABEL_FIELDS, "")

ids_cache = TenantCache("span label ids", size=50_000)  # combination -> id
values_cache = TenantCache("span label values", size=50_000)  # id -> {field: value}


def label_key(values: tuple) -> bytes:
    """The unique key of a combination (the strings themselves may exceed an index's
    row size limit on PostgreSQL)."""
    return hashlib.blake2b("\x1f".join(values).encode(), digest_size=16).digest()


def ids_for(tenant_id: int, combinations: set[tuple]) -> dict[tuple, int]:
    """Ids of the combinations, storing the new ones. Call inside the transaction that
    writes the spans: the cache learns the new ids when it commits."""
    found = {}
    for c in combinations:
        id_ = ids_cache.get(tenant_id, c)
        if id_ is not None:
            found[c] = id_
    missing = [c for c in combinations if c not in found]
    if missing:
        fresh = _select(tenant_id, missing)
        new = [c for c in missing if c not in fresh]
        if new:
            insert_ignoring_conflicts(
                "tracing_spanlabels",
                ("tenant_id", "key", *LABEL_FIELDS),
                [(tenant_id, label_key(c), *c) for c in new],
            )
            fresh.update(_select(tenant_id, new))
        _remember(tenant_id, fresh)
        found.update(fresh)
    return found


def values_of(tenant_id: int, labels_ids) -> dict[int, dict]:
    """id -> {field: value} for the given ids (None: no labels)."""
    out: dict = {None: EMPTY}
    wanted = []
    for id_ in set(labels_ids) - {None}:
        values = values_cache.get(tenant_id, id_)
        if values is None:
            wanted.append(id_)
        else:
            out[id_] = values
    if wanted:
        rows = SpanLabels.all_tenants.filter(tenant_id=tenant_id, id__in=wanted)
        read = {r[0]: tuple(r[1:]) for r in rows.values_list("id", *LABEL_FIELDS)}
        _remember(tenant_id, {values: id_ for id_, values in read.items()})
        for id_ in wanted:
            out[id_] = dict(zip(LABEL_FIELDS, read[id_], strict=True)) if id_ in read else EMPTY
    return out


def _select(tenant_id: int, combinations: list[tuple]) -> dict[tuple, int]:
    keys = {label_key(c): c for c in combinations}
    rows = SpanLabels.all_tenants.filter(tenant_id=tenant_id, key__in=list(keys))
    return {keys[bytes(key)]: id_ for id_, key in rows.values_list("id", "key")}


def _remember(tenant_id: int, ids: dict[tuple, int]) -> None:
    ids_cache.put(tenant_id, ids)
    values_cache.put(
        tenant_id,
        {id_: dict(zip(LABEL_FIELDS, values, strict=True)) for values, id_ in ids.items()},
    )

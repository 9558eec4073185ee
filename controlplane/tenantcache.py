"""A process's memory of per-tenant facts: one bounded, least-recently-used map each.

The span path remembers what it read or stored per tenant (seen payloads, label ids,
redaction set-ups, zstd dictionaries) so a batch does not ask the database again. Every
such memory is a TenantCache:

- bounded: a tenant sending a new value on every span must not grow a worker without
  limit; the entry read or stored longest ago goes first;
- filled after commit: an entry about rows this transaction wrote appears only once they
  are committed, so a rolled-back batch leaves nothing behind (outside a transaction it
  appears at once);
- one `invalidate(tenant_id)` for when a tenant's rows change under it;
- `reset()` forgets every cache of the process (tests: SQLite hands a rolled-back test's
  ids out again).
"""

import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable

from django.db import transaction

_caches: "weakref.WeakSet[TenantCache]" = weakref.WeakSet()
_MISSING = object()


class TenantCache:
    def __init__(self, name: str, *, size: int, after_commit: bool = True):
        """after_commit=False: the values are the process's own (samples it collected),
        not rows, and are stored at once even inside a transaction."""
        self.name = name
        self.size = size
        self.after_commit = after_commit
        self._entries: OrderedDict[tuple[int, Hashable], object] = OrderedDict()
        self._lock = threading.Lock()
        _caches.add(self)

    def __repr__(self) -> str:
        return f"<TenantCache {self.name}: {len(self)} of {self.size}>"

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, tenant_id: int, key: Hashable, default=None):
        entry = (tenant_id, key)
        with self._lock:
            value = self._entries.get(entry, _MISSING)
            if value is _MISSING:
                return default
            self._entries.move_to_end(entry)
            return value

    def put(self, tenant_id: int, items: dict) -> None:
        """Remember key -> value for the tenant, once the current transaction commits
        (items is read then: do not change it afterwards)."""
        if not items:
            return
        if self.after_commit:
            transaction.on_commit(lambda: self._store(tenant_id, items))
        else:
            self._store(tenant_id, items)

    def _store(self, tenant_id: int, items: dict) -> None:
        with self._lock:
            for key, value in items.items():
                self._entries[(tenant_id, key)] = value
                self._entries.move_to_end((tenant_id, key))
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def invalidate(self, tenant_id: int) -> None:
        """Forget the tenant's entries. Walks the whole cache: it is rare (a tenant's
        settings change), lookups are not."""
        with self._lock:
            for entry in [e for e in self._entries if e[0] == tenant_id]:
                del self._entries[entry]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def reset() -> None:
    """Forget every tenant's entries in every cache of this process."""
    for cache in list(_caches):
        cache.clear()

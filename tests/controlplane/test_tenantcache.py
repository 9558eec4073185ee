"""The per-tenant process cache: bounded, least recently used first, filled on commit."""

import pytest
from django.db import transaction

from controlplane import tenantcache
from controlplane.tenantcache import TenantCache


def test_it_keeps_the_most_recently_used_entries_within_its_size():
    cache = TenantCache("test", size=3, after_commit=False)
    cache.put(1, {"a": 1, "b": 2, "c": 3})
    assert cache.get(1, "a") == 1  # read: now the most recent
    cache.put(1, {"d": 4})
    assert len(cache) == 3
    assert cache.get(1, "b") is None  # the least recently used went
    assert [cache.get(1, k) for k in "acd"] == [1, 3, 4]
    cache.put(2, {"e": 5, "f": 6})
    assert [cache.get(1, k) for k in "acd"] == [None, None, 4]


def test_it_keeps_tenants_apart_and_invalidates_one():
    cache = TenantCache("test", size=10, after_commit=False)
    cache.put(1, {"key": "one's"})
    cache.put(2, {"key": "two's", "other": 0})
    assert cache.get(1, "key") == "one's" and cache.get(2, "key") == "two's"
    cache.invalidate(2)
    assert cache.get(2, "key") is None and cache.get(2, "other", "gone") == "gone"
    assert cache.get(1, "key") == "one's"


def test_reset_empties_every_cache():
    first = TenantCache("first", size=10, after_commit=False)
    second = TenantCache("second", size=10, after_commit=False)
    first.put(1, {"a": 1})
    second.put(2, {"b": 2})
    tenantcache.reset()
    assert len(first) == 0 and len(second) == 0


@pytest.mark.django_db(transaction=True)
def test_it_learns_entries_only_when_their_transaction_commits():
    cache = TenantCache("test", size=10)
    cache.put(1, {"outside": 1})  # no transaction: at once
    assert cache.get(1, "outside") == 1
    with pytest.raises(RuntimeError), transaction.atomic():
        cache.put(1, {"rolled back": 2})
        raise RuntimeError("the batch failed")
    assert cache.get(1, "rolled back") is None
    with transaction.atomic():
        cache.put(1, {"committed": 3})
        assert cache.get(1, "committed") is None  # not yet
    assert cache.get(1, "committed") == 3
    # The process's own values are kept at once, even inside a transaction.
    own = TenantCache("own", size=10, after_commit=False)
    with transaction.atomic():
        own.put(1, {"samples": [b"x"]})
        assert own.get(1, "samples") == [b"x"]

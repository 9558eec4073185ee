"""Sealing from many threads at once, as a run's gateway does when its agent calls tools
in parallel: every value opens to what was sealed."""

import random
import string
from concurrent.futures import ThreadPoolExecutor

import pytest

from replay import sealing


@pytest.mark.django_db
def test_it_seals_and_opens_from_many_threads_at_once(acme):
    rng = random.Random(7)
    values = [
        {
            "n": n,
            "text": "".join(rng.choices(string.ascii_letters + " ", k=rng.randint(300, 30000))),
        }
        for n in range(400)
    ]
    tenant_id = acme.id
    sealing.seal(tenant_id=tenant_id, value={"warm": "the tenant's key"})

    def round_trip(value):
        return sealing.unseal(sealing.seal(tenant_id=tenant_id, value=value))

    with ThreadPoolExecutor(max_workers=8) as pool:
        opened = list(pool.map(round_trip, values))
    assert opened == values

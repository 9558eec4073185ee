"""A payload retention removed and then sent again is stored again: ingest's memory of
stored payloads (tracing/ingest/payloads.py) does not outlive a removal, whether the
removal ran in this process or in another one."""

import os
import random
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from controlplane.blobstore import get_blob_store
from controlplane.tenancy import tenant_scope
from tests.retention.helpers import POLICY, apply, read_whole, send_trace, tier_of
from tests.retention.test_removal import send_user_span
from tests.workers import _database_url
from tracing.models import Payload

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[2]
# A tool result too large (and too random to compress) to be kept in its row: a blob.
RESULT = random.Random(15).randbytes(2048).hex()
GONE = 10  # days ahead: past hot (1), warm (2) and cold (3), so the traces are deleted


def payloads(tenant) -> int:
    return Payload.all_tenants.filter(tenant=tenant).count()


def blobs(tenant) -> list[str]:
    return list(get_blob_store().list(f"t/{tenant.id}/blobs/"))


def send_both(tenant, *, trace_hex: str) -> str:
    """The same conversation and the same large tool result, in two traces."""
    trace = send_trace(tenant, session="again")
    send_user_span(tenant, trace_hex, "u-1", RESULT)
    return trace


def assert_read_back(api, key, trace: str, trace_hex: str) -> None:
    read_whole(api, key, trace)  # every span's detail and the session's messages
    span = api.get(f"/api/v1/spans/eee19b7ec3c1b174?trace_id={trace_hex}", key=key)
    assert span.status_code == 200, span.text
    assert RESULT in span.text


def test_a_payload_removed_by_retention_is_stored_again_when_sent_again(api, acme, make_key):
    key = make_key(acme, "admin", "read")
    assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 200
    first = send_both(acme, trace_hex="1" * 32)
    stored, stored_blobs = payloads(acme), blobs(acme)
    assert stored and stored_blobs

    apply(acme, days_ahead=GONE)
    assert tier_of(acme, first) is None
    assert payloads(acme) == 0 and blobs(acme) == []

    again = send_both(acme, trace_hex="2" * 32)
    assert payloads(acme) == stored and blobs(acme) == stored_blobs
    assert_read_back(api, key, again, "2" * 32)


@pytest.mark.postgres
def test_a_payload_removed_by_another_process_is_stored_again(api, acme, make_key):
    """The removal runs in a process of its own (as the beat's worker does), so nothing
    in this process is told of it but what the database says."""
    key = make_key(acme, "admin", "read")
    assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 200
    first = send_both(acme, trace_hex="1" * 32)
    stored, stored_blobs = payloads(acme), blobs(acme)
    env = {
        **os.environ,
        "DATABASE_URL": _database_url(settings.DATABASES["default"]),
        "PYTHONPATH": str(ROOT),
    }
    when = (timezone.now() + timedelta(days=GONE)).isoformat()
    subprocess.run(
        [sys.executable, "manage.py", "apply_retention", "--tenant", acme.slug, "--as-of", when],
        cwd=ROOT, env=env, check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert tier_of(acme, first) is None
    assert payloads(acme) == 0 and blobs(acme) == []

    again = send_both(acme, trace_hex="2" * 32)
    assert payloads(acme) == stored and blobs(acme) == stored_blobs
    assert_read_back(api, key, again, "2" * 32)
    with tenant_scope(acme):
        assert Payload.objects.count() == stored

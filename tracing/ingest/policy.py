"""A tenant's redaction set-up: its Redactor, digest key and key rules, cached briefly."""

import hashlib
import time
from dataclasses import dataclass

from django.conf import settings

from controlplane.tenancy import tenant_scope
from controlplane.tenantcache import TenantCache
from tracing.ingest.redact import Redactor
from tracing.models import RedactionPolicy

CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class TenantRedaction:
    redactor: Redactor
    digest_key: bytes
    drop_keys: frozenset
    never_scan_keys: frozenset
    version: int
    scan_infrastructure: bool = False


# tenant -> (checked at, its set-up); redaction_policy_update invalidates it.
setups = TenantCache("redaction set-ups", size=10_000)


def _key(purpose: str, tenant_id: int, version: int = 0) -> bytes:
    material = f"flightdeck:{purpose}:{tenant_id}:{version}".encode()
    return hashlib.blake2b(material, key=settings.SECRET_KEY.encode()[:64], digest_size=32).digest()


def tenant_redaction(tenant_id: int) -> TenantRedaction:
    now = time.monotonic()
    hit = setups.get(tenant_id, "setup")
    if hit and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    with tenant_scope(tenant_id):
        policy = RedactionPolicy.objects.first()
    version = policy.version if policy else 0
    if hit and hit[1].version == version:
        setups.put(tenant_id, {"setup": (now, hit[1])})
        return hit[1]
    setup = TenantRedaction(
        # Placeholders stay linkable across policy versions; digests do not.
        redactor=Redactor(
            hash_key=_key("placeholder", tenant_id),
            custom_patterns=policy.custom_patterns if policy else None,
        ),
        digest_key=_key("payload", tenant_id, version),
        drop_keys=frozenset(policy.drop_keys if policy else ()),
        never_scan_keys=frozenset(policy.never_scan_keys if policy else ()),
        version=version,
        scan_infrastructure=bool(policy and policy.scan_infrastructure),
    )
    setups.put(tenant_id, {"setup": (now, setup)})
    return setup

"""Tracing operations. Ingest itself lives in tracing/ingest (see its README)."""

import re

from django.db import transaction
from django.utils import timezone

from controlplane.models import Tenant
from controlplane.services import Actor, ServiceError, audit_record
from tracing.ingest import policy as policy_cache
from tracing.ingest.pipeline import IngestResult, spans_ingest
from tracing.models import RedactionPolicy

__all__ = ["IngestResult", "spans_ingest", "redaction_policy_update"]

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
        except (re.error, TypeError) as exc:
            raise ServiceError(
                f"custom_patterns[{index}].pattern does not compile: {exc}"
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
    *, tenant: Tenant, custom_patterns, drop_keys, never_scan_keys, actor: Actor
) -> RedactionPolicy:
    patterns = _checked_patterns(custom_patterns)
    drop = _checked_keys(drop_keys, "drop_keys")
    never = _checked_keys(never_scan_keys, "never_scan_keys")
    policy, _ = RedactionPolicy.all_tenants.select_for_update().get_or_create(tenant=tenant)
    policy.custom_patterns = patterns
    policy.drop_keys = drop
    policy.never_scan_keys = never
    policy.version += 1
    policy.updated_at = timezone.now()
    policy.save()
    audit_record(
        tenant=tenant, actor=actor, action="redaction_policy.update", target=policy,
        data={"version": policy.version, "patterns": [p["name"] for p in patterns],
              "drop_keys": drop, "never_scan_keys": never},
    )  # fmt: skip
    transaction.on_commit(lambda: policy_cache.forget(tenant.pk))
    return policy

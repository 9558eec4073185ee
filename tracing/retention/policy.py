"""A tenant's retention days: the plan's defaults, the tenant's own, each agent's.

Validated here, so the API and the console refuse the same things with the same words
(the message starts with the field's name).
"""

from dataclasses import dataclass

from django.conf import settings

from controlplane.services import ServiceError
from tracing.retention.models import TIER_KEYS, RetentionPolicy

MAX_DAYS = 36_500


@dataclass(frozen=True, slots=True)
class Days:
    hot_days: int
    warm_days: int
    cold_days: int
    extended_days: int

    @property
    def warm_after(self) -> int:
        return self.hot_days

    @property
    def cold_after(self) -> int:
        return self.hot_days + self.warm_days

    @property
    def delete_after(self) -> int:
        return self.hot_days + self.warm_days + self.cold_days

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in TIER_KEYS}


def days_checked(value, field: str) -> int:
    # bool is an int in Python: true is not a number of days.
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_DAYS:
        raise ServiceError(f"{field} must be a whole number of days from 0 to {MAX_DAYS}")
    return value


def agents_checked(agents) -> dict:
    if not isinstance(agents, dict):
        raise ServiceError("agents must be an object of agent name to days")
    out = {}
    for name, days in agents.items():
        if not name or len(name) > 255:
            raise ServiceError("agents: an agent name is 1 to 255 characters")
        if not isinstance(days, dict):
            raise ServiceError(f"agents.{name} must be an object with {', '.join(TIER_KEYS)}")
        unknown = sorted(set(days) - set(TIER_KEYS))
        if unknown:
            raise ServiceError(f"agents.{name}.{unknown[0]} is not a retention field")
        out[name] = {key: days_checked(days[key], f"agents.{name}.{key}") for key in days}
    return out


class Effective:
    """The days in force for a tenant: `of(agent)` for one agent's traces."""

    def __init__(self, policy: RetentionPolicy | None):
        plan = settings.RETENTION_PLANS.get(
            policy.plan if policy else settings.RETENTION_DEFAULT_PLAN,
            settings.RETENTION_PLANS[settings.RETENTION_DEFAULT_PLAN],
        )
        own = {key: getattr(policy, key, None) for key in TIER_KEYS} if policy else {}
        self.tenant = Days(**{k: own.get(k) if own.get(k) is not None else plan[k] for k in plan})
        self.agents = dict(policy.agents) if policy else {}

    def of(self, agent: str) -> Days:
        override = self.agents.get(agent)
        if not override:
            return self.tenant
        return Days(**{**self.tenant.as_dict(), **override})

    def as_dict(self) -> dict:
        return {**self.tenant.as_dict(), "agents": self.agents}

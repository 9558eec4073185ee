"""Billing's data: the price book, cost per LLM call, roll-ups, budgets, their spend
windows and the ledger of reservations, settlements and releases.

Money is counted in whole nano-dollars (`*_nusd`, 1e-9 USD) in BigIntegerFields:
exact, the same on PostgreSQL, SQLite and Redis, and cheap to add up in a conditional
UPDATE. Prices are Decimals (USD per million tokens); money leaves the API as a
decimal string in USD.
"""

from django.db import models
from django.utils import timezone

from controlplane.tenancy import TenantModel
from tracing.models import TraceIdField

PRICE = {"max_digits": 14, "decimal_places": 6}
# Where stored bytes sit -> the book's price of a GB-month there: the database, and the
# blob store's objects by S3 storage class (the local store records the same classes).
STORAGE_PRICE_FIELDS = {
    "database": "storage_database_gb_month_usd",
    "STANDARD": "storage_standard_gb_month_usd",
    "STANDARD_IA": "storage_standard_ia_gb_month_usd",
    "GLACIER_IR": "storage_glacier_ir_gb_month_usd",
}
PLATFORM_FIELDS = ("tool_call_usd", "sandbox_cpu_second_usd", *STORAGE_PRICE_FIELDS.values())
# A book from before storage had a price per class names one for all of them.
LEGACY_STORAGE_FIELD = "storage_gb_month_usd"


class PriceBook(models.Model):
    """One loaded version of the platform's prices (`manage.py load_prices FILE`)."""

    version = models.PositiveIntegerField(unique=True)
    source = models.TextField(blank=True, default="")  # where the prices were read
    loaded_at = models.DateTimeField(default=timezone.now)
    # The platform's own unit prices, USD.
    tool_call_usd = models.DecimalField(**PRICE, default=0)
    sandbox_cpu_second_usd = models.DecimalField(**PRICE, default=0)
    # Storage per GB-month by where the bytes sit (billing/storage.py): the database's
    # rows, then the blob store's objects by their S3 storage class.
    storage_database_gb_month_usd = models.DecimalField(**PRICE, default=0)
    storage_standard_gb_month_usd = models.DecimalField(**PRICE, default=0)
    storage_standard_ia_gb_month_usd = models.DecimalField(**PRICE, default=0)
    storage_glacier_ir_gb_month_usd = models.DecimalField(**PRICE, default=0)

    def __str__(self):
        return f"price book v{self.version}"


class PriceEntry(models.Model):
    """A model's token prices from a date on. Aliases and dated ids map to one entry."""

    book = models.ForeignKey(PriceBook, on_delete=models.CASCADE, related_name="entries")
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=255)
    aliases = models.JSONField(default=list)
    effective_from = models.DateField()
    input_usd_per_mtok = models.DecimalField(**PRICE)
    output_usd_per_mtok = models.DecimalField(**PRICE)
    cache_read_usd_per_mtok = models.DecimalField(**PRICE, default=0)
    cache_write_usd_per_mtok = models.DecimalField(**PRICE, default=0)
    # OpenAI's prompt tokens include the cached ones; Anthropic's input tokens do not.
    input_includes_cache = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["book", "provider", "model", "effective_from"], name="price_entry_unique"
            )
        ]
        verbose_name_plural = "price entries"

    def __str__(self):
        return f"{self.provider}/{self.model} from {self.effective_from}"


class PriceOverride(TenantModel):
    """A tenant's negotiated price for one model; wins over the book's entry."""

    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=255)
    input_usd_per_mtok = models.DecimalField(**PRICE)
    output_usd_per_mtok = models.DecimalField(**PRICE)
    cache_read_usd_per_mtok = models.DecimalField(**PRICE, default=0)
    cache_write_usd_per_mtok = models.DecimalField(**PRICE, default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "provider", "model"], name="price_override_unique"
            )
        ]

    def __str__(self):
        return f"{self.tenant_id}: {self.provider}/{self.model}"


class StoragePriceOverride(TenantModel):
    """A tenant's own GB-month price for one place bytes sit (a key of
    STORAGE_PRICE_FIELDS); wins over the book's price for that place."""

    place = models.CharField(max_length=32)
    gb_month_usd = models.DecimalField(**PRICE)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "place"], name="storage_price_unique")
        ]

    def __str__(self):
        return f"{self.tenant_id}: {self.place}"


class BillingAccount(TenantModel):
    """A tenant's billing settings."""

    tenant = models.OneToOneField("controlplane.Tenant", on_delete=models.CASCADE)
    # Calls go ahead when the budget store cannot be reached (the default refuses them).
    fail_open = models.BooleanField(default=False)

    def __str__(self):
        return f"billing of {self.tenant_id}"


class CostKind(models.TextChoices):
    LLM = "llm"
    TOOL = "tool"
    SANDBOX = "sandbox"
    STORAGE = "storage"


class SpanCost(TenantModel):
    """The cost of one chat span, computed once when it is ingested.

    `counted` is false for a span that reports a call another span reports already
    (two instrumentations of one call): it keeps its figures but is left out of every
    sum.

    The span's identity is the key: no surrogate id and its index. On PostgreSQL the
    database indexes the rows by (tenant, trace) instead of this key, and costing keeps
    them unique under the trace's row lock (migration 0011, `costs.spans_cost`); there
    the columns are in alignment order, widest first. Tokens of one call fit 32 bits
    (the span's own columns are as wide). The agent, provider and model are the span's
    labels, and its session the span's own: the row holds neither's strings
    (migration 0012).
    """

    pk = models.CompositePrimaryKey("tenant", "trace_id", "span_id")
    tenant = models.ForeignKey("controlplane.Tenant", on_delete=models.CASCADE, db_index=False)
    trace_id = TraceIdField()
    span_id = models.BigIntegerField()
    parent_span_id = models.BigIntegerField(null=True)
    day = models.DateField()
    call_key = models.CharField(max_length=255, blank=True)  # gen_ai.response.id
    run_id = models.CharField(max_length=64, blank=True)
    # The span's labels (its agent, provider and models: `call_labels`), by the id its
    # own row holds, not the strings again. No constraint or index, as on the span.
    labels = models.ForeignKey(
        "tracing.SpanLabels",
        on_delete=models.DO_NOTHING,
        null=True,
        db_index=False,
        db_constraint=False,
        related_name="+",
    )
    input_tokens = models.IntegerField(default=0)
    output_tokens = models.IntegerField(default=0)
    cache_read_tokens = models.IntegerField(default=0)
    cache_write_tokens = models.IntegerField(default=0)
    cost_nusd = models.BigIntegerField(null=True)  # null: cost_unknown
    price_version = models.PositiveIntegerField(null=True)  # book version; null: none/override
    price_override = models.BooleanField(default=False)
    counted = models.BooleanField(default=True)
    over_budget = models.BooleanField(default=False)

    class Meta(TenantModel.Meta):
        # Reads by trace use the key's (tenant, trace_id) prefix, or PostgreSQL's
        # span_cost_trace. The usage report's list of unpriced models reads a few rows
        # of many: a partial index.
        indexes = [
            models.Index(
                fields=["tenant", "day"],
                condition=models.Q(cost_nusd__isnull=True, counted=True),
                name="span_cost_unknown",
            ),
        ]

    @property
    def cost_unknown(self) -> bool:
        return self.cost_nusd is None


def call_labels(values: dict) -> tuple[str, str, str]:
    """The agent, provider and model a call is costed under, from its span's label
    values (`tracing.labels.values_of`)."""
    model = values["response_model"] or values["request_model"]
    return values["agent_name"] or values["service_name"], values["provider"], model[:255]


class UsageDaily(TenantModel):
    """Cost and tokens per tenant, day, kind, agent, model and user, added to as costs
    arrive: the tenant's, each agent's, model's and user's figures by day are sums of
    these. `user_id` is the span's user as its trace records it (redacted); a managed
    run's tools and sandbox time have none."""

    day = models.DateField()
    kind = models.CharField(max_length=16, choices=CostKind.choices)
    agent_name = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=255, blank=True)
    user_id = models.CharField(max_length=255, blank=True, default="")
    cost_nusd = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    calls = models.BigIntegerField(default=0)
    unknown_calls = models.BigIntegerField(default=0)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "day", "kind", "agent_name", "model", "user_id"],
                name="usage_daily_unique",
            )
        ]


class CostTotal(TenantModel):
    """Cost and tokens of one trace, run or session, added to as costs arrive. Keyed
    by (tenant, dimension, key), which the upserts name: no surrogate id, and no index
    of the tenant alone, which the key's prefix serves."""

    pk = models.CompositePrimaryKey("tenant", "dimension", "key")
    tenant = models.ForeignKey("controlplane.Tenant", on_delete=models.CASCADE, db_index=False)
    dimension = models.CharField(max_length=8)  # trace, run, session
    key = models.CharField(max_length=255)
    cost_nusd = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    calls = models.BigIntegerField(default=0)
    unknown_calls = models.BigIntegerField(default=0)


class BudgetScope(models.TextChoices):
    TENANT = "tenant"
    AGENT = "agent"
    RUN = "run"
    USER = "user"


class BudgetPeriod(models.TextChoices):
    DAY = "day"
    MONTH = "month"
    LIFETIME = "lifetime"


DEFAULT_THRESHOLDS = [0.5, 0.8, 1.0]


def default_thresholds() -> list:
    return list(DEFAULT_THRESHOLDS)


class Budget(TenantModel):
    """A hard cap with soft thresholds.

    tenant: all of the tenant's spend; agent: one agent's (by name, so external agents
    have budgets too); run: each run's own spend (of one agent, or of every run), or
    one run's when `run` is set (a run's `budget_usd`); user: one user's spend (the
    spans' user as their traces record it, redacted), e.g. a coding agent's user.
    """

    scope = models.CharField(max_length=8, choices=BudgetScope.choices)
    agent = models.CharField(max_length=255, blank=True, default="")
    user = models.CharField(max_length=255, blank=True, default="")
    run = models.ForeignKey(
        "execution.Run", on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    period = models.CharField(
        max_length=8, choices=BudgetPeriod.choices, default=BudgetPeriod.MONTH
    )
    cap_nusd = models.BigIntegerField()
    thresholds = models.JSONField(default=default_thresholds)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "scope"], name="budget_tenant_scope")]

    def __str__(self):
        subject = self.agent or self.user or (f"run {self.run_id}" if self.run_id else "")
        return f"budget {self.pk} ({self.scope} {subject} {self.period})".replace("  ", " ")


class BudgetWindow(TenantModel):
    """One budget's spend over one period: `key` is the day (2026-12-01), the month
    (2026-12), "lifetime", or "run:<id>" for a per-run budget. Reserved money is held
    for calls in flight; spent is settled."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="windows")
    key = models.CharField(max_length=32)
    spent_nusd = models.BigIntegerField(default=0)
    reserved_nusd = models.BigIntegerField(default=0)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["budget", "key"], name="budget_window_unique")
        ]


class BudgetHold(TenantModel):
    """A managed run's reservation while its call is in flight, on the database store:
    written with the reservation, deleted with its settlement. A worker lost in between
    leaves it behind, and the run's next worker settles it or gives it back
    (`store.DatabaseStore.reconcile`); one given back stays, `released`, so that the
    lost worker's call, if it answers after all, still adds its spend, once."""

    reservation = models.UUIDField(primary_key=True)
    run = models.ForeignKey(
        "execution.Run", on_delete=models.CASCADE, related_name="+", db_index=False
    )
    kind = models.CharField(max_length=16, choices=CostKind.choices)
    amount_nusd = models.BigIntegerField()
    windows = models.JSONField()  # [[budget_id, key], ...]: what the amount is held in
    released = models.BooleanField(default=False)
    at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "run"], name="budget_hold_run")]


class ThresholdCrossing(TenantModel):
    """A threshold of a budget window that was reached: stored once, so its event
    fires once, whatever is retried or resent."""

    budget = models.ForeignKey(Budget, on_delete=models.CASCADE, related_name="+")
    window_key = models.CharField(max_length=32)
    threshold = models.CharField(max_length=16)  # as given, e.g. "0.8"
    spent_nusd = models.BigIntegerField()
    at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(
                fields=["budget", "window_key", "threshold"], name="threshold_once"
            )
        ]


class LedgerKind(models.TextChoices):
    RESERVE = "reserve"
    SETTLE = "settle"
    RELEASE = "release"


class LedgerEntry(TenantModel):
    """One movement of money: a reservation before a call, its settlement (the actual
    cost) and the release of what was held. A run's cost is the sum of its settlements."""

    run = models.ForeignKey(
        "execution.Run", on_delete=models.CASCADE, null=True, related_name="+", db_index=False
    )
    reservation = models.UUIDField()
    entry = models.CharField(max_length=8, choices=LedgerKind.choices)
    kind = models.CharField(max_length=16, choices=CostKind.choices)
    amount_nusd = models.BigIntegerField()
    detail = models.JSONField(default=dict)  # model, tokens, tool, prices, budgets
    at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        indexes = [models.Index(fields=["tenant", "run", "at"], name="ledger_run")]
        verbose_name_plural = "ledger entries"

"""The trace store: traces, spans, content-addressed payloads and redaction policies.

Ids are stored compactly (a trace id as a UUID, span ids as signed 64-bit integers) and
every large value lives once per tenant in Payload, so a span row stays small.
"""

import hashlib
import uuid
from datetime import date, datetime

from django.db import models
from django.utils import timezone

from controlplane.tenancy import TenantModel
from tracing.digests import digest_bytes, digest_text


def tenant_key_column():
    """The tenant FK without an index of its own: each table's composite unique index
    starts with tenant_id and serves tenant-wide queries, so a second index would only
    cost space and insert time on the hottest tables."""
    return models.ForeignKey("controlplane.Tenant", on_delete=models.CASCADE, db_index=False)


class TraceIdField(models.UUIDField):
    """A trace id: PostgreSQL's native 16-byte uuid, and 16 bytes on SQLite too, where
    Django's UUIDField keeps 32 hex characters. Every span row and its unique index
    carry one, so the halving shows in the span path's storage."""

    def get_internal_type(self):
        return "TraceIdField"  # not "UUIDField": SQLite's converter would expect hex text

    def db_type(self, connection):
        return "uuid" if connection.features.has_native_uuid_field else "blob"

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        if not isinstance(value, uuid.UUID):
            value = self.to_python(value)
        return value if connection.features.has_native_uuid_field else value.bytes

    def from_db_value(self, value, expression, connection):
        return self.to_python(value)

    def to_python(self, value):
        if isinstance(value, bytes | memoryview) and len(value) == 16:
            return uuid.UUID(bytes=bytes(value))
        return super().to_python(value)


class DigestField(models.Field):
    """A payload digest: its 16 bytes in the database (PostgreSQL's uuid type, whose
    index entries are 8-byte aligned without padding; a blob on SQLite), its base64url
    text in Python."""

    def get_internal_type(self):
        return "DigestField"

    def db_type(self, connection):
        return "uuid" if connection.vendor == "postgresql" else "blob"

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        raw = digest_bytes(value) if isinstance(value, str) else bytes(value)
        return uuid.UUID(bytes=raw) if connection.vendor == "postgresql" else raw

    def from_db_value(self, value, expression, connection):
        return self.to_python(value)

    def to_python(self, value):
        if isinstance(value, uuid.UUID):
            return digest_text(value.bytes)
        if isinstance(value, bytes | memoryview):
            return digest_text(bytes(value))
        return value


class DayField(models.Field):
    """A date stored as its day number (days since 1970-01-01): two bytes in a SQLite
    row where a DateField's text takes ten, on a row every payload has."""

    EPOCH = date(1970, 1, 1).toordinal()

    def get_internal_type(self):
        return "IntegerField"

    def get_db_prep_value(self, value, connection, prepared=False):
        if value is None:
            return None
        return self.to_python(value).toordinal() - self.EPOCH

    def from_db_value(self, value, expression, connection):
        return None if value is None else date.fromordinal(value + self.EPOCH)

    def to_python(self, value):
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, int):
            return date.fromordinal(value + self.EPOCH)
        return value


class StatusCode(models.IntegerChoices):
    UNSET = 0
    OK = 1
    ERROR = 2


class Trace(TenantModel):
    """One row per trace, kept up to date as its spans arrive (the trace list reads this)."""

    tenant = tenant_key_column()
    trace_id = TraceIdField()
    name = models.CharField(max_length=255, blank=True)  # the root span's name
    service_name = models.CharField(max_length=255, blank=True)
    agent_name = models.CharField(max_length=255, blank=True)
    session_id = models.CharField(max_length=255, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    model = models.CharField(max_length=255, blank=True)
    # Who the agent acted for (user.id, enduser.id, langfuse.user.id ...), redacted.
    user_id = models.CharField(max_length=255, blank=True, default="")
    start_time = models.DateTimeField()
    end_time = models.DateTimeField()
    # Unix nanoseconds of the same instants: arithmetic on them is portable SQL.
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    duration_ms = models.FloatField(default=0)
    status = models.SmallIntegerField(choices=StatusCode.choices, default=StatusCode.UNSET)
    span_count = models.IntegerField(default=0)
    error_count = models.IntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)
    # Retention: hot (0), warm (1), cold (2), being deleted (3); see tracing/retention.
    tier = models.SmallIntegerField(default=0, db_default=0)
    # Where a warm or cold trace's bundle is: key, storage class, size, sha256, counts.
    archive = models.JSONField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "trace_id"], name="trace_unique_id")
        ]
        indexes = [
            models.Index(fields=["tenant", "-start_time"], name="trace_recent"),
            models.Index(fields=["tenant", "session_id", "start_time"], name="trace_session"),
            models.Index(fields=["tenant", "user_id", "start_time"], name="trace_user"),
        ]

    def __str__(self):
        return f"{self.trace_id.hex} {self.name}"


def conventional_name(operation: str, request_model: str, tool_name: str, agent_name: str):
    """The span name the GenAI conventions give an operation ("chat claude-sonnet-4",
    "execute_tool lookup_order", "invoke_agent support"), or None without one."""
    if not operation:
        return None
    if operation == "execute_tool":
        subject = tool_name
    elif operation in ("invoke_agent", "create_agent"):
        subject = agent_name
    else:
        subject = request_model
    return f"{operation} {subject}" if subject else operation


# Low-cardinality labels: a span row holds the id of their combination (SpanLabels).
LABEL_FIELDS = (
    "service_name",
    "agent_name",
    "operation",
    "provider",
    "request_model",
    "response_model",
    "tool_name",
)


class SpanLabels(TenantModel):
    """One combination of span labels, stored once per tenant.

    A tenant's spans repeat a few services, agents, operations, providers, models and
    tools; spans refer to the combination by id instead of repeating the strings in
    every row. Read and written through `tracing.labels`, which caches both ways.
    """

    id = models.AutoField(primary_key=True)  # int4: combinations are few
    tenant = tenant_key_column()
    key = models.BinaryField(max_length=16)  # tracing.labels.label_key of the values
    service_name = models.CharField(max_length=255, blank=True)
    agent_name = models.CharField(max_length=255, blank=True)
    operation = models.CharField(max_length=64, blank=True)
    provider = models.CharField(max_length=64, blank=True)
    request_model = models.CharField(max_length=255, blank=True)
    response_model = models.CharField(max_length=255, blank=True)
    tool_name = models.CharField(max_length=255, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "key"], name="spanlabels_unique_key")
        ]
        verbose_name_plural = "span labels"

    def __str__(self):
        return " / ".join(getattr(self, f) for f in LABEL_FIELDS if getattr(self, f))


class Span(TenantModel):
    # The span's own identity is the key: no surrogate id and its index. An exporter's
    # retry resends the same span: it is stored once. On PostgreSQL the database has
    # an index by (tenant, trace) instead of this key, and the ingest path keeps spans
    # unique under per-trace locks (migration 0015, `rows.lock_traces`). There its
    # columns are in alignment order, widest first (migration 0029, `rows.SpanRow`).
    pk = models.CompositePrimaryKey("tenant", "trace_id", "span_id")
    tenant = tenant_key_column()
    trace_id = TraceIdField()
    span_id = models.BigIntegerField()
    parent_span_id = models.BigIntegerField(null=True, blank=True)
    # NULL: the conventional name (most instrumented spans have it), which the labels
    # give back; see `span_name`.
    name = models.CharField(max_length=255, null=True)
    kind = models.SmallIntegerField(default=0)
    start_ns = models.BigIntegerField()
    end_ns = models.BigIntegerField()
    status_code = models.SmallIntegerField(choices=StatusCode.choices, default=StatusCode.UNSET)
    status_message = models.TextField(blank=True)
    # Service, agent, operation, provider, models and tool, read through
    # `selectors.span_labels`. Label sets are never deleted on their own (a tenant's go
    # with it), so no constraint; and no index: spans are not looked up by their labels.
    labels = models.ForeignKey(
        SpanLabels,
        on_delete=models.DO_NOTHING,
        null=True,
        db_index=False,
        db_constraint=False,
        related_name="+",
    )
    input_tokens = models.IntegerField(null=True, blank=True)
    output_tokens = models.IntegerField(null=True, blank=True)
    session_id = models.CharField(max_length=255, blank=True)
    run_id = models.CharField(max_length=64, blank=True)
    tool_call_id = models.CharField(max_length=255, blank=True)
    # Everything else the span carried: attributes, events, links, small tool values,
    # the digest of its resource and scope ("origin"), payload digests of large values
    # ("refs") and which attributes its columns hold ("m", a bitmask). Stored as JSON
    # compressed with the tenant's span-detail dictionary (read back through
    # `selectors.span_stored_detail`): spans of one agent repeat the same keys and
    # digests, which a dictionary stores once.
    detail_packed = models.BinaryField(default=b"")
    # How many values of each kind were redacted, e.g. {"EMAIL": 2}.
    redactions = models.JSONField(null=True, blank=True)

    def __str__(self):
        return f"{self.trace_id.hex} {self.span_id_hex}"

    @property
    def span_id_hex(self) -> str:
        return (self.span_id & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()

    @property
    def duration_ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def span_name(row: dict) -> str:
    """A span's name from its row's name and labels (a dict with name, operation,
    request_model, tool_name and agent_name), the conventional one where stored NULL."""
    if row["name"] is not None:
        return row["name"]
    return (
        conventional_name(
            row["operation"], row["request_model"], row["tool_name"], row["agent_name"]
        )
        or ""
    )


class PayloadKind(models.IntegerChoices):
    VALUE = 1  # a string or JSON value (a tool's arguments or result, a long text)
    MESSAGE = 2  # one chat message
    LIST = 3  # a list of messages: the digest of a shorter list plus the new messages
    RESOURCE = 4  # the resource and instrumentation scope a span came from
    SPAN_LIST = 5  # a list of messages held in a span's detail: its trace id and span id


class Payload(TenantModel):
    """A value stored once per tenant under a keyed digest of its unredacted form.

    The digest is keyed per tenant, so it cannot be used to guess the raw text; the
    stored content is the redacted value, zstd-compressed, inline when small and in the
    blob store otherwise.

    The digest alone is the key: keyed per tenant, two tenants' digests never meet (one
    tenant cannot make another's without the key), and an index entry of 16 bytes
    without the tenant's 8 fits a third more entries a page. Readers still filter by
    tenant. Columns are in alignment order, largest first, and the table has no more
    than eight: a row with a NULL then keeps the 24-byte tuple header.
    """

    digest = DigestField(primary_key=True)
    tenant = tenant_key_column()
    # Retention deletes payloads not seen since the cutoff; refreshed at most daily.
    last_seen = DayField(default=date.today)
    kind = models.SmallIntegerField(choices=PayloadKind.choices)
    data = models.BinaryField(null=True, blank=True)  # inline content; null: in the blob store
    redactions = models.JSONField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        indexes = [
            # The lists a trace's spans hold, found by their head (the trace id) when
            # the trace leaves the hot tier (tracing/retention/tiers.py); only SPAN_LIST
            # rows are in it, so ingest's other payloads pay nothing for it.
            models.Index(
                models.F("tenant"),
                models.Func(
                    models.F("data"),
                    models.Value(1),
                    models.Value(16),
                    function="substr",
                    output_field=models.BinaryField(),
                ),
                name="payload_span_list_trace",
                condition=models.Q(kind=PayloadKind.SPAN_LIST),
            )
        ]

    def __str__(self):
        return f"{self.get_kind_display()} {self.digest}"


class RedactionPolicy(TenantModel):
    """A tenant's own redaction rules on top of the built-in detectors."""

    # [{"name": "EMPLOYEE_ID", "pattern": "EMP-\\d{6}"}]
    custom_patterns = models.JSONField(default=list, blank=True)
    drop_keys = models.JSONField(default=list, blank=True)  # attribute keys never stored
    never_scan_keys = models.JSONField(default=list, blank=True)  # stored as sent
    # Bumped on every change (0: built-in rules only): payload digests include it, so
    # new rules apply to messages seen before the change too.
    # Infrastructure attributes (server.*, net.*, network.*, url.* hosts) are scanned
    # for personal data only when a tenant turns this on: they name services, not people.
    scan_infrastructure = models.BooleanField(default=False)
    version = models.IntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant"], name="redaction_policy_one_per_tenant")
        ]
        verbose_name_plural = "redaction policies"

    def __str__(self):
        return f"redaction policy v{self.version}"


class PayloadDictionary(TenantModel):
    """A zstd dictionary trained on a tenant's own payloads or span details.

    Both are small (a message, a tool result, a span's attributes and digests), where
    zstd alone finds little to share; a dictionary of the tenant's recurring words, keys
    and JSON shapes does. Each compressed frame names its dictionary (by serial), so old data
    stays readable when a newer dictionary is trained.
    """

    class Purpose(models.IntegerChoices):
        PAYLOAD = 1  # messages and values
        SPAN_DETAIL = 2  # Span.detail_packed

    tenant = tenant_key_column()
    dict_id = models.BigIntegerField()
    # 1, 2, ... per tenant: compact frames name their dictionary in one byte.
    serial = models.SmallIntegerField()
    purpose = models.SmallIntegerField(choices=Purpose.choices, default=Purpose.PAYLOAD)
    data = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    # When a refresh last found this, the newest, still good enough (tracing.services).
    checked_at = models.DateTimeField(null=True, blank=True)

    class Meta(TenantModel.Meta):
        constraints = [
            models.UniqueConstraint(fields=["tenant", "dict_id"], name="payload_dictionary_unique"),
            models.UniqueConstraint(fields=["tenant", "serial"], name="payload_dictionary_serial"),
        ]

    def __str__(self):
        return f"zstd dictionary {self.dict_id}"


# --- Search index --------------------------------------------------------------------
# Written by the `tracing.index_spans` Celery task after spans are stored, never on the
# ingest path; read by tracing/query. See docs/architecture.md ("Trace search").


class SearchDocumentField(models.TextField):
    """A full-text document: a tsvector without positions on PostgreSQL (text on
    SQLite). No model holds one since SearchBlock (migration 0028); the migrations that
    built the earlier index tables still name it."""

    def db_type(self, connection):
        return "tsvector" if connection.vendor == "postgresql" else "text"


class SearchBlock(TenantModel):
    """PostgreSQL's search index: one block of a segment of the tenant's inverted index,
    its terms from first_term to last_term (UTF-8 bytes: the texts' lexemes and the
    traces' attribute pairs) with the row ids of the traces that hold each,
    zstd-compressed (tracing/search/segments.py). No copy of the text (that stays in
    the payload store) and nothing per trace. SQLite keeps its index in a
    contentless FTS5 table, tracing_searchtrace (migration 0024); this table stays empty
    there.

    No constraint on the traces: the index is written after the fact and must not fail
    on a trace retention removed meanwhile; a search joins its row ids to the traces
    still there, and merges drop the others."""

    pk = models.CompositePrimaryKey("tenant", "segment", "first_term")
    tenant = tenant_key_column()
    segment = models.BigIntegerField()
    level = models.SmallIntegerField()
    first_term = models.BinaryField()
    last_term = models.BinaryField()
    data = models.BinaryField()

    def __str__(self):
        return f"search block {self.segment}/{bytes(self.first_term)!r}"


def attribute_pair(key: str, value: str) -> int:
    """A key=value as the attribute filters know it: 8 bytes of its BLAKE2b digest, signed
    as a bigint. Two pairs share one in about 2^-64: at a million distinct pairs a
    tenant, a filter names a trace without the attribute once in 10^7 tenants."""
    digest = hashlib.blake2b(f"{key}\0{value}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def attribute_pairs(keys, values) -> list[int]:
    """Each key with each value, as attribute_pair gives them (an attribute filter's)."""
    return [attribute_pair(key, value) for key in keys for value in values]


class TraceAttribute(TenantModel):
    """Each distinct attribute key=value a trace's spans (or their resources) carried,
    as its digest (`attribute_pair`): the filters ask whether a trace has a key=value,
    never what the values are. Keyed by the whole row, WITHOUT ROWID on SQLite
    (migrations 0020, 0027). SQLite only: PostgreSQL posts the pairs as terms of its
    search index (tracing/search/attributes.py, migration 0030) and this table stays
    empty there, as tracing_searchblock does on SQLite."""

    pk = models.CompositePrimaryKey("tenant", "pair", "trace_id")
    tenant = tenant_key_column()
    pair = models.BigIntegerField()
    trace_id = TraceIdField()

    def __str__(self):
        return f"{self.pair:016x} in {self.trace_id.hex}"


# Coding agents' metrics live with their package; Django finds app models here.
from tracing.codingagents.models import MetricKind, MetricPoint  # noqa: E402, F401

# Retention's models live with their code (tracing/retention) and belong to this app.
from tracing.retention.models import (  # noqa: E402, F401
    ErasureRequest,
    LegalHold,
    RemovalRecord,
    RetentionPolicy,
    StorageUsage,
    TraceMark,
)

"""The one path of a span: decode → normalise → redact → externalise → write → publish.

Every span takes it, from OTLP/HTTP, OTLP/gRPC or a managed run's in-process exporter,
so redaction, cost and alerts cannot be bypassed.
"""

import uuid
from collections import Counter
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from operator import attrgetter

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.tenancy import tenant_scope
from tracing import labels
from tracing.calls import LLM_OPERATIONS, CallReports, call_key
from tracing.ingest import rows
from tracing.ingest.dictionaries import DetailPacker
from tracing.ingest.normalise import (
    NormalSpan,
    ResentMessages,
    attributes,
    normalise,
    span_problem,
)
from tracing.ingest.payloads import LEAF_MIN, PayloadBatch, PayloadsSwept
from tracing.ingest.policy import TenantRedaction, tenant_redaction
from tracing.ingest.redact import URL_KEYS, is_infrastructure
from tracing.models import PayloadKind, Span, StatusCode, conventional_name
from tracing.retention.selectors import archived_span_keys
from tracing.selectors import SourceInputs
from tracing.signals import spans_ingested

MAX_REPORTED_ERRORS = 5
# On a replayed chat span sent without its conversation: the source's span that has it.
SOURCE_SPAN = "flightdeck.replay.source_span"


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: int = 0
    duplicates: int = 0
    errors: list[str] = field(default_factory=list)

    def reject(self, reason: str) -> None:
        self.rejected += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append(reason)

    @property
    def error_message(self) -> str:
        if not self.rejected:
            return ""
        more = self.rejected - len(self.errors)
        tail = f" (and {more} more)" if more > 0 else ""
        return "; ".join(self.errors) + tail


def signed64(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def spans_ingest(*, tenant_id: int, request, sources: SourceInputs | None = None) -> IngestResult:
    """Store an ExportTraceServiceRequest's spans for one tenant.

    Invalid spans are rejected one by one and the valid ones kept. Raises database and
    blob store errors unchanged, so the caller can answer 503 and the exporter retries.
    `sources`: a replay's source trace (given by the in-process exporter of a replay,
    never by OTLP), whose chat spans its own may name for their conversation.
    """
    try:
        return _spans_ingest(tenant_id, request, sources)
    except PayloadsSwept:
        # Retention removed payloads while the batch was prepared, and nothing was
        # committed: once more, looking its payloads up as they are now.
        return _spans_ingest(tenant_id, request, sources)


def _spans_ingest(tenant_id: int, request, sources: SourceInputs | None) -> IngestResult:
    result = IngestResult()
    with tenant_scope(tenant_id):
        collected = _collect(request, result)
        collected = _drop_stored(tenant_id, collected, result)
        if not collected:
            return result
        setup = tenant_redaction(tenant_id)
        resent = ResentMessages()
        normal = [normalise(span, resource, scope, resent) for span, resource, scope in collected]
        batch = PayloadBatch(
            tenant_id=tenant_id, digest_key=setup.digest_key, redactor=setup.redactor
        )
        builder = _RowBuilder(tenant_id, setup, batch, DetailPacker(tenant_id), sources)
        pending = [builder.start(n) for n in normal]
        payload_rows = batch.prepare()  # uploads blobs, outside the transaction
        span_rows = [builder.finish(p) for p in pending]
        trained = builder.details.offer_samples()
        if trained:  # the batch trained the first dictionary: it is stored with it
            for row in span_rows:
                row.detail_packed = trained.pack(row.detail_packed)
        with rows.write_turn(), transaction.atomic():
            rows.insert_ignoring_conflicts(
                "tracing_payload",
                rows.PAYLOAD_COLUMNS,
                [rows.payload_values(row) for row in payload_rows],
            )
            batch.refresh_last_seen()
            _set_label_ids(tenant_id, span_rows)
            if rows.lock_traces(tenant_id, {n.trace_id for n in normal}):
                span_rows = _not_stored(span_rows)
            # Read while the traces are ours and before this batch is in them.
            reports = _calls_reported(tenant_id, normal)
            stored = rows.insert_ignoring_conflicts(
                "tracing_span",
                rows.SPAN_COLUMNS,
                [rows.span_values(row) for row in span_rows],
                returning=("trace_id", "span_id"),
            )
            normal = _only_stored(normal, stored, result)
            _traces_upsert(_trace_summaries(tenant_id, normal, reports))
            batch.check_unswept()
            transaction.on_commit(batch.committed)
            transaction.on_commit(lambda: _publish(tenant_id, normal))
        result.accepted = len(normal)
    return result


def _only_stored(normal: list[NormalSpan], stored: list[tuple], result: IngestResult) -> list:
    """The spans this request stored. Another request can store some of them first (an
    exporter's retry while the first attempt was still being written): those are
    counted in the trace summary and published once, by the request that stored them."""
    if len(stored) == len(normal):
        return normal
    ours = {(t.bytes if isinstance(t, uuid.UUID) else bytes(t), s) for t, s in stored}
    kept = [n for n in normal if (n.trace_id, signed64(n.span_id)) in ours]
    result.duplicates += len(normal) - len(kept)
    return kept


def _set_label_ids(tenant_id: int, span_rows: list[rows.SpanRow]) -> None:
    """Span rows carry their labels until here; the rows get the labels' ids."""
    ids = labels.ids_for(tenant_id, {row.labels for row in span_rows})
    for row in span_rows:
        row.labels_id = ids[row.labels]


def _collect(request, result: IngestResult) -> list:
    collected, seen = [], set()
    for resource_spans in request.resource_spans:
        resource = attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            scope = {}
            if scope_spans.scope.name:
                scope["name"] = scope_spans.scope.name
            if scope_spans.scope.version:
                scope["version"] = scope_spans.scope.version
            for span in scope_spans.spans:
                problem = span_problem(span)
                if problem:
                    label = span.name or span.span_id.hex() or "?"
                    result.reject(f"span {label!r}: {problem}")
                    continue
                key = (span.trace_id, span.span_id)
                if key in seen:
                    result.duplicates += 1
                    continue
                seen.add(key)
                collected.append((span, resource, scope))
    return collected


def _stored_of(trace_ids) -> set[tuple[uuid.UUID, int]]:
    """(trace id, span id) of the spans of these traces stored already as rows."""
    return set(Span.objects.filter(trace_id__in=trace_ids).values_list("trace_id", "span_id"))


def _drop_stored(tenant_id: int, collected: list, result: IngestResult) -> list:
    """An exporter that retries resends spans already stored: skip them before any work.
    Spans of a trace moved to warm or cold count as stored too (its row lists them)."""
    if not collected:
        return collected
    trace_ids = {uuid.UUID(bytes=span.trace_id) for span, _, _ in collected}
    stored = _stored_of(trace_ids) | archived_span_keys(tenant_id=tenant_id, trace_ids=trace_ids)
    if not stored:
        return collected
    kept = []
    for item in collected:
        span = item[0]
        if (uuid.UUID(bytes=span.trace_id), signed64(span.span_id)) in stored:
            result.duplicates += 1
        else:
            kept.append(item)
    return kept


def _not_stored(span_rows: list[rows.SpanRow]) -> list[rows.SpanRow]:
    """Under the traces' locks, where no unique key would: leave out the spans that a
    request overlapping this one (an exporter's retry) stored since `_drop_stored`.
    Those are counted as duplicates with the others this request did not insert."""
    stored = _stored_of({row.trace_id for row in span_rows})
    return [row for row in span_rows if (row.trace_id, row.span_id) not in stored]


@dataclass(slots=True)
class _Pending:
    """A span between the builder's two halves: what `start` made of it, kept for
    `finish` until the batch's payloads are known."""

    span: NormalSpan
    detail: dict
    digests: list[str]  # the payloads it references: their redactions count too
    counts: Counter  # redactions so far
    name: str
    status_message: str


class _RowBuilder:
    """Turns normalised spans into Span rows, sending large values to the payload batch."""

    def __init__(
        self,
        tenant_id: int,
        setup: TenantRedaction,
        batch: PayloadBatch,
        details: DetailPacker,
        sources: SourceInputs | None = None,
    ):
        self.tenant_id = tenant_id
        self.sources = sources
        self.setup = setup
        self.batch = batch
        self.details = details
        self.redactor = setup.redactor
        self.trace_params: dict[bytes, object] = {}  # trace id -> its column value

    def _attrs(self, attrs: dict, counts: Counter, refs: dict | None = None, digests=None) -> dict:
        """Attributes to keep in the row, redacted. With `refs`, long strings become
        payloads referenced there; without (event and link attributes), they stay."""
        kept = {}
        infra = not self.setup.scan_infrastructure
        for key, value in attrs.items():
            if key in self.setup.drop_keys:
                continue
            scan = key not in self.setup.never_scan_keys
            if infra and scan and is_infrastructure(key):
                kept[key] = value  # a service's address, not a person's
            elif refs is not None and isinstance(value, str) and len(value) >= LEAF_MIN:
                refs[key] = self.batch.value(value, scan=scan)
                digests.append(refs[key])
            elif infra and scan and key in URL_KEYS and isinstance(value, str):
                kept[key] = self.redactor.redact_url(value, counts)
            else:
                kept[key] = self.redactor.redact_value(value, counts) if scan else value
        return kept

    def start(self, n: NormalSpan) -> _Pending:
        counts: Counter = Counter()
        refs: dict = {}
        digests: list[str] = []
        detail: dict = {}
        never = self.setup.never_scan_keys
        attrs = self._attrs(n.attributes, counts, refs, digests)
        if attrs:
            detail["attributes"] = attrs
        owner = (n.trace_id, signed64(n.span_id))
        if n.input_messages:
            digest, items = self.batch.message_list(
                n.input_messages, scan="gen_ai.input.messages" not in never, owner=owner
            )
            refs["in"] = digest
            digests.extend(items)
        elif (items := self._source_input(n)) is not None:
            refs["in"] = self.batch.stored_list(items, owner=owner)
            digests.extend(items)
        if n.output_messages:
            scan = "gen_ai.output.messages" not in never
            refs["out"] = [self.batch.message(m, scan=scan) for m in n.output_messages]
            self.batch.output(owner, refs["out"])
            digests.extend(refs["out"])
        if n.system_instructions:
            refs["sys"] = self.batch.value(
                n.system_instructions, scan="gen_ai.system_instructions" not in never
            )
            digests.append(refs["sys"])
        for key, value in n.tool_values.items():
            if key in self.setup.drop_keys:
                continue
            scan = key not in never
            if isinstance(value, str) and len(value) < LEAF_MIN:
                # Small arguments and results stay in the row: a payload row costs more.
                tool = detail.setdefault("tool", {})
                tool[key] = self.redactor.redact_short(value, counts) if scan else value
                continue
            refs[key] = self.batch.value(value, scan=scan)
            digests.append(refs[key])
        if n.events:
            detail["events"] = [
                {**e, "attributes": self._attrs(e["attributes"], counts)}
                if "attributes" in e
                else e
                for e in n.events
            ]
        if n.links:
            detail["links"] = [
                {**link, "attributes": self._attrs(link["attributes"], counts)}
                if "attributes" in link
                else link
                for link in n.links
            ]
        if n.resource or n.scope:
            # Shared by every span an SDK sends: stored once, referenced by digest.
            detail["origin"] = self.batch.value(
                {"resource": n.resource, "scope": n.scope}, kind=PayloadKind.RESOURCE
            )
        if refs:
            detail["refs"] = refs
        if n.columns_hold:
            detail["m"] = n.columns_hold
        name = self.redactor.redact_short(n.name, counts)[:255]
        status_message = self.redactor.redact(n.status_message, counts)
        return _Pending(
            span=n,
            detail=detail,
            digests=digests,
            counts=counts,
            name=name,
            status_message=status_message,
        )

    def _source_input(self, n: NormalSpan) -> list[str] | None:
        """A replayed call's conversation: the digests of its source span's input."""
        source_span = n.attributes.get(SOURCE_SPAN)
        if self.sources is None or not isinstance(source_span, str):
            return None
        return self.sources.of(source_span)

    def finish(self, pending: _Pending) -> rows.SpanRow:
        n, counts = pending.span, pending.counts
        service = self._column(n.service_name, 255, counts)
        agent = self._column(n.agent_name, 255, counts)
        # The trace summary takes the user from the span, so it is redacted here, once.
        n.user_id = self._column(n.user_id, 255, counts)
        counts.update(self.batch.redactions_of(pending.digests))
        refs = pending.detail.get("refs", {})
        if "in" in refs:
            refs["in"] = self.batch.list_ref(refs["in"])  # decided once the batch was seen
        name = pending.name
        if name == conventional_name(n.operation, n.request_model, n.tool_name, agent):
            name = None  # the labels give it back
        return rows.SpanRow(
            tenant_id=self.tenant_id,
            trace_id=self._trace_param(n.trace_id),
            span_id=signed64(n.span_id),
            parent_span_id=signed64(n.parent_span_id) if n.parent_span_id else None,
            name=name,
            kind=n.kind,
            start_ns=n.start_ns,
            end_ns=n.end_ns,
            status_code=n.status_code,
            status_message=pending.status_message,
            labels_id=None,
            input_tokens=n.input_tokens,
            output_tokens=n.output_tokens,
            session_id=self._column(n.session_id, 255, counts),
            run_id=self._column(n.run_id, 64, counts),
            tool_call_id=self._column(n.tool_call_id, 255, counts),
            detail_packed=self.details.pack(pending.detail),
            redactions=rows.json_param(dict(counts) or None),
            # In LABEL_FIELDS order.
            labels=(
                service,
                agent,
                n.operation[:64],
                n.provider[:64],
                n.request_model[:255],
                n.response_model[:255],
                n.tool_name[:255],
            ),
        )

    def _trace_param(self, trace_id: bytes):
        # Once per trace, not per span: a UUID and the connection's features each time
        # were a few per cent of the span path.
        param = self.trace_params.get(trace_id)
        if param is None:
            param = self.trace_params[trace_id] = rows.uuid_param(uuid.UUID(bytes=trace_id))
        return param

    def _column(self, value: str, length: int, counts: Counter) -> str:
        """A column value, redacted like everything else: search shows it."""
        return self.redactor.redact_short(value, counts)[:length] if value else ""


def _ns_to_datetime(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)


@dataclass(slots=True)
class _TraceSummary:
    """What a batch adds to a trace's tracing_trace row: its columns in table order."""

    tenant_id: int
    trace_id: object  # uuid_param
    name: str = ""
    service_name: str = ""
    agent_name: str = ""
    session_id: str = ""
    run_id: str = ""
    model: str = ""
    user_id: str = ""
    # Times as the connection takes them; set once all the batch's spans are in.
    start_time: object = None
    end_time: object = None
    start_ns: int = 0
    end_ns: int = 0
    duration_ms: float = 0.0
    status: int = 0
    span_count: int = 0
    error_count: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    updated_at: object = None


_TRACE_COLUMNS = tuple(f.name for f in fields(_TraceSummary))
_trace_values = attrgetter(*_TRACE_COLUMNS)

# Portable between PostgreSQL and SQLite (both have INSERT ... ON CONFLICT): counts add
# up, the time range widens, the first non-empty label wins and errors stick, so
# batches of one trace may arrive in any order and from several processes at once.
_TRACE_UPSERT = """
INSERT INTO tracing_trace ({columns}) VALUES {values}
ON CONFLICT (tenant_id, trace_id) DO UPDATE SET
  name = CASE WHEN excluded.name <> '' THEN excluded.name ELSE tracing_trace.name END,
  service_name = CASE WHEN tracing_trace.service_name = '' THEN excluded.service_name
                      ELSE tracing_trace.service_name END,
  agent_name = CASE WHEN tracing_trace.agent_name = '' THEN excluded.agent_name
                    ELSE tracing_trace.agent_name END,
  session_id = CASE WHEN tracing_trace.session_id = '' THEN excluded.session_id
                    ELSE tracing_trace.session_id END,
  run_id = CASE WHEN tracing_trace.run_id = '' THEN excluded.run_id ELSE tracing_trace.run_id END,
  model = CASE WHEN tracing_trace.model = '' THEN excluded.model ELSE tracing_trace.model END,
  user_id = CASE WHEN tracing_trace.user_id = '' THEN excluded.user_id
                 ELSE tracing_trace.user_id END,
  start_time = CASE WHEN excluded.start_ns < tracing_trace.start_ns THEN excluded.start_time
                    ELSE tracing_trace.start_time END,
  end_time = CASE WHEN excluded.end_ns > tracing_trace.end_ns THEN excluded.end_time
                  ELSE tracing_trace.end_time END,
  duration_ms = ((CASE WHEN excluded.end_ns > tracing_trace.end_ns THEN excluded.end_ns
                       ELSE tracing_trace.end_ns END)
               - (CASE WHEN excluded.start_ns < tracing_trace.start_ns THEN excluded.start_ns
                       ELSE tracing_trace.start_ns END)) / 1000000.0,
  start_ns = CASE WHEN excluded.start_ns < tracing_trace.start_ns THEN excluded.start_ns
                  ELSE tracing_trace.start_ns END,
  end_ns = CASE WHEN excluded.end_ns > tracing_trace.end_ns THEN excluded.end_ns
                ELSE tracing_trace.end_ns END,
  status = CASE WHEN excluded.status > tracing_trace.status THEN excluded.status
                ELSE tracing_trace.status END,
  span_count = tracing_trace.span_count + excluded.span_count,
  error_count = tracing_trace.error_count + excluded.error_count,
  input_tokens = tracing_trace.input_tokens + excluded.input_tokens,
  output_tokens = tracing_trace.output_tokens + excluded.output_tokens,
  updated_at = excluded.updated_at
"""


def _reports_call(n: NormalSpan) -> bool:
    return n.operation in LLM_OPERATIONS and (
        n.input_tokens is not None or n.output_tokens is not None
    )


def _calls_reported(tenant_id: int, spans: list[NormalSpan]) -> CallReports:
    """The LLM calls that the stored spans of these spans' traces report, so a second
    report of one in a later batch (the SDK's inner span is exported first, its
    instrumentation's outer span with the next batch) stays out of the token sums.
    Two reports of a call overlap in time, so only stored spans overlapping this
    batch's reports are read: a handful, however long the trace."""
    reports = CallReports()
    calls = [n for n in spans if _reports_call(n)]
    if not calls:
        return reports
    stored = (
        Span.objects.filter(
            trace_id__in={uuid.UUID(bytes=n.trace_id) for n in calls},
            start_ns__lte=max(n.end_ns for n in calls),
            end_ns__gte=min(n.start_ns for n in calls),
        )
        .filter(Q(input_tokens__isnull=False) | Q(output_tokens__isnull=False))
        .values_list("trace_id", "span_id", "parent_span_id", "labels_id", "detail_packed")
    )
    stored = list(stored)
    if not stored:
        return reports
    from tracing.selectors import span_detail_unpack

    values = labels.values_of(tenant_id, {row[3] for row in stored})
    for trace_id, span_id, parent, labels_id, packed in stored:
        if values[labels_id]["operation"] in LLM_OPERATIONS:
            detail = span_detail_unpack(tenant_id=tenant_id, packed=packed)
            key = call_key(detail.get("attributes", {}))
            trace = trace_id.bytes if isinstance(trace_id, uuid.UUID) else bytes(trace_id)
            reports.add(trace, span_id, parent, key)
    return reports


def _trace_summaries(
    tenant_id: int, spans: list[NormalSpan], reports: CallReports
) -> list[_TraceSummary]:
    # A second report of an LLM call leaves the token sums (tracing.calls); within the
    # batch the outer one counts, as in billing's costing.
    repeats = set()
    for n in sorted(filter(_reports_call, spans), key=lambda n: (n.trace_id, n.start_ns)):
        span_id = signed64(n.span_id)
        parent = signed64(n.parent_span_id) if n.parent_span_id else None
        if not reports.counts(n.trace_id, span_id, parent, call_key(n.attributes)):
            repeats.add((n.trace_id, n.span_id))
    summaries: dict[bytes, _TraceSummary] = {}
    for n in spans:
        s = summaries.get(n.trace_id)
        if s is None:
            s = summaries[n.trace_id] = _TraceSummary(
                tenant_id=tenant_id,
                trace_id=rows.uuid_param(uuid.UUID(bytes=n.trace_id)),
                start_ns=n.start_ns,
                end_ns=n.end_ns,
            )
        if not n.parent_span_id:
            s.name = n.name
            s.service_name = n.service_name or s.service_name
        s.service_name = s.service_name or n.service_name
        s.agent_name = s.agent_name or n.agent_name
        s.session_id = s.session_id or n.session_id
        s.run_id = s.run_id or n.run_id
        s.user_id = s.user_id or n.user_id
        s.model = s.model or n.response_model or n.request_model
        s.start_ns = min(s.start_ns, n.start_ns)
        s.end_ns = max(s.end_ns, n.end_ns)
        s.status = max(s.status, n.status_code)
        s.span_count += 1
        s.error_count += n.status_code == StatusCode.ERROR
        if (n.trace_id, n.span_id) not in repeats:
            s.input_tokens += n.input_tokens or 0
            s.output_tokens += n.output_tokens or 0
    adapt_dt = connection.ops.adapt_datetimefield_value
    now = adapt_dt(timezone.now())
    for s in summaries.values():
        s.name, s.service_name = s.name[:255], s.service_name[:255]
        s.agent_name, s.session_id = s.agent_name[:255], s.session_id[:255]
        s.run_id, s.model = s.run_id[:64], s.model[:255]
        s.start_time = adapt_dt(_ns_to_datetime(s.start_ns))
        s.end_time = adapt_dt(_ns_to_datetime(s.end_ns))
        s.duration_ms = (s.end_ns - s.start_ns) / 1e6
        s.updated_at = now
    return list(summaries.values())


def _traces_upsert(traces: list[_TraceSummary]) -> None:
    summaries = [_trace_values(s) for s in traces]
    placeholder = "(" + ", ".join(["%s"] * len(_TRACE_COLUMNS)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(summaries), 200):
            chunk = summaries[start : start + 200]
            sql = _TRACE_UPSERT.format(
                columns=", ".join(_TRACE_COLUMNS), values=", ".join([placeholder] * len(chunk))
            )
            cursor.execute(sql, [value for row in chunk for value in row])


def _publish(tenant_id: int, spans: list[NormalSpan]) -> None:
    spans_ingested.send(
        sender="tracing",
        tenant_id=tenant_id,
        trace_ids=sorted({n.trace_id.hex() for n in spans}),
        spans=[(n.trace_id.hex(), n.span_id.hex()) for n in spans],
    )

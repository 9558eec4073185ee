"""Reads of the trace store: spans with their payloads put back together."""

import threading
import uuid
from collections import Counter
from operator import itemgetter

from django.db import connection
from django.db.models import Q

from controlplane.blobstore import get_blob_store
from controlplane.tenancy import current_tenant_id
from tracing import labels
from tracing.digests import DIGEST_BYTES, digest_text
from tracing.ingest.dictionaries import unpack, unpack_json
from tracing.ingest.normalise import COLUMN_ATTRIBUTES
from tracing.ingest.payloads import LEAF_KEY, LIST_KINDS, blob_key, from_canonical
from tracing.ingest.policy import tenant_redaction
from tracing.models import Payload, PayloadKind, RedactionPolicy, Span, span_name

ZERO = bytes(DIGEST_BYTES)


def span_stored_detail(*, span: Span) -> dict:
    """What a span's row holds besides its columns, unpacked: attributes, events,
    links, small tool values, its origin's digest ("origin"), the digests of its large
    values ("refs") and which attributes its columns hold ("m")."""
    return span_detail_unpack(tenant_id=span.tenant_id, packed=span.detail_packed)


def span_detail_unpack(*, tenant_id: int, packed: bytes) -> dict:
    """span_stored_detail of a row read as values rather than as a Span."""
    return unpack_json(tenant_id, packed)


# Two parameters a key: far below SQLite's 32,766 and PostgreSQL's 65,535, and above
# a task's batch (up to 512 spans), so a batch is one statement.
KEYS_PER_STATEMENT = 1000


def span_values_by_key(
    *, tenant_id: int, keys: list[tuple[uuid.UUID, int]], fields: tuple[str, ...]
) -> list[tuple]:
    """The given columns of the spans with these (trace id, span id) keys, as tuples
    in start order (trace ids as UUIDs); keys not stored are left out.

    The keys are joined as a VALUES list, one primary-key probe a span: the ORM's
    `trace_id IN (...) AND span_id IN (...)` has SQLite probe every pair of the two
    lists (a 500-span batch of 25 traces: 12,500 probes), and its SQL takes as long to
    build as to run."""
    meta = Span._meta
    trace_field = meta.get_field("trace_id")
    columns = ", ".join(f's."{meta.get_field(f).column}"' for f in fields)
    # PostgreSQL types a VALUES list's parameters from the first row only when told.
    pair = "(%s::uuid, %s::bigint)" if connection.vendor == "postgresql" else "(%s, %s)"
    # A batch holds a few traces' many spans: each trace id is converted once, both ways.
    prepared = {t: trace_field.get_db_prep_value(t, connection) for t, _ in keys}
    found: list[tuple] = []
    with connection.cursor() as cursor:
        for start in range(0, len(keys), KEYS_PER_STATEMENT):
            chunk = keys[start : start + KEYS_PER_STATEMENT]
            sql = (
                f"WITH k(trace_id, span_id) AS (VALUES {', '.join([pair] * len(chunk))}) "  # noqa: S608 - fixed names, values bound
                f'SELECT {columns} FROM k JOIN "{meta.db_table}" s ON s."tenant_id" = %s '
                'AND s."trace_id" = k.trace_id AND s."span_id" = k.span_id'
            )
            params = [v for trace_id, span_id in chunk for v in (prepared[trace_id], span_id)]
            cursor.execute(sql, [*params, tenant_id])
            found.extend(cursor.fetchall())
    if "trace_id" in fields:  # SQLite gives its 16 bytes
        at = fields.index("trace_id")
        ids = {bytes(v) if isinstance(v, memoryview) else v: t for t, v in prepared.items()}
        found = [
            (*r[:at], ids.get(r[at]) or trace_field.to_python(r[at]), *r[at + 1 :]) for r in found
        ]
    if "start_ns" in fields:
        found.sort(key=itemgetter(fields.index("start_ns")))
    return found


def span_labels(*, span: Span) -> dict:
    """The span's service, agent, operation, provider, models and tool, by name."""
    return labels.values_of(span.tenant_id, [span.labels_id])[span.labels_id]


def span_display_name(*, span: Span) -> str:
    """The name the span was sent with, or the conventional one it was stored without."""
    return span_name({"name": span.name, **span_labels(span=span)})


class PayloadReader:
    """Fetches payloads by digest (database rows, then the blob store), caching them."""

    def __init__(self, tenant_id: int):
        self.tenant_id = tenant_id
        self.rows: dict[str, tuple[int, bytes]] = {}
        self.decoded: dict[str, object] = {}
        # Payloads of the warm and cold traces read (their bundles'), looked at first.
        self.archived: list[dict[str, tuple[int, bytes]]] = []

    def fetch(self, digests) -> None:
        wanted = set(digests) - set(self.rows)
        for payloads in self.archived:
            for digest in wanted & payloads.keys():
                self.rows[digest] = payloads[digest]
            wanted -= payloads.keys()
        if not wanted:
            return
        # Raw, the tenant explicit: the ORM's SQL for a few hundred digests costs more
        # than the lookup, and each digest is converted once (its text kept, not rebuilt).
        field = Payload._meta.get_field("digest")
        prepared = {field.get_db_prep_value(d, connection): d for d in sorted(wanted)}
        keys = list(prepared)
        with connection.cursor() as cursor:
            for start in range(0, len(keys), 500):
                chunk = keys[start : start + 500]
                cursor.execute(
                    f'SELECT "digest", "kind", "data" FROM "{Payload._meta.db_table}" '  # noqa: S608 - fixed names, values bound
                    f'WHERE "tenant_id" = %s AND "digest" IN ({", ".join(["%s"] * len(chunk))})',
                    [self.tenant_id, *chunk],
                )
                for raw, kind, data in cursor.fetchall():
                    key = bytes(raw) if isinstance(raw, memoryview) else raw
                    digest = prepared.get(key) or field.to_python(raw)
                    if data is None:
                        data = get_blob_store().get(blob_key(self.tenant_id, digest))
                    self.rows[digest] = (kind, bytes(data))

    def spans(self, trace_ids, *, fields=None) -> list[Span]:
        """The traces' spans, by start time: rows of hot traces (and late spans of
        archived ones), and the spans of warm and cold traces from their bundles, whose
        payloads this reader then has too."""
        trace_ids = list(trace_ids)
        rows = Span.objects.filter(trace_id__in=trace_ids).order_by("start_ns", "span_id")
        found = list(rows.only(*fields) if fields else rows)
        from tracing.retention.bundles import bundles_open

        stored = {(span.trace_id, span.span_id) for span in found}
        for bundle in bundles_open(tenant_id=self.tenant_id, trace_ids=trace_ids):
            if not any(p is bundle.payloads for p in self.archived):
                self.archived.append(bundle.payloads)
            # A span sent again after its trace was archived is stored as a row: once.
            found.extend(s for s in bundle.spans if (s.trace_id, s.span_id) not in stored)
        if any(getattr(span, "archived", False) for span in found):
            found.sort(key=lambda span: (span.start_ns, span.span_id))
        return found

    def _body(self, digest: str) -> tuple[int, bytes]:
        if digest not in self.rows:
            self.fetch([digest])
        if digest not in self.rows:
            raise KeyError(f"payload {digest} is missing")
        return self.rows[digest]

    def prefetch(self, digests) -> None:
        """Fetch payloads and the long strings of those that are messages: one query
        for the messages, one for all their strings, instead of a query a string."""
        digests = list(digests)
        self.fetch(digests)
        leaves: list[str] = []
        for digest in digests:
            if self.rows.get(digest, (None,))[0] == PayloadKind.MESSAGE:
                _leaves_of(self._decoded(digest), leaves)
        self.fetch(leaves)

    def values(self, digests: list[str]) -> list:
        self.prefetch(digests)
        return [self.value(d) for d in digests]

    def _decoded(self, digest: str):
        if digest not in self.decoded:
            self.decoded[digest] = from_canonical(unpack(self.tenant_id, self._body(digest)[1]))
        return self.decoded[digest]

    def value(self, digest: str):
        kind, _ = self._body(digest)
        if kind in LIST_KINDS:
            return self.message_list(digest)
        value = self._decoded(digest)
        if kind == PayloadKind.MESSAGE:
            value = self._with_leaves(value)
        return value

    def _with_leaves(self, value):
        if isinstance(value, dict):
            if len(value) == 1 and LEAF_KEY in value:
                return self.value(value[LEAF_KEY])
            return {k: self._with_leaves(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._with_leaves(v) for v in value]
        return value

    def message_list(self, digest: str) -> list:
        return self.values(Conversations(self).of_list(digest))

    def message_parts(self, digests: list[str], *, types: tuple[str, ...]) -> list[list]:
        """Each message's parts of the given types, whole: for a reader of some parts
        (tool calls) of many messages, which then never reads the other parts' text.
        One query for the messages, one for the long strings of the parts kept. The
        parts are the reader's own, shared with its cache: read them, do not change them."""
        self.fetch(digests)
        kept = []
        for digest in digests:
            kind, _ = self._body(digest)
            message = self._decoded(digest) if kind == PayloadKind.MESSAGE else None
            parts = message.get("parts") if isinstance(message, dict) else None
            kept.append(
                [p for p in parts if isinstance(p, dict) and p.get("type") in types]
                if isinstance(parts, list)
                else []
            )
        leaves: list[str] = []
        _leaves_of(kept, leaves)
        if not leaves:  # nothing stored apart: the parts are whole as decoded
            return kept
        self.fetch(leaves)
        return [[self._with_leaves(p) for p in parts] for parts in kept]


def _leaves_of(value, out: list[str]) -> None:
    if isinstance(value, dict):
        if len(value) == 1 and LEAF_KEY in value:
            out.append(value[LEAF_KEY])
            return
        for item in value.values():
            _leaves_of(item, out)
    elif isinstance(value, list):
        for item in value:
            _leaves_of(item, out)


class Conversations:
    """The message digests of conversations: stored lists and chat spans' inputs.

    A link of a conversation's chain is a payload row (LIST: the digest of a shorter
    list, or zeros, then message digests; SPAN_LIST: the trace and span id of a span
    holding the list) or a span's input ("in" in its refs): the digest of a stored
    list, or the list's form in the span itself: {"p": the previous chat span of the
    trace, whose input and output come first} or {"h": a stored list's digest}, then
    "i", the messages after them. Chains are walked one link a round, all together:
    one query a round rather than one a link. A link removed by retention ends its
    chain: what is left is returned.
    """

    def __init__(self, reader: PayloadReader):
        self.reader = reader
        self.refs: dict[tuple, dict] = {}  # (trace id, span id) -> the span's refs
        self.spans: dict[tuple, Span] = {}  # loaded, their refs not unpacked yet
        self.loaded: set = set()  # traces all of whose spans are known here
        self.resolved: dict[tuple, list[str]] = {}

    def inputs(self, refs: dict[tuple, dict]) -> dict[tuple, list[str]]:
        """(trace id, span id) -> digests of the span's input messages, for the spans
        given ((trace id, span id) -> the refs of their stored detail) that have input
        messages."""
        self.refs.update(refs)
        keys = [("span", *key) for key, span_refs in refs.items() if "in" in span_refs]
        self._walk(keys)
        return {key[1:]: self._resolve(key) for key in keys}

    def of_list(self, digest: str) -> list[str]:
        key = ("row", digest)
        self._walk([key])
        return self._resolve(key)

    # A link is ("row", digest) or ("span", trace id, span id).

    def _walk(self, keys) -> None:
        seen, frontier = set(), set(keys)
        while frontier:
            seen |= frontier
            self.reader.fetch(k[1] for k in frontier if k[0] == "row")
            traces = {
                k[1]
                for k in frontier
                if k[0] == "span" and k[1:] not in self.refs and k[1:] not in self.spans
            }
            self._load(traces - self.loaded)
            frontier = {d for k in frontier if (d := self._before(k)) is not None} - seen

    def _load(self, trace_ids) -> None:
        if not trace_ids:
            return
        for span in self.reader.spans(
            trace_ids, fields=("tenant_id", "trace_id", "span_id", "detail_packed")
        ):
            key = (span.trace_id, span.span_id)
            if key not in self.refs:
                self.spans.setdefault(key, span)
        self.loaded |= trace_ids

    def _refs(self, key) -> dict:
        refs = self.refs.get(key[1:])
        if refs is None:
            span = self.spans.pop(key[1:], None)
            if span is None:
                return {}
            # Unpacked only once a chain reaches it: most spans of a trace are not on one.
            refs = self.refs[key[1:]] = span_stored_detail(span=span).get("refs", {})
        return refs

    def _before(self, key):
        """The link this one continues, if any."""
        if key[0] == "row":
            if key[1] not in self.reader.rows:
                return None
            kind, body = self.reader.rows[key[1]]
            if kind == PayloadKind.SPAN_LIST:
                return (
                    "span",
                    uuid.UUID(bytes=body[:16]),
                    int.from_bytes(body[16:24], "big", signed=True),
                )
            head = body[:DIGEST_BYTES]
            return ("row", digest_text(head)) if head != ZERO else None
        ref = self._refs(key).get("in")
        if isinstance(ref, str):
            return ("row", ref)
        if isinstance(ref, dict) and "p" in ref:
            return ("span", key[1], ref["p"])
        if isinstance(ref, dict) and ref.get("h"):
            return ("row", ref["h"])
        return None

    def _after(self, key) -> list[str]:
        """The messages this link adds to the one it continues."""
        if key[0] == "row":
            kind, body = self.reader.rows.get(key[1], (None, b""))
            if kind != PayloadKind.LIST:
                return []
            return [
                digest_text(body[i : i + DIGEST_BYTES])
                for i in range(DIGEST_BYTES, len(body), DIGEST_BYTES)
            ]
        ref = self._refs(key).get("in")
        if not isinstance(ref, dict):
            return []
        previous = self._refs(("span", key[1], ref["p"])).get("out", []) if "p" in ref else []
        return list(previous) + list(ref.get("i", []))

    def _resolve(self, key) -> list[str]:
        chain, on_chain = [], set()
        while key is not None and key not in self.resolved and key not in on_chain:
            chain.append(key)
            on_chain.add(key)
            key = self._before(key)
        messages = self.resolved.get(key, []) if key is not None else []
        for link in reversed(chain):
            messages = messages + self._after(link)
            self.resolved[link] = messages
        return messages


class SourceInputs:
    """The input messages (as digests) of one stored trace's chat spans, read once.

    A replay is answered from its source run, so each of its LLM calls resends a
    conversation the span path stored already, with the source's chat span. Its span
    names that span instead (`flightdeck.replay.source_span`), and ingest takes the
    messages' digests from here rather than digesting, redacting and storing the whole
    conversation again on every step. Only the spans of this one trace of the tenant (the
    source run's, named by the replay's link, never by the span) are answered, and only
    while they are rows whose messages are all stored: an archived trace's payloads are
    in its bundle, where a new span cannot refer to them.
    """

    def __init__(self, *, tenant_id: int, trace_id: str):
        self.tenant_id, self.trace_id = tenant_id, trace_id
        self.lock = threading.Lock()  # the gateway's threads and the span flush share it
        self._inputs: dict[str, list[str]] | None = None

    def of(self, span_id: str, *, count: int | None = None) -> list[str] | None:
        """The digests of the input of the source span `span_id` (16 hex), or None;
        with `count`, None unless the stored conversation has that many messages."""
        with self.lock:
            if self._inputs is None:
                self._inputs = self._read() if self.trace_id else {}
        digests = self._inputs.get(span_id)
        if digests is None or (count is not None and len(digests) != count):
            return None
        return digests

    def _read(self) -> dict[str, list[str]]:
        spans = Span.objects.filter(trace_id=uuid.UUID(self.trace_id)).only(
            "tenant_id", "trace_id", "span_id", "detail_packed"
        )
        refs_of = {}
        for span in spans:
            refs = span_stored_detail(span=span).get("refs", {})
            if "in" in refs:
                refs_of[(span.trace_id, span.span_id)] = refs
        inputs = Conversations(PayloadReader(self.tenant_id)).inputs(refs_of)
        wanted = sorted({d for digests in inputs.values() for d in digests})
        stored = set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            stored.update(Payload.objects.filter(digest__in=chunk).values_list("digest", flat=True))
        return {
            (span_id & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex(): digests
            for (_, span_id), digests in inputs.items()
            if digests and stored.issuperset(digests)
        }


def span_get(*, span_id: int, trace_id=None) -> Span | None:
    query = Q(span_id=span_id)
    if trace_id is not None:
        query &= Q(trace_id=trace_id)
    span = Span.objects.filter(query).order_by("-start_ns").first()
    if span is not None:
        return span
    from tracing.retention.bundles import bundles_open
    from tracing.retention.selectors import archived_listing

    if trace_id is None:
        # Not a row: a warm or cold trace's bundle may hold it (the newest, as above).
        listing = archived_listing("span_ids", [span_id]).order_by("-start_time")
        trace_ids = list(listing.values_list("trace_id", flat=True)[:1])
    else:
        trace_ids = [trace_id]
    for bundle in bundles_open(tenant_id=current_tenant_id(), trace_ids=trace_ids):
        span = next((s for s in bundle.spans if s.span_id == span_id), None)
    return span


def payload_reader_for(span: Span) -> PayloadReader:
    """A reader for a span's payloads; for a span of a warm or cold trace, one holding
    its bundle's."""
    reader = PayloadReader(span.tenant_id)
    if getattr(span, "archived", False):
        reader.spans([span.trace_id], fields=("span_id",))
    return reader


def span_detail(*, span: Span) -> dict:
    """Everything a span carried, large values read back from the payload store."""
    reader = payload_reader_for(span)
    detail = span_stored_detail(span=span)
    refs = detail.get("refs", {})
    reader.fetch([d for d in refs.values() if isinstance(d, str)] + refs.get("out", []))
    attributes = dict(detail.get("attributes", {}))
    out = {
        "input_messages": None,
        "output_messages": None,
        "system_instructions": None,
        "tool_call_arguments": None,
        "tool_call_result": None,
    }
    for key, digest in refs.items():
        if key == "in":
            key = (span.trace_id, span.span_id)
            messages = Conversations(reader).inputs({key: refs})[key]
            out["input_messages"] = reader.values(messages)
        elif key == "out":
            out["output_messages"] = reader.values(digest)
        elif key == "sys":
            out["system_instructions"] = reader.value(digest)
        elif key == "gen_ai.tool.call.arguments":
            out["tool_call_arguments"] = reader.value(digest)
        elif key == "gen_ai.tool.call.result":
            out["tool_call_result"] = reader.value(digest)
        else:
            attributes[key] = reader.value(digest)
    tool = detail.get("tool", {})
    if "gen_ai.tool.call.arguments" in tool:
        out["tool_call_arguments"] = tool["gen_ai.tool.call.arguments"]
    if "gen_ai.tool.call.result" in tool:
        out["tool_call_result"] = tool["gen_ai.tool.call.result"]
    held = detail.get("m", 0)
    if held:
        label_values = span_labels(span=span)
        for bit, (key, column, _) in enumerate(COLUMN_ATTRIBUTES):
            if held & (1 << bit):
                in_labels = column in label_values
                attributes[key] = label_values[column] if in_labels else getattr(span, column)
    origin = reader.value(detail["origin"]) if detail.get("origin") else {}
    return {
        **out,
        "attributes": attributes,
        "events": detail.get("events", []),
        "links": detail.get("links", []),
        "scope": origin.get("scope", {}),
        "resource": origin.get("resource", {}),
        "redactions": span.redactions or {},
    }


def redaction_policy_get() -> RedactionPolicy:
    """The tenant's redaction rules; an unsaved, empty version 0 when it has none."""
    return RedactionPolicy.objects.first() or RedactionPolicy(version=0)


def redaction_preview(*, tenant_id: int, text: str) -> tuple[str, Counter]:
    """What ingest would store for this text under the tenant's saved rules, and how many
    of each kind it replaced: the redactor ingest itself uses, not a copy of its rules."""
    counts: Counter = Counter()
    return tenant_redaction(tenant_id).redactor.redact_value(text, counts), counts

"""The write side of the search index, run by the `tracing.index_spans` task.

For each newly stored span it records the trace's attributes (key=value, as digests:
`models.attribute_pair`) and the texts it holds: messages, system instructions, tool
arguments and results, error messages. The index keeps terms only; the texts stay in
the payload store.

Terms are posted under the trace's row id on both backends:

    spans ─▶ payload digests they reference ─▶ their texts ─▶ terms under the trace's row

- PostgreSQL: tracing_searchblock, an inverted index of segments (segments.py); each
  distinct text of a batch is tokenised once by to_tsvector('simple'), and the batch's
  (term, trace) pairs, its attribute pairs as terms of their own (attributes.py) among
  them, become a segment of their own, merged later with others.
- SQLite: tracing_searchtrace, a contentless FTS5 table, rowid = the trace's row id
  (migration 0024); a later batch posts its terms under the same rowid and FTS5 keeps
  one posting per term and rowid. Attributes go to tracing_traceattribute.

No table says which texts a trace lists, so a batch reads every text its spans
reference, whether or not an earlier batch did. Both match a trace when every query
term occurs in its texts (fulltext.py). Running a batch twice changes nothing a search
sees: SQLite's attribute rows are inserted ON CONFLICT DO NOTHING, and terms posted
twice for one trace are one term.
"""

import hashlib
import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.db import connection, transaction

from tracing import labels
from tracing.digests import DIGEST_BYTES, digest_text
from tracing.ingest.dictionaries import unpack
from tracing.ingest.normalise import COLUMN_ATTRIBUTES
from tracing.ingest.payloads import LEAF_KEY, LIST_KINDS, from_canonical
from tracing.ingest.rows import insert_ignoring_conflicts, uuid_param, write_turn
from tracing.models import PayloadKind, Span, Trace, attribute_pair
from tracing.search.attributes import attribute_term
from tracing.search.segments import segment_add
from tracing.selectors import (
    Conversations,
    PayloadReader,
    span_stored_detail,
    span_values_by_key,
)

MAX_VALUE = 255
# Longer texts are indexed up to this many characters: a search for a word past the
# first 100 KB of one tool result is rare, and one text's terms stay well inside a
# tsvector's 1 MB, through which PostgreSQL's tokenising passes.
MAX_TEXT = 100_000
# Columns worth filtering on; token counts and ids that change on every span are not.
_ATTRIBUTE_COLUMNS = [
    (key, column)
    for key, column, _ in COLUMN_ATTRIBUTES
    if column not in ("input_tokens", "output_tokens", "tool_call_id")
]
_SKIP_KEYS = {"type", "id", "role"}  # structure of a message, not its words


def inline_digest(text: str) -> str:
    """A digest for a text kept in the span row itself (short tool values, errors)."""
    raw = hashlib.blake2b(b"inline\x00" + text.encode(), digest_size=DIGEST_BYTES).digest()
    return digest_text(raw)


def _words(value, out: list[str], leaves: list[str]) -> None:
    """Collect the strings of a stored value; long strings stored apart go to leaves."""
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, bool) or value is None:
        return
    elif isinstance(value, int | float):
        out.append(str(value))
    elif isinstance(value, list):
        for item in value:
            _words(item, out, leaves)
    elif isinstance(value, dict):
        if len(value) == 1 and LEAF_KEY in value:
            leaves.append(value[LEAF_KEY])
            return
        for key, item in value.items():
            if key not in _SKIP_KEYS:
                _words(item, out, leaves)


def _attribute_value(value) -> str | None:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        text = str(value)
        return text if len(text) <= MAX_VALUE else None
    return None


class _TraceIndex:
    def __init__(self):
        self.digests: set[str] = set()  # stored payloads this trace references
        self.messages: set[str] = set()  # of which: messages (may hold leaves)
        self.inline: dict[str, str] = {}  # digest -> text kept in span rows
        self.attributes: set[tuple[str, str]] = set()
        # (trace id, span id) -> refs of the spans with input messages
        self.conversations: dict[tuple, dict] = {}


# What indexing reads of a span row (add_span takes a Span too).
_STORED_FIELDS = (
    "trace_id",
    "span_id",
    "labels_id",
    "status_message",
    "detail_packed",
    "session_id",
    "run_id",
)


@dataclass(slots=True)
class _StoredSpan:
    tenant_id: int
    trace_id: uuid.UUID
    span_id: int
    labels_id: int
    status_message: str
    detail_packed: bytes
    session_id: str
    run_id: str


class SpanIndexer:
    def __init__(self, tenant_id: int):
        self.tenant_id = tenant_id
        self.reader = PayloadReader(tenant_id)
        self.conversations = Conversations(self.reader)
        self.resources: dict[str, dict] = {}

    def resource(self, digest: str) -> dict:
        """The resource attributes of a span's origin payload (resource and scope)."""
        if digest not in self.resources:
            try:
                value = self.reader.value(digest)
            except KeyError:
                value = {}
            resource = value.get("resource") if isinstance(value, dict) else None
            self.resources[digest] = resource if isinstance(resource, dict) else {}
        return self.resources[digest]

    def add_span(self, span: Span, label_values: dict, into: _TraceIndex) -> None:
        detail = span_stored_detail(span=span)
        attrs = into.attributes
        for key, column in _ATTRIBUTE_COLUMNS:
            value = label_values[column] if column in label_values else getattr(span, column)
            if value:
                attrs.add((key, str(value)[:MAX_VALUE]))
        if label_values["service_name"]:
            attrs.add(("service.name", label_values["service_name"][:MAX_VALUE]))
        for key, value in (detail.get("attributes") or {}).items():
            text = _attribute_value(value)
            if text is not None:
                attrs.add((key[:MAX_VALUE], text))
        if detail.get("origin"):
            for key, value in self.resource(detail["origin"]).items():
                text = _attribute_value(value)
                if text is not None:
                    attrs.add((key[:MAX_VALUE], text))

        refs = detail.get("refs") or {}
        for key, ref in refs.items():
            if key == "in":
                into.conversations[(span.trace_id, span.span_id)] = refs  # walked together
            elif key == "out":
                into.digests.update(ref)
                into.messages.update(ref)
            elif isinstance(ref, str):
                into.digests.add(ref)
        texts = [v for v in (detail.get("tool") or {}).values() if isinstance(v, str)]
        if span.status_message:
            texts.append(span.status_message)
        for event in detail.get("events") or []:
            for value in (event.get("attributes") or {}).values():
                if isinstance(value, str) and value:
                    texts.append(value)
        for text in texts:
            into.inline[inline_digest(text)] = text

    def text_of(self, digest: str, leaves: list[str]) -> str | None:
        kind, data = self.reader.rows[digest]
        if kind in (*LIST_KINDS, PayloadKind.RESOURCE):
            return None
        words: list[str] = []
        _words(from_canonical(unpack(self.tenant_id, data)), words, leaves)
        return "\n".join(words)


def search_index_spans(*, tenant_id: int, spans: list[tuple[str, str]]) -> int:
    """Index spans given as (trace id hex, span id hex); returns how many were found.

    Runs inside the tenant's scope (TenantTask); raw SQL takes tenant_id explicitly.
    """
    wanted = {
        (uuid.UUID(hex=t), int.from_bytes(bytes.fromhex(s), "big", signed=True)) for t, s in spans
    }
    if not wanted:
        return 0
    indexer = SpanIndexer(tenant_id)
    traces: dict[uuid.UUID, _TraceIndex] = defaultdict(_TraceIndex)
    # As values, one key probe a span: model instances and the ORM's two IN lists cost
    # about a third of a batch's indexing.
    rows = [
        _StoredSpan(tenant_id, *values)
        for values in span_values_by_key(
            tenant_id=tenant_id, keys=sorted(wanted), fields=_STORED_FIELDS
        )
    ]
    if not rows:
        return 0
    label_values = labels.values_of(tenant_id, {span.labels_id for span in rows})
    for span in rows:
        indexer.add_span(span, label_values[span.labels_id], traces[span.trace_id])
    inputs = indexer.conversations.inputs(
        {key: refs for index in traces.values() for key, refs in index.conversations.items()}
    )
    for index in traces.values():
        for key in index.conversations:
            index.digests.update(inputs[key])
            index.messages.update(inputs[key])

    pairs = {
        trace_id: sorted({attribute_pair(key, value) for key, value in index.attributes})
        for trace_id, index in traces.items()
    }
    _trace_documents_add(tenant_id, indexer, traces, pairs)
    return len(rows)


def _trace_documents_add(tenant_id: int, indexer: SpanIndexer, traces: dict, pairs: dict) -> None:
    """The batch's texts and attribute pairs posted under each trace's row id. Texts an
    earlier batch posted already are posted again (no table lists them); both indexes
    fold a term posted twice for one trace into one, so only the tokenising is spent
    twice."""
    texts = _texts_to_store(indexer, traces)
    row_ids = dict(Trace.objects.filter(trace_id__in=list(traces)).values_list("trace_id", "id"))
    held_by_row = {}
    for trace_id, index in traces.items():
        held = sorted(d for d in index.digests | set(index.inline) if d in texts)
        if held and trace_id in row_ids:
            held_by_row[row_ids[trace_id]] = held
    if connection.vendor == "postgresql":
        pairs_by_row = {row_ids[t]: held for t, held in pairs.items() if held and t in row_ids}
        _segment_add(tenant_id, texts, held_by_row, pairs_by_row)
        return
    insert_ignoring_conflicts(
        "tracing_traceattribute",
        ("tenant_id", "pair", "trace_id"),
        [(tenant_id, pair, uuid_param(t)) for t, held in pairs.items() for pair in held],
    )
    if not held_by_row:
        return
    # In row id order: FTS5 flushes its pending terms to a new segment whenever a rowid
    # comes before the last one written.
    documents = [(row, _document([texts[d] for d in held])) for row, held in held_by_row.items()]
    documents.sort()
    with write_turn(), transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO tracing_searchtrace (rowid, document) VALUES (%s, %s)", documents
        )


def _segment_add(
    tenant_id: int, texts: dict[str, str], held_by_row: dict, pairs_by_row: dict
) -> None:
    """PostgreSQL: each distinct text tokenised once, by the database's own 'simple'
    parser (the terms are today's to_tsvector terms), and the batch's terms, its
    attribute pairs' among them (attributes.py), posted in a segment of its own
    (segments.py). A trace with attributes and no text still gets its pairs' terms."""
    digests = sorted({d for held in held_by_row.values() for d in held})
    lexemes = {}
    if digests:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT tsvector_to_array(to_tsvector('simple', t)) "
                "FROM unnest(%s::text[]) WITH ORDINALITY AS u(t, i) ORDER BY i",
                [[_indexed(texts[d]) for d in digests]],
            )
            lexemes = dict(zip(digests, (row[0] for row in cursor.fetchall()), strict=True))
    terms_by_row = {
        row: set().union(*(lexemes[d] for d in held)) for row, held in held_by_row.items()
    }
    for row, held in pairs_by_row.items():
        terms_by_row.setdefault(row, set()).update(map(attribute_term, held))
    segment_add(tenant_id=tenant_id, terms_by_row=terms_by_row)


def _document(texts) -> str:
    return "\n".join(_indexed(text) for text in texts)


def _texts_to_store(indexer: SpanIndexer, traces: dict) -> dict[str, str]:
    """digest -> text of every text the batch's traces hold that has words. Adds the
    long strings of their messages to their traces."""
    # Messages are read (from the database: they are small, their long strings are
    # stored apart) to find those long strings.
    messages = set()
    for index in traces.values():
        messages |= index.messages
    indexer.reader.fetch(messages)
    texts: dict[str, str] = {}
    for index in traces.values():
        for digest in index.messages:
            if digest not in indexer.reader.rows:
                continue  # removed by retention since the span was stored
            leaves: list[str] = []
            text = indexer.text_of(digest, leaves)
            if text:
                texts[digest] = text
            index.digests.update(leaves)

    inline = {d for index in traces.values() for d in index.inline}
    to_read = set()
    for index in traces.values():
        to_read |= index.digests
    to_read -= set(texts) | inline
    indexer.reader.fetch(to_read)
    for digest in to_read:
        if digest in indexer.reader.rows:
            text = indexer.text_of(digest, [])
            if text:
                texts[digest] = text
    for index in traces.values():
        texts.update({d: t for d, t in index.inline.items() if t})
    return texts


def _indexed(text: str) -> str:
    """A text as the index tokenises it (the FTS5 'delete' command needs it again).
    PostgreSQL text cannot hold NUL characters."""
    return text[:MAX_TEXT].replace("\x00", " ")


# --- removal (retention) -----------------------------------------------------------


def _trace_texts(*, tenant_id: int, spans: list[Span], reader: PayloadReader) -> dict[str, str]:
    """digest -> text of every text the spans hold, as indexing found it: what the FTS5
    'delete' command must be given to take a text's terms out again. `reader` must
    have the trace's payloads (its bundle's, for a warm or cold trace)."""
    indexer = SpanIndexer(tenant_id)
    indexer.reader = reader
    indexer.conversations = Conversations(reader)
    index = _TraceIndex()
    label_values = labels.values_of(tenant_id, {span.labels_id for span in spans})
    for span in spans:
        indexer.add_span(span, label_values[span.labels_id], index)
    inputs = indexer.conversations.inputs(index.conversations)
    for key in index.conversations:
        index.digests.update(inputs[key])
        index.messages.update(inputs[key])
    reader.fetch(index.digests)
    texts = {}
    for digest in sorted(index.digests):
        if digest in reader.rows:
            leaves: list[str] = []
            text = indexer.text_of(digest, leaves)
            if text:
                texts[digest] = text
            reader.fetch(leaves)
            for leaf in leaves:
                if leaf in reader.rows and (leaf_text := indexer.text_of(leaf, [])):
                    texts[leaf] = leaf_text
    texts.update({d: t for d, t in index.inline.items() if t})
    return texts


def search_traces_forget(
    *, tenant_id: int, trace_ids: list, spans: list[Span], reader: PayloadReader
) -> int:
    """Take traces out of the search index: their attributes and their texts' terms.
    Returns how many of the traces had terms to take out.

    PostgreSQL's index is left as it is, attribute terms included (a search or filter
    skips row ids of traces gone or cold, and merges drop them). On SQLite the
    attribute rows are deleted, and the contentless FTS5 table (3.40: no
    contentless_delete) takes a trace's terms out through its 'delete' command, which
    needs the texts as indexed: those of `spans`, read through `reader` (which must
    have their payloads). A term of a text not given stays under the trace's rowid,
    which names no trace again once the row is deleted (AUTOINCREMENT). Deleting terms
    the index no longer holds (deleting twice included) is refused as 'database disk
    image is malformed' where other documents hold them, so `spans` must be only those
    whose texts are still indexed, and a caller that may be stopped and run again
    commits this with its own mark that it is done (tracing/retention/tiers.py)."""
    if not trace_ids:
        return 0
    row_ids = sorted(Trace.objects.filter(trace_id__in=trace_ids).values_list("id", flat=True))
    if connection.vendor == "postgresql":
        # Nothing to take out now, text or attribute terms: searches and filters join
        # the index's row ids to traces that are hot or warm, and the next merge of a
        # segment drops the others (segments.py).
        return len(row_ids)
    params = [tenant_id, *(uuid_param(t) for t in trace_ids)]
    marks = ", ".join(["%s"] * len(trace_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM tracing_traceattribute WHERE tenant_id = %s AND trace_id IN ({marks})",  # noqa: S608 - fixed names
            params,
        )
    if not row_ids:
        return 0
    texts = _trace_texts(tenant_id=tenant_id, spans=spans, reader=reader)
    if not texts:
        return 0
    document = _document(texts[d] for d in sorted(texts))
    with write_turn(), transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO tracing_searchtrace (tracing_searchtrace, rowid, document) "
            "VALUES ('delete', %s, %s)",
            [(row_id, document) for row_id in row_ids],
        )
    return len(row_ids)

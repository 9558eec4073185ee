"""Reads of the trace store: spans with their payloads put back together."""

from django.db.models import Q

from controlplane.blobstore import get_blob_store
from tracing.digests import DIGEST_BYTES, digest_text
from tracing.ingest.dictionaries import unpack
from tracing.ingest.normalise import COLUMN_ATTRIBUTES
from tracing.ingest.payloads import LEAF_KEY, blob_key, from_canonical
from tracing.models import Payload, PayloadKind, Span

ZERO = bytes(DIGEST_BYTES)


class PayloadReader:
    """Fetches payloads by digest (database rows, then the blob store), caching them."""

    def __init__(self, tenant_id: int):
        self.tenant_id = tenant_id
        self.rows: dict[str, tuple[int, bytes]] = {}

    def fetch(self, digests) -> None:
        wanted = sorted(set(digests) - set(self.rows))
        for start in range(0, len(wanted), 500):
            for digest, kind, data in Payload.objects.filter(
                digest__in=wanted[start : start + 500]
            ).values_list("digest", "kind", "data"):
                if data is None:
                    data = get_blob_store().get(blob_key(self.tenant_id, digest))
                self.rows[digest] = (kind, bytes(data))

    def _body(self, digest: str) -> tuple[int, bytes]:
        if digest not in self.rows:
            self.fetch([digest])
        if digest not in self.rows:
            raise KeyError(f"payload {digest} is missing")
        return self.rows[digest]

    def value(self, digest: str):
        kind, data = self._body(digest)
        if kind == PayloadKind.LIST:
            return self.message_list(digest)
        value = from_canonical(unpack(self.tenant_id, data))
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
        """Walk the chain of list payloads back to its start, then read the messages."""
        segments = []
        while digest is not None:
            _, body = self._body(digest)
            head = body[:DIGEST_BYTES]
            items = [
                digest_text(body[i : i + DIGEST_BYTES])
                for i in range(DIGEST_BYTES, len(body), DIGEST_BYTES)
            ]
            segments.append(items)
            digest = digest_text(head) if head != ZERO else None
        digests = [d for items in reversed(segments) for d in items]
        self.fetch(digests)
        return [self.value(d) for d in digests]


def span_get(*, span_id: int, trace_id=None) -> Span | None:
    query = Q(span_id=span_id)
    if trace_id is not None:
        query &= Q(trace_id=trace_id)
    return Span.objects.filter(query).order_by("-start_ns").first()


def span_detail(*, span: Span) -> dict:
    """Everything a span carried, large values read back from the payload store."""
    reader = PayloadReader(span.tenant_id)
    detail = span.detail or {}
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
            out["input_messages"] = reader.message_list(digest)
        elif key == "out":
            out["output_messages"] = [reader.value(d) for d in digest]
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
    for bit, (key, column, _) in enumerate(COLUMN_ATTRIBUTES):
        if held & (1 << bit):
            attributes[key] = getattr(span, column)
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

"""A warm or cold trace: its spans and every payload it reads, in one zstd object.

    bundle = b"FDB1" + zstd( u32 index length | index JSON | bodies )
    index  = {"trace": hex, "spans": [[column values..., detail offset, length]],
              "payloads": [[digest, kind, offset, length]]}

Span details and payload bodies are kept as stored (already compressed with the
tenant's dictionaries, which are never deleted), so a bundle reads back byte for byte
what the hot rows held. A list of messages held by a span of another trace (SPAN_LIST)
is stored as the full LIST it stands for: the other trace may be deleted first.
Readers open bundles through `bundles_open`, which keeps a few decoded in memory (a
trace page reads its tree, then a span).
"""

import hashlib
import struct
import threading
import uuid
from collections import OrderedDict
from dataclasses import dataclass

import orjson
import zstandard

from controlplane.blobstore import get_blob_store, tenant_key
from tracing.digests import DIGEST_BYTES, digest_bytes
from tracing.models import PayloadKind, Span, Trace
from tracing.retention.models import Tier

MAGIC = b"FDB1"
ZSTD_LEVEL = 6
SPAN_COLUMNS = (
    "span_id",
    "parent_span_id",
    "name",
    "kind",
    "start_ns",
    "end_ns",
    "status_code",
    "status_message",
    "labels_id",
    "input_tokens",
    "output_tokens",
    "session_id",
    "run_id",
    "tool_call_id",
    "redactions",
)


class BundleCorrupt(ValueError):
    pass


@dataclass
class Bundle:
    tenant_id: int
    trace_id: uuid.UUID
    rows: list[dict]  # each span's columns and detail_packed
    payloads: dict[str, tuple[int, bytes]]  # digest -> (kind, stored body)
    _spans: list[Span] | None = None

    @property
    def spans(self) -> list[Span]:
        """The rows as (unsaved) Span instances, made once: the span tree needs only
        the rows, and 2,000 model instances cost more than the rest of an open."""
        if self._spans is None:
            self._spans = []
            for row in self.rows:
                span = Span(tenant_id=self.tenant_id, trace_id=self.trace_id, **row)
                span.archived = True
                self._spans.append(span)
        return self._spans


def bundle_key(tenant_id: int, trace_id: uuid.UUID, tier: int) -> str:
    # The tier is in the name: a move to cold copies to a new key, so the source stays
    # whole until the copy is verified.
    name = trace_id.hex
    suffix = "cold" if tier == Tier.COLD else "warm"
    return tenant_key(tenant_id, "bundles", name[:2], f"{name}.{suffix}.zst")


def list_body(items: list[str]) -> bytes:
    """A LIST payload's body for a whole list: no head, then every message."""
    return bytes(DIGEST_BYTES) + b"".join(digest_bytes(d) for d in items)


def bundle_pack(*, trace_id: uuid.UUID, spans: list[Span], payloads: dict) -> bytes:
    bodies: list[bytes] = []
    offset = 0

    def add(data: bytes) -> tuple[int, int]:
        nonlocal offset
        bodies.append(data)
        start, offset = offset, offset + len(data)
        return start, len(data)

    index = {
        "trace": trace_id.hex,
        "spans": [
            [getattr(span, c) for c in SPAN_COLUMNS] + list(add(bytes(span.detail_packed)))
            for span in spans
        ],
        "payloads": [
            [digest, kind, *add(body)] for digest, (kind, body) in sorted(payloads.items())
        ],
    }
    head = orjson.dumps(index)
    raw = struct.pack(">I", len(head)) + head + b"".join(bodies)
    return MAGIC + zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(raw)


def bundle_unpack(*, tenant_id: int, data: bytes) -> Bundle:
    if data[:4] != MAGIC:
        raise BundleCorrupt("not a trace bundle")
    raw = zstandard.ZstdDecompressor().decompress(data[4:])
    (size,) = struct.unpack(">I", raw[:4])
    index = orjson.loads(raw[4 : 4 + size])
    body = memoryview(raw)[4 + size :]
    trace_id = uuid.UUID(hex=index["trace"])
    rows = []
    width = len(SPAN_COLUMNS)
    for values in index["spans"]:
        row = dict(zip(SPAN_COLUMNS, values[:width], strict=True))
        start, length = values[width], values[width + 1]
        row["detail_packed"] = bytes(body[start : start + length])
        rows.append(row)
    payloads = {
        digest: (kind, bytes(body[start : start + length]))
        for digest, kind, start, length in index["payloads"]
    }
    return Bundle(tenant_id=tenant_id, trace_id=trace_id, rows=rows, payloads=payloads)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_verified(*, tenant_id: int, key: str, expected: str, storage_class: str | None):
    """Read the object back: its checksum must be the one written, and on S3 its storage
    class the one asked for. Raises BundleCorrupt otherwise."""
    store = get_blob_store()
    data = store.get(key)
    if sha256(data) != expected:
        raise BundleCorrupt(f"{key}: checksum differs after writing")
    if storage_class and store.storage_class(key) not in (None, storage_class):
        raise BundleCorrupt(f"{key}: stored as {store.storage_class(key)}, not {storage_class}")
    return data


class _Cache:
    """A few decoded bundles per process, keyed by tenant, trace and checksum."""

    def __init__(self, size: int = 8):
        self.size = size
        self.items: OrderedDict = OrderedDict()
        self.lock = threading.Lock()

    def get(self, key):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        return None

    def put(self, key, bundle: Bundle) -> None:
        with self.lock:
            self.items[key] = bundle
            self.items.move_to_end(key)
            while len(self.items) > self.size:
                self.items.popitem(last=False)

    def reset(self) -> None:
        with self.lock:
            self.items.clear()


cache = _Cache()


def bundles_open(*, tenant_id: int, trace_ids) -> list[Bundle]:
    """The bundles of those of the traces that are warm or cold (scoped read)."""
    out = []
    rows = Trace.objects.filter(
        trace_id__in=list(trace_ids), tier__in=(Tier.WARM, Tier.COLD)
    ).values_list("trace_id", "archive")
    for trace_id, archive in rows:
        key = (tenant_id, trace_id, archive["sha256"])
        bundle = cache.get(key)
        if bundle is None:
            bundle = bundle_unpack(tenant_id=tenant_id, data=get_blob_store().get(archive["key"]))
            cache.put(key, bundle)
        out.append(bundle)
    return out


def is_list_of_other_trace(kind: int, body: bytes, trace_id: uuid.UUID) -> bool:
    return kind == PayloadKind.SPAN_LIST and body[:16] != trace_id.bytes

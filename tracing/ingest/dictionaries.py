"""Per-tenant zstd dictionaries: one for payloads, one for span details.

A tenant without one gets one trained from the first batches with enough new samples;
after that every process compresses with the tenant's newest dictionary of that
purpose and decompresses with whichever one a frame names.
"""

import threading
import time
from dataclasses import dataclass

import orjson
import zstandard
from django.db import IntegrityError, transaction

from tracing.models import PayloadDictionary

Purpose = PayloadDictionary.Purpose


@dataclass(frozen=True)
class Recipe:
    size: int  # dictionary bytes
    level: int  # compression level
    min_samples: int
    min_bytes: int
    # Training runs once per tenant, inside the ingest request that has enough
    # samples; capping what it reads keeps that request a few tenths of a second slower.
    max_bytes: int


RECIPES = {
    # Messages and tool results share a tenant's vocabulary: a large dictionary holds
    # more of it (16 KB took a tool result to 44% of its size, 112 KB to 38%), and level
    # 9 keeps most of level 12's gain at two thirds of its compression time.
    Purpose.PAYLOAD: Recipe(
        size=112 * 1024, level=9, min_samples=100, min_bytes=64 * 1024, max_bytes=1024 * 1024
    ),
    # Span details are ~200 bytes of keys, labels and digests that recur across an
    # agent's spans: a small dictionary holds them, and a low level does as well as a
    # high one on inputs this short.
    Purpose.SPAN_DETAIL: Recipe(
        size=4 * 1024, level=3, min_samples=200, min_bytes=16 * 1024, max_bytes=256 * 1024
    ),
}
RECHECK_SECONDS = 60.0
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"

_lock = threading.Lock()
# (tenant, purpose) -> (checked at, dict id)
_newest: dict[tuple[int, int], tuple[float, int | None]] = {}
_dicts: dict[tuple[int, int], zstandard.ZstdCompressionDict] = {}
_samples: dict[tuple[int, int], list[bytes]] = {}  # new bodies seen so far
_local = threading.local()


def _load(tenant_id: int, dict_id: int) -> zstandard.ZstdCompressionDict | None:
    key = (tenant_id, dict_id)
    if key not in _dicts:
        row = (
            PayloadDictionary.objects.unscoped()
            .filter(tenant_id=tenant_id, dict_id=dict_id)
            .first()
        )
        if row is None:
            return None
        _dicts[key] = zstandard.ZstdCompressionDict(bytes(row.data))
    return _dicts[key]


def newest(tenant_id: int, purpose: int = Purpose.PAYLOAD) -> int | None:
    now = time.monotonic()
    hit = _newest.get((tenant_id, purpose))
    if hit and now - hit[0] < RECHECK_SECONDS:
        return hit[1]
    row = (
        PayloadDictionary.objects.unscoped()
        .filter(tenant_id=tenant_id, purpose=purpose)
        .order_by("-created_at", "-id")
        .values_list("dict_id", flat=True)
        .first()
    )
    _newest[(tenant_id, purpose)] = (now, row)
    return row


def offer(tenant_id: int, bodies: list[bytes], purpose: int = Purpose.PAYLOAD) -> int | None:
    """Collect a tenant's new bodies (across batches: an exporter may send one span at
    a time) and train a dictionary once there are enough of them."""
    recipe = RECIPES[purpose]
    with _lock:
        pool = _samples.setdefault((tenant_id, purpose), [])
        room = recipe.max_bytes - sum(map(len, pool))
        for body in bodies:
            if room <= 0:
                break
            pool.append(body)
            room -= len(body)
        total = sum(map(len, pool))
        full = total >= recipe.max_bytes - 4096
        if not full and (len(pool) < recipe.min_samples or total < recipe.min_bytes):
            return None
        del _samples[(tenant_id, purpose)]
    return train(tenant_id, pool, purpose)


def train(tenant_id: int, samples: list[bytes], purpose: int = Purpose.PAYLOAD) -> int | None:
    """Train and store a dictionary from these samples."""
    recipe = RECIPES[purpose]
    with _lock:
        _newest.pop((tenant_id, purpose), None)  # another process may have trained one
        if newest(tenant_id, purpose) is not None:
            return _newest[(tenant_id, purpose)][1]
        chosen, total = [], 0
        for sample in samples:
            if total >= recipe.max_bytes:
                break
            chosen.append(sample)
            total += len(sample)
        trained = zstandard.train_dictionary(recipe.size, chosen, level=recipe.level)
        dict_id = trained.dict_id()
        try:
            with transaction.atomic():
                PayloadDictionary.all_tenants.create(
                    tenant_id=tenant_id, dict_id=dict_id, purpose=purpose, data=trained.as_bytes()
                )
        except IntegrityError:
            pass  # another process stored the same dictionary first
        _dicts[(tenant_id, dict_id)] = trained
        _newest[(tenant_id, purpose)] = (time.monotonic(), dict_id)
        return dict_id


def compressor(
    tenant_id: int, dict_id: int | None, purpose: int = Purpose.PAYLOAD
) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    key = (tenant_id, dict_id, purpose)
    if key not in cache:
        data = _load(tenant_id, dict_id) if dict_id is not None else None
        cache[key] = zstandard.ZstdCompressor(level=RECIPES[purpose].level, dict_data=data)
    return cache[key]


def decompress(tenant_id: int, frame: bytes) -> bytes:
    dict_id = zstandard.get_frame_parameters(frame).dict_id
    cache = getattr(_local, "decompressors", None)
    if cache is None:
        cache = _local.decompressors = {}
    key = (tenant_id, dict_id)
    if key not in cache:
        data = _load(tenant_id, dict_id) if dict_id else None
        if dict_id and data is None:
            raise KeyError(f"zstd dictionary {dict_id} of tenant {tenant_id} is missing")
        cache[key] = zstandard.ZstdDecompressor(dict_data=data)
    return cache[key].decompress(frame)


def pack(body: bytes, compressor: zstandard.ZstdCompressor) -> bytes:
    """zstd, unless that is no smaller (tiny bodies): then the body as it is."""
    packed = compressor.compress(body)
    return packed if len(packed) < len(body) else body


def unpack(tenant_id: int, data: bytes) -> bytes:
    # Stored bodies start with b"s", b"j" or b"{" (never with zstd's magic number) when
    # they are kept as they are.
    if data[:4] != ZSTD_MAGIC:
        return data
    return decompress(tenant_id, data)


class DetailPacker:
    """Packs one batch's span details: compressed with the tenant's span-detail
    dictionary, or (until there is one) kept as JSON and offered as training samples."""

    def __init__(self, tenant_id: int):
        self.tenant_id = tenant_id
        dict_id = newest(tenant_id, Purpose.SPAN_DETAIL)
        self.compressor = (
            compressor(tenant_id, dict_id, Purpose.SPAN_DETAIL) if dict_id is not None else None
        )
        self.samples: list[bytes] = []

    def pack(self, detail: dict) -> bytes:
        body = orjson.dumps(detail)
        if self.compressor is None:
            self.samples.append(body)
            return body
        return pack(body, self.compressor)

    def offer_samples(self) -> None:
        if self.samples:
            offer(self.tenant_id, self.samples, Purpose.SPAN_DETAIL)


def unpack_json(tenant_id: int, data) -> dict:
    """A stored span detail (memoryview on PostgreSQL), back as a dict."""
    if not data:
        return {}
    return orjson.loads(unpack(tenant_id, bytes(data)))

"""Per-tenant zstd dictionaries for payload compression.

A tenant without one gets one trained from the first batch with enough new payloads;
after that every process compresses with the tenant's newest dictionary and
decompresses with whichever one a frame names.
"""

import threading
import time

import zstandard
from django.db import IntegrityError, transaction

from tracing.models import PayloadDictionary

DICT_SIZE = 16 * 1024
MIN_SAMPLES = 100
MIN_SAMPLE_BYTES = 64 * 1024
# Training runs once per tenant, inside the ingest request that has enough samples;
# capping what it reads keeps that request a few tenths of a second slower.
MAX_SAMPLE_BYTES = 512 * 1024
LEVEL = 6
RECHECK_SECONDS = 60.0

_lock = threading.Lock()
_newest: dict[int, tuple[float, int | None]] = {}  # tenant -> (checked at, dict id)
_dicts: dict[tuple[int, int], zstandard.ZstdCompressionDict] = {}
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


def newest(tenant_id: int) -> int | None:
    now = time.monotonic()
    hit = _newest.get(tenant_id)
    if hit and now - hit[0] < RECHECK_SECONDS:
        return hit[1]
    row = (
        PayloadDictionary.objects.unscoped()
        .filter(tenant_id=tenant_id)
        .order_by("-created_at", "-id")
        .values_list("dict_id", flat=True)
        .first()
    )
    _newest[tenant_id] = (now, row)
    return row


_samples: dict[int, list[bytes]] = {}  # tenant -> new payload bodies seen so far


def offer(tenant_id: int, bodies: list[bytes]) -> int | None:
    """Collect a tenant's new payload bodies (across batches: an exporter may send one
    span at a time) and train a dictionary once there are enough of them."""
    with _lock:
        pool = _samples.setdefault(tenant_id, [])
        room = MAX_SAMPLE_BYTES - sum(map(len, pool))
        for body in bodies:
            if room <= 0:
                break
            pool.append(body)
            room -= len(body)
        total = sum(map(len, pool))
        full = total >= MAX_SAMPLE_BYTES - 4096
        if not full and (len(pool) < MIN_SAMPLES or total < MIN_SAMPLE_BYTES):
            return None
        del _samples[tenant_id]
    return train(tenant_id, pool)


def train(tenant_id: int, samples: list[bytes]) -> int | None:
    """Train and store a dictionary from these samples."""
    with _lock:
        _newest.pop(tenant_id, None)  # another process may have trained one meanwhile
        if newest(tenant_id) is not None:
            return _newest[tenant_id][1]
        chosen, total = [], 0
        for sample in samples:
            if total >= MAX_SAMPLE_BYTES:
                break
            chosen.append(sample)
            total += len(sample)
        trained = zstandard.train_dictionary(DICT_SIZE, chosen, level=LEVEL)
        dict_id = trained.dict_id()
        try:
            with transaction.atomic():
                PayloadDictionary.all_tenants.create(
                    tenant_id=tenant_id, dict_id=dict_id, data=trained.as_bytes()
                )
        except IntegrityError:
            pass  # another process stored the same dictionary first
        _dicts[(tenant_id, dict_id)] = trained
        _newest[tenant_id] = (time.monotonic(), dict_id)
        return dict_id


def compressor(tenant_id: int, dict_id: int | None) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    key = (tenant_id, dict_id)
    if key not in cache:
        data = _load(tenant_id, dict_id) if dict_id is not None else None
        cache[key] = zstandard.ZstdCompressor(level=LEVEL, dict_data=data)
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

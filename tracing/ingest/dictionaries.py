"""Per-tenant zstd dictionaries: one for payloads, one for span details.

A tenant without one gets one trained from the first batches with enough new samples;
after that every process compresses with the tenant's newest dictionary of that
purpose and decompresses with whichever one a frame names. A weekly task trains a new
one from recent traffic when that compresses it clearly better (`refresh`).
"""

import threading
import time
from dataclasses import dataclass

import orjson
import zstandard
from django.db import IntegrityError, transaction
from django.db.models import Max

from controlplane.tenancy import tenant_scope
from controlplane.tenantcache import TenantCache
from tracing.ingest import rows
from tracing.models import PayloadDictionary

Purpose = PayloadDictionary.Purpose


@dataclass(frozen=True)
class Recipe:
    size: int  # dictionary bytes
    level: int  # compression level
    train_level: int
    min_samples: int
    min_bytes: int
    # Training runs once per tenant, inside the ingest request that has enough
    # samples; capping what it reads keeps that request a few tenths of a second slower.
    max_bytes: int


RECIPES = {
    # Messages and tool results share a tenant's vocabulary: a large dictionary holds
    # more of it (16 KB took a tool result to 44% of its size, 112 KB to 38%). Level 6
    # compresses within 1% of level 9 in 70% of its time (the ingest benchmark's
    # payloads: 1.474 MB against 1.462 in 97 ms against 122; Python sources and package
    # documentation, 9 MB in pieces of 0.3-3 KB: 0.2894 of their size against 0.2867, in
    # 151 ms against 212); level 5 halves that time again but stores 2.5-5% more.
    # Training at 6 rather than 12 costs 0.1% of stored bytes and saves 0.12 s in the
    # request that trains.
    Purpose.PAYLOAD: Recipe(
        size=112 * 1024,
        level=6,
        train_level=6,
        min_samples=100,
        min_bytes=64 * 1024,
        max_bytes=1024 * 1024,
    ),
    # Span details are ~200 bytes of keys, labels and digests that recur across an
    # agent's spans: a small dictionary holds them, and a low level does as well as a
    # high one on inputs this short.
    Purpose.SPAN_DETAIL: Recipe(
        size=4 * 1024,
        level=3,
        train_level=3,
        min_samples=200,
        min_bytes=16 * 1024,
        max_bytes=256 * 1024,
    ),
}
# The trainer's segment and d-mer sizes (fastCover's k and d). Left to zstd, it tries
# several k and keeps the best, four to five times the CPU of one try, in the request
# that trains; k=200 compressed held-out messages and tool results as well as the
# searched k (0.2839 against 0.2840 of their size on the ingest benchmark's text, 0.2363
# against 0.2403 on C headers and package documentation).
TRAIN_K = 200
TRAIN_D = 8
RECHECK_SECONDS = 60.0
# refresh() keeps a new dictionary only if recent samples take at most this share of
# the bytes they take with the newest one: serials are few (127 a tenant).
REFRESH_GAIN = 0.9
# How a stored body starts: b"s", b"j" or b"{" kept as it is; zstd's magic number for a
# standard frame (as written before compact frames); a byte with the high bit set for
# a compact frame: its low 7 bits are the dictionary's serial (0: none). Compact frames
# leave out what the row already implies (magic number, dictionary id, checksum), 11
# bytes on each of the hundreds of small frames a trace stores.
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
COMPACT = 0x80
MAX_SERIAL = 0x7F

_lock = threading.Lock()
# Per tenant: purpose -> (checked at, serial of the newest dictionary).
newest_cache = TenantCache("newest dictionaries", size=10_000)
# Per tenant: ("serial" or "dict_id", number) -> the dictionary. Up to 112 KB each.
dicts_cache = TenantCache("dictionaries", size=1_000)
# Per tenant: (thread, what it is for) -> compressor or decompressor. They are not
# thread-safe: each is used only by the thread that made it. A compressor holds over a
# MB of tables, so few are kept.
coders_cache = TenantCache("zstd coders", size=256)
# Per tenant: purpose -> the new bodies seen so far. The process's own collection, not
# rows: kept at once. Bounded: up to max_bytes each while a tenant has no dictionary.
samples_cache = TenantCache("dictionary samples", size=100, after_commit=False)


def _load(tenant_id: int, by: str, value: int) -> zstandard.ZstdCompressionDict | None:
    """A tenant's dictionary by its serial or (for standard frames) its zstd id."""
    found = dicts_cache.get(tenant_id, (by, value))
    if found is None:
        field = "serial" if by == "serial" else "dict_id"
        with tenant_scope(tenant_id):
            row = PayloadDictionary.objects.filter(**{field: value}).first()
        if row is None:
            return None
        found = zstandard.ZstdCompressionDict(bytes(row.data))
        dicts_cache.put(tenant_id, {(by, value): found})
    return found


def newest(tenant_id: int, purpose: int = Purpose.PAYLOAD) -> int | None:
    """The serial of the tenant's newest dictionary for this purpose."""
    now = time.monotonic()
    hit = newest_cache.get(tenant_id, purpose)
    if hit and now - hit[0] < RECHECK_SECONDS:
        return hit[1]
    with tenant_scope(tenant_id):
        serial = (
            PayloadDictionary.objects.filter(purpose=purpose)
            .order_by("-serial")
            .values_list("serial", flat=True)
            .first()
        )
    newest_cache.put(tenant_id, {purpose: (now, serial)})
    return serial


def _coder(tenant_id: int, key: tuple, make):
    """This thread's compressor or decompressor for key, made by make() the first time."""
    key = (threading.get_ident(), *key)
    coder = coders_cache.get(tenant_id, key)
    if coder is None:
        coder = make()
        coders_cache.put(tenant_id, {key: coder})
    return coder


def offer(tenant_id: int, bodies: list[bytes], purpose: int = Purpose.PAYLOAD) -> int | None:
    """Collect a tenant's new bodies (across batches: an exporter may send one span at
    a time) and train a dictionary once there are enough of them."""
    recipe = RECIPES[purpose]
    with _lock:
        pool = samples_cache.get(tenant_id, purpose)
        if pool is None:
            pool = []
            samples_cache.put(tenant_id, {purpose: pool})
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
        samples_cache.put(tenant_id, {purpose: []})
    return train(tenant_id, pool, purpose)


def train(tenant_id: int, samples: list[bytes], purpose: int = Purpose.PAYLOAD) -> int | None:
    """Train and store a dictionary from these samples; returns its serial."""
    recipe = RECIPES[purpose]
    # Every web worker of a new tenant gets here at about the same time: one trains,
    # the others wait and take its dictionary.
    with _lock, rows.tenant_turn(tenant_id):
        newest_cache.invalidate(tenant_id)  # another process may have trained one
        serial = newest(tenant_id, purpose)
        if serial is not None:
            return serial
        chosen = _capped(samples, recipe.max_bytes)
        trained = _trained(recipe, chosen)
        return _store(tenant_id, purpose, trained)


def _trained(recipe: Recipe, samples: list[bytes]) -> zstandard.ZstdCompressionDict:
    return zstandard.train_dictionary(
        recipe.size, samples, k=TRAIN_K, d=TRAIN_D, level=recipe.train_level
    )


def _capped(samples: list[bytes], max_bytes: int) -> list[bytes]:
    """The leading samples, up to the first that reaches max_bytes in all."""
    chosen, total = [], 0
    for sample in samples:
        if total >= max_bytes:
            break
        chosen.append(sample)
        total += len(sample)
    return chosen


def refresh(tenant_id: int, samples: list[bytes], purpose: int = Purpose.PAYLOAD) -> int | None:
    """Train a new dictionary from recent samples and keep it if it compresses them
    clearly better than the newest one (a tenant's texts drift: new tools, new
    customers). Judged on a third of the samples held out of training. Returns the new
    serial, or None when the newest one stays."""
    recipe = RECIPES[purpose]
    current = newest(tenant_id, purpose)
    held_out = samples[::3]
    chosen = _capped([s for i, s in enumerate(samples) if i % 3], recipe.max_bytes)
    total = sum(map(len, chosen))
    if current is None or len(chosen) < recipe.min_samples or total < recipe.min_bytes:
        return None
    trained = _trained(recipe, chosen)

    def stored_size(data) -> int:
        compressor = zstandard.ZstdCompressor(level=recipe.level, dict_data=data)
        return sum(len(compressor.compress(sample)) for sample in held_out)

    if stored_size(trained) > REFRESH_GAIN * stored_size(_load(tenant_id, "serial", current)):
        return None
    with _lock:
        return _store(tenant_id, purpose, trained)


def _store(tenant_id: int, purpose: int, trained) -> int | None:
    """Store a trained dictionary as the tenant's newest of its purpose (under _lock)."""
    with tenant_scope(tenant_id):
        top = PayloadDictionary.objects.aggregate(top=Max("serial"))["top"]
    serial = (top or 0) + 1
    if serial > MAX_SERIAL:
        return None
    try:
        with transaction.atomic():
            PayloadDictionary.all_tenants.create(
                tenant_id=tenant_id,
                dict_id=trained.dict_id(),
                serial=serial,
                purpose=purpose,
                data=trained.as_bytes(),
            )
    except IntegrityError:
        # Another process stored one first: use that.
        newest_cache.invalidate(tenant_id)
        return newest(tenant_id, purpose)
    dicts_cache.put(tenant_id, {("serial", serial): trained})
    newest_cache.put(tenant_id, {purpose: (time.monotonic(), serial)})
    return serial


class Packer:
    """Compresses one batch's bodies of one purpose into compact frames, with the
    tenant's dictionary of that serial (None: without one)."""

    def __init__(self, tenant_id: int, purpose: int, serial: int | None):
        self.serial = serial or 0

        def make():
            data = _load(tenant_id, "serial", serial) if serial else None
            params = zstandard.ZstdCompressionParameters.from_level(
                RECIPES[purpose].level,
                format=zstandard.FORMAT_ZSTD1_MAGICLESS,
                write_dict_id=False,
                write_checksum=False,
                write_content_size=True,
            )
            return zstandard.ZstdCompressor(dict_data=data, compression_params=params)

        self.compressor = _coder(tenant_id, ("compress", purpose, self.serial), make)
        self.header = bytes([COMPACT | self.serial])

    def pack(self, body: bytes) -> bytes:
        """A compact frame, unless that is no smaller (tiny bodies): then the body."""
        frame = self.header + self.compressor.compress(body)
        return frame if len(frame) < len(body) else body


def unpack(tenant_id: int, data: bytes) -> bytes:
    compact = bool(data) and bool(data[0] & COMPACT)
    if not compact and data[:4] != ZSTD_MAGIC:
        return data  # kept as it is
    if compact:
        by, number, frame = "serial", data[0] & MAX_SERIAL, data[1:]
        fmt = zstandard.FORMAT_ZSTD1_MAGICLESS
    else:
        by, number, frame = "dict_id", zstandard.get_frame_parameters(data).dict_id, data
        fmt = zstandard.FORMAT_ZSTD1

    def make():
        data_dict = _load(tenant_id, by, number) if number else None  # 0: no dictionary
        if number and data_dict is None:
            raise KeyError(f"zstd dictionary ({by} {number}) of tenant {tenant_id} is missing")
        return zstandard.ZstdDecompressor(dict_data=data_dict, format=fmt)

    return _coder(tenant_id, ("decompress", by, number), make).decompress(frame)


class DetailPacker:
    """Packs one batch's span details: compressed with the tenant's span-detail
    dictionary, or (until there is one) kept as JSON and offered as training samples."""

    def __init__(self, tenant_id: int):
        self.tenant_id = tenant_id
        serial = newest(tenant_id, Purpose.SPAN_DETAIL)
        self.packer = Packer(tenant_id, Purpose.SPAN_DETAIL, serial) if serial else None
        self.samples: list[bytes] = []

    def pack(self, detail: dict) -> bytes:
        body = orjson.dumps(detail)
        if self.packer is None:
            self.samples.append(body)
            return body
        return self.packer.pack(body)

    def offer_samples(self) -> Packer | None:
        """Offer the batch's details kept as JSON; once they train the tenant's first
        dictionary, the packer to compress them with (`packed`)."""
        if not self.samples:
            return None
        serial = offer(self.tenant_id, self.samples, Purpose.SPAN_DETAIL)
        return Packer(self.tenant_id, Purpose.SPAN_DETAIL, serial) if serial else None


def unpack_json(tenant_id: int, data) -> dict:
    """A stored span detail (memoryview on PostgreSQL), back as a dict."""
    if not data:
        return {}
    return orjson.loads(unpack(tenant_id, bytes(data)))

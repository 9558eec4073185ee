"""PostgreSQL's search index: an inverted index of our own, kept compressed.

A tsvector per trace plus GIN repeats the vocabulary in every trace and costs GIN
about 10 bytes a (term, trace) pair: more than the payloads it indexes. Here, as in
FTS5 or Lucene, each term is stored once per segment with the delta-coded row ids of
the traces holding it. The terms are the texts' lexemes and the traces' attribute
pairs, each `\x01` and 16 hex digits (attributes.py), which sort before every lexeme:

    tracing_searchblock (tenant, segment, first_term) -> level, last_term, data
    data = zstd(header | terms | posting counts | row id deltas, byte-plane shuffled)

- A batch of the index task writes a segment of its own (level 0). Once a tenant has
  FANOUT segments of one level they are merged into one of the next level, under the
  tenant's advisory lock, in the task that wrote the last of them: the merge unions each
  term's postings and drops the row ids of traces that are gone or cold.
- A query reads, for each term, the blocks of each segment whose term range can hold
  a term with that prefix, unions their postings, intersects across terms, and leaves
  the join to tracing_trace (by primary key) to drop traces removed since. An
  attribute filter reads, in one statement, the one block of each segment that can
  hold each of its exact terms, and unions their postings.
- Terms are bytea (UTF-8): bytea compares bytewise, which is code point order, as
  Python sorts, and the terms with prefix p are those in [p, p + 0xFF).
- The row id deltas are 8-byte integers split into byte planes: the high planes are
  zeros that zstd folds away, and both directions run in C (slicing, array, accumulate).

Running a batch twice writes its postings twice; a union is the same union, and the
next merge keeps one of each.
"""

import heapq
import struct
import sys
from array import array
from bisect import bisect_left
from itertools import accumulate, chain, groupby
from operator import itemgetter, sub

import zstandard
from django.db import connection, transaction

from tracing.retention.models import Tier

# Segments of one level merged into one of the next. A tenant holds at most
# FANOUT - 1 of each level, which a query reads one by one; each posting is rewritten
# once a level, and what a merge deletes stays on disk until a vacuum.
FANOUT = 4
BLOCK_POSTINGS = 8192  # postings a block holds (one term's may overflow it)
ZSTD_LEVEL = 9
MERGE_LOCK = 0x5358  # pg_advisory_xact_lock class of a tenant's index merges
SEARCHED_TIERS = (Tier.HOT, Tier.WARM)  # a cold trace is listed by its summary only
_HEADER = struct.Struct("<QII")  # base row id, terms, bytes of terms
_WIDTH = 8  # bytes a delta
_PAGE = 64  # blocks read or written a statement while merging

# No shared (de)compressor: their instances are not safe to use from two threads at
# once, and the web process may serve searches on several.


# --- blocks ----------------------------------------------------------------------------


def _block_encode(entries: list[tuple[bytes, list[int]]], compressor) -> bytes:
    """Terms in order, each with its sorted row ids."""
    base = min(ids[0] for _, ids in entries)
    terms = b"\x00".join(term for term, _ in entries)
    counts = array("I", [len(ids) for _, ids in entries])
    deltas = array("Q")
    for _, ids in entries:
        deltas.extend(map(sub, ids, chain((base,), ids)))
    if sys.byteorder == "big":
        counts.byteswap()
        deltas.byteswap()
    raw = deltas.tobytes()
    planes = b"".join(raw[i::_WIDTH] for i in range(_WIDTH))
    header = _HEADER.pack(base, len(entries), len(terms))
    return compressor.compress(header + terms + counts.tobytes() + planes)


class _Block:
    __slots__ = ("base", "counts", "deltas", "terms")

    def __init__(self, data: bytes):
        raw = zstandard.ZstdDecompressor().decompress(data)
        self.base, n, size = _HEADER.unpack_from(raw)
        at = _HEADER.size
        self.terms = raw[at : at + size].split(b"\x00")
        at += size
        self.counts = array("I")
        self.counts.frombytes(raw[at : at + 4 * n])
        at += 4 * n
        planes = raw[at:]
        total = len(planes) // _WIDTH
        shuffled = bytearray(len(planes))
        for i in range(_WIDTH):
            shuffled[i::_WIDTH] = planes[i * total : (i + 1) * total]
        self.deltas = array("Q")
        self.deltas.frombytes(shuffled)
        if sys.byteorder == "big":
            self.counts.byteswap()
            self.deltas.byteswap()

    def _ids(self, start: int, count: int):
        run = accumulate(self.deltas[start : start + count], initial=self.base)
        next(run)  # the base itself
        return run

    def with_prefix(self, prefix: bytes, into: set[int]) -> None:
        """Adds the row ids of every term of the block that starts with prefix."""
        first = bisect_left(self.terms, prefix)
        start = sum(self.counts[:first])
        for i in range(first, len(self.terms)):
            if not self.terms[i].startswith(prefix):
                break
            into.update(self._ids(start, self.counts[i]))
            start += self.counts[i]

    def with_term(self, term: bytes, into: set[int]) -> None:
        """Adds the row ids of the term, if the block holds it."""
        i = bisect_left(self.terms, term)
        if i < len(self.terms) and self.terms[i] == term:
            into.update(self._ids(sum(self.counts[:i]), self.counts[i]))

    def entries(self):
        start = 0
        for term, count in zip(self.terms, self.counts, strict=True):
            yield term, self._ids(start, count)
            start += count


def _blocks_of(entries):
    """(first term, last term, data) of blocks holding the entries, in term order, made
    as the entries come (a merge's output need not fit in memory)."""
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    chunk, held = [], 0
    for term, ids in entries:
        chunk.append((term, ids))
        held += len(ids)
        if held >= BLOCK_POSTINGS:
            yield chunk[0][0], chunk[-1][0], _block_encode(chunk, compressor)
            chunk, held = [], 0
    if chunk:
        yield chunk[0][0], chunk[-1][0], _block_encode(chunk, compressor)


# --- writes ----------------------------------------------------------------------------


def _segment_id(cursor) -> int:
    # Segment ids only need to be unique and grow; the table's own serial gives both.
    cursor.execute("SELECT nextval('tracing_searchsegment_seq')")
    return cursor.fetchone()[0]


def _blocks_insert(cursor, tenant_id: int, segment: int, level: int, blocks) -> None:
    if not blocks:
        return
    cursor.execute(
        "INSERT INTO tracing_searchblock "
        "(tenant_id, segment, level, first_term, last_term, data) "
        "SELECT %s, %s, %s, b.f, b.l, b.d FROM unnest(%s::bytea[], %s::bytea[], %s::bytea[]) "
        "AS b(f, l, d)",
        [
            tenant_id,
            segment,
            level,
            [b[0] for b in blocks],
            [b[1] for b in blocks],
            [b[2] for b in blocks],
        ],
    )


def segment_add(*, tenant_id: int, terms_by_row: dict[int, set[str]]) -> None:
    """A new segment holding each trace row's terms; then any merge that is due."""
    postings: dict[bytes, list[int]] = {}
    for row_id in sorted(terms_by_row):
        for term in terms_by_row[row_id]:
            postings.setdefault(term.encode(), []).append(row_id)
    if not postings:
        return
    blocks = list(_blocks_of((term, postings[term]) for term in sorted(postings)))
    with connection.cursor() as cursor:
        _blocks_insert(cursor, tenant_id, _segment_id(cursor), 0, blocks)
    segments_merge(tenant_id=tenant_id)


def _segments_due(cursor, tenant_id: int) -> tuple[int, list[int]] | None:
    cursor.execute(
        "SELECT level, array_agg(DISTINCT segment ORDER BY segment) FROM tracing_searchblock "
        "WHERE tenant_id = %s GROUP BY level ORDER BY level",
        [tenant_id],
    )
    for level, segments in cursor.fetchall():
        if len(segments) >= FANOUT:
            return level, segments
    return None


def segments_merge(*, tenant_id: int, everything: bool = False) -> int:
    """Merges the tenant's segments that are due (all of them into one if everything);
    returns how many merges ran."""
    merges = _segments_merge(tenant_id, everything)
    if merges and not connection.in_atomic_block:
        _vacuum_unless_autovacuum()
    return merges


def _vacuum_unless_autovacuum() -> None:
    """What a merge deleted is disk space nothing reuses until a vacuum; on a server
    running without autovacuum each merge would grow the table by all it rewrote, so
    the index vacuums its table itself there (SKIP_LOCKED: a worker vacuuming it
    already will do)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('autovacuum')")
        if cursor.fetchone()[0] == "off":
            cursor.execute("VACUUM (SKIP_LOCKED) tracing_searchblock")


def _segments_merge(tenant_id: int, everything: bool) -> int:
    """A worker that finds another merging waits for it, then looks again: skipping
    instead would leave the merge its own segment made due undone until the tenant's
    next batch."""
    merges = 0
    while True:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [MERGE_LOCK, tenant_id])
            if everything:
                cursor.execute(
                    "SELECT coalesce(max(level), 0), array_agg(DISTINCT segment) "
                    "FROM tracing_searchblock WHERE tenant_id = %s",
                    [tenant_id],
                )
                level, segments = cursor.fetchone()
                due = (level, segments) if segments and len(segments) > 1 else None
            else:
                due = _segments_due(cursor, tenant_id)
            if due is None:
                return merges
            level, segments = due
            _merge(cursor, tenant_id, segments, level + 1)
            merges += 1
        if everything:
            return merges


def _segment_entries(tenant_id: int, segment: int):
    """A segment's (term, row ids) in term order, read a page of blocks at a time."""
    after = b""
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT first_term, data FROM tracing_searchblock "
                "WHERE tenant_id = %s AND segment = %s AND first_term > %s "
                "ORDER BY first_term LIMIT %s",
                [tenant_id, segment, after, _PAGE],
            )
            rows = cursor.fetchall()
        for _, data in rows:
            yield from _Block(bytes(data)).entries()
        if len(rows) < _PAGE:
            return
        after = bytes(rows[-1][0])


def _merge(cursor, tenant_id: int, segments: list[int], level: int) -> None:
    # First pass: which of the row ids the segments hold still name a searched trace.
    held: set[int] = set()
    for segment in segments:
        for _, ids in _segment_entries(tenant_id, segment):
            held.update(ids)
    cursor.execute(
        "SELECT id FROM tracing_trace WHERE tenant_id = %s AND id = ANY(%s::bigint[]) "
        "AND tier = ANY(%s::smallint[])",
        [tenant_id, list(held), list(SEARCHED_TIERS)],
    )
    live = {row_id for (row_id,) in cursor.fetchall()}

    def merged():
        streams = [_segment_entries(tenant_id, s) for s in segments]
        for term, group in groupby(heapq.merge(*streams, key=itemgetter(0)), itemgetter(0)):
            ids = set()
            for _, run in group:
                ids.update(run)
            ids &= live
            if ids:
                yield term, sorted(ids)

    target = _segment_id(cursor)
    page = []
    for block in _blocks_of(merged()):
        page.append(block)
        if len(page) == _PAGE:
            _blocks_insert(cursor, tenant_id, target, level, page)
            page = []
    _blocks_insert(cursor, tenant_id, target, level, page)
    cursor.execute(
        "DELETE FROM tracing_searchblock WHERE tenant_id = %s AND segment = ANY(%s::bigint[])",
        [tenant_id, segments],
    )


# --- reads -----------------------------------------------------------------------------

# For each segment, the blocks whose term range can hold a term starting with %s: the
# last block starting at or before it, and those starting after it within the prefix.
_BLOCKS = """
SELECT b.data FROM (
    SELECT DISTINCT segment FROM tracing_searchblock WHERE tenant_id = %(tenant)s
) s CROSS JOIN LATERAL (
    (SELECT data FROM tracing_searchblock
     WHERE tenant_id = %(tenant)s AND segment = s.segment AND first_term <= %(prefix)s
     ORDER BY first_term DESC LIMIT 1)
    UNION ALL
    SELECT data FROM tracing_searchblock
    WHERE tenant_id = %(tenant)s AND segment = s.segment
      AND first_term > %(prefix)s AND first_term < %(upper)s
) b
"""


def rows_matching(*, tenant_id: int, prefixes: list[str]) -> list[int]:
    """Row ids of the traces holding a term starting with each of the prefixes (the
    traces may be gone since: the caller joins them)."""
    found: set[int] | None = None
    # Longest first: most likely the rarest, so the intersection empties soonest.
    for prefix in sorted(set(prefixes), key=len, reverse=True):
        key = prefix.encode()
        with connection.cursor() as cursor:
            cursor.execute(_BLOCKS, {"tenant": tenant_id, "prefix": key, "upper": key + b"\xff"})
            blocks = cursor.fetchall()
        ids: set[int] = set()
        for (data,) in blocks:
            _Block(bytes(data)).with_prefix(key, ids)
        found = ids if found is None else found & ids
        if not found:
            return []
    return sorted(found or ())


# For each segment and each term, the one block whose term range can hold the term: the
# last starting at or before it. Terms that fall in one block read it once.
_BLOCKS_OF_TERMS = """
SELECT b.data FROM tracing_searchblock b
WHERE b.tenant_id = %(tenant)s AND (b.segment, b.first_term) IN (
    SELECT s.segment, (
        SELECT first_term FROM tracing_searchblock
        WHERE tenant_id = %(tenant)s AND segment = s.segment AND first_term <= t.term
        ORDER BY first_term DESC LIMIT 1
    )
    FROM (SELECT DISTINCT segment FROM tracing_searchblock WHERE tenant_id = %(tenant)s) s
    CROSS JOIN unnest(%(terms)s::bytea[]) AS t(term)
)
"""


def rows_holding(*, tenant_id: int, terms: list[str]) -> list[int]:
    """Row ids of the traces holding any of the terms, exactly (the traces may be gone
    since: the caller joins them), from one read of the segments."""
    keys = sorted({term.encode() for term in terms})
    if not keys:
        return []
    with connection.cursor() as cursor:
        cursor.execute(_BLOCKS_OF_TERMS, {"tenant": tenant_id, "terms": keys})
        blocks = cursor.fetchall()
    found: set[int] = set()
    for (data,) in blocks:
        block = _Block(bytes(data))
        for key in keys:
            block.with_term(key, found)
    return sorted(found)

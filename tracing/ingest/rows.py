"""Fast inserts for the span path's two big tables.

bulk_create spent most of an ingest batch building model instances and preparing
values field by field; this writes the same rows with one INSERT ... ON CONFLICT DO
NOTHING per chunk (both PostgreSQL and SQLite have it), from one array per column on
PostgreSQL and a VALUES list on SQLite. Values are adapted with the
connection's own operations, so types match what the ORM would write.
"""

import fcntl
import hashlib
import os
import sqlite3
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, fields
from operator import attrgetter
from pathlib import Path

import orjson
from django.conf import settings
from django.db import connection, transaction


@dataclass(slots=True)
class SpanRow:
    """A tracing_span row: its columns in table order (PostgreSQL's, widest first:
    migration 0029), values as the database takes them."""

    tenant_id: int
    trace_id: object  # uuid_param
    span_id: int
    parent_span_id: int | None
    start_ns: int
    end_ns: int
    input_tokens: int | None
    output_tokens: int | None
    labels_id: int | None
    kind: int
    status_code: int
    name: str | None
    status_message: str
    session_id: str
    run_id: str
    tool_call_id: str
    detail_packed: bytes
    redactions: str | None  # json_param
    # Not a column: the span's label values, until the write transaction finds or
    # stores their combination and sets labels_id.
    labels: tuple = ()


SPAN_COLUMNS = tuple(f.name for f in fields(SpanRow) if f.name != "labels")
# A row's column values as a tuple, for insert_ignoring_conflicts.
span_values = attrgetter(*SPAN_COLUMNS)


@dataclass(slots=True)
class PayloadRow:
    """A tracing_payload row: its columns in table order, values as the database takes them."""

    digest: object  # DigestField's database value
    tenant_id: int
    last_seen: int  # DayField's database value
    kind: int
    data: bytes | None  # None: in the blob store
    redactions: str | None  # json_param


PAYLOAD_COLUMNS = tuple(f.name for f in fields(PayloadRow))
payload_values = attrgetter(*PAYLOAD_COLUMNS)
CHUNK = 400


def json_param(value):
    if value is None:
        return None
    return orjson.dumps(value).decode()


def uuid_param(value: uuid.UUID):
    """A trace id as TraceIdField stores it."""
    return value if connection.features.has_native_uuid_field else value.bytes


def payloads_stored(tenant_id: int, raw_digests: list[bytes]) -> list[tuple]:
    """(digest bytes, redactions JSON text or None, last_seen day number) of those of the
    payloads the tenant has stored. The ORM spent more preparing an IN list of a few
    hundred digests, value by value, than the query took."""
    if not raw_digests:
        return []
    postgres = connection.vendor == "postgresql"
    params = [uuid.UUID(bytes=raw) for raw in raw_digests] if postgres else raw_digests
    marks = ", ".join(["%s"] * len(params))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT digest, redactions, last_seen FROM tracing_payload "  # noqa: S608 - fixed names
            f"WHERE tenant_id = %s AND digest IN ({marks})",
            [tenant_id, *params],
        )
        rows = cursor.fetchall()
    if postgres:
        return [(d.bytes, r, day) for d, r, day in rows]
    return rows


def insert_ignoring_conflicts(
    table: str, columns: tuple, rows: list[tuple], returning: tuple = ()
) -> list[tuple]:
    """Insert the rows, skipping those whose key is stored; with `returning`, those
    columns of the rows this call inserted."""
    if not rows:
        return []
    head = f"INSERT INTO {table} ({', '.join(columns)})"
    tail = " ON CONFLICT DO NOTHING" + (f" RETURNING {', '.join(returning)}" if returning else "")
    types = _column_types(table) if connection.vendor == "postgresql" else None
    # One array per column on PostgreSQL: the statement stays a few hundred bytes with a
    # parameter a column however many rows it carries, where a VALUES list has a
    # placeholder per value, which psycopg splits and quotes in Python on every call and
    # PostgreSQL turns into as many constants to plan. A VALUES list goes in chunks,
    # under the databases' limits on parameters.
    size = len(rows) if types is not None else CHUNK
    inserted = []
    with connection.cursor() as cursor:
        for start in range(0, len(rows), size):
            chunk = rows[start : start + size]
            if types is not None:
                arrays = ", ".join(f"%s::{types[c]}[]" for c in columns)
                cursor.execute(
                    f"{head} SELECT * FROM unnest({arrays}){tail}",  # noqa: S608 - fixed names
                    [list(column) for column in zip(*chunk, strict=True)],
                )
            else:
                placeholder = "(" + ", ".join(["?"] * len(columns)) + ")"
                _sqlite_execute(
                    cursor,
                    f"{head} VALUES {', '.join([placeholder] * len(chunk))}{tail}",
                    [value for row in chunk for value in row],
                )
            if returning:
                inserted.extend(cursor.fetchall())
    return inserted


def _sqlite_execute(cursor, sql: str, params: list) -> None:
    """A statement written with SQLite's own "?" marks, run as it is: Django's cursor
    rewrites each %s of a statement with a regular expression, which for a VALUES list
    of thousands of marks took a few per cent of an ingest batch."""
    with connection.wrap_database_errors:
        sqlite3.Cursor.execute(cursor.cursor, sql, params)


_types: dict[str, dict[str, str] | None] = {}


def _column_types(table: str) -> dict[str, str] | None:
    """A PostgreSQL table's column types without their modifiers (an explicit cast to
    varchar(n) would truncate where the insert must refuse), or None where a column is
    an array (unnest would flatten it): that table is written with VALUES."""
    if table not in _types:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute "
                "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
                [table],
            )
            types = dict(cursor.fetchall())
        _types[table] = None if any(t.endswith("]") for t in types.values()) else types
    return _types[table]


# Advisory lock class of a trace's spans (pg_advisory_xact_lock's first key).
SPAN_LOCKS = 0x5350


def lock_traces(tenant_id: int, trace_ids) -> bool:
    """Hold, until the transaction ends, the write lock of each of the tenant's traces.

    PostgreSQL keeps no unique index on spans (a unique key of three random values
    costs 65 bytes a span; the index by trace that replaces it, about 10): writers of a
    trace take turns here instead, and whoever holds the lock sees every span that
    was stored before it. Locks are taken in key order, so two batches sharing traces
    cannot deadlock. On SQLite, writers already take turns (`write_turn`) and the
    primary key enforces the rest. True where it locked: the caller must then leave
    out stored spans itself.
    """
    if connection.vendor != "postgresql":
        return False
    keys = list(
        {
            int.from_bytes(
                hashlib.blake2b(tenant_id.to_bytes(8, "big") + t, digest_size=4).digest(),
                "big", signed=True,
            )
            for t in trace_ids
        }
    )  # fmt: skip
    _xact_locks(SPAN_LOCKS, keys)
    return True


# Advisory lock class of a tenant's one-off work.
TENANT_LOCKS = 0x5445


@contextmanager
def tenant_turn(tenant_id: int):
    """One process at a time for a tenant's rare one-off work (training its first
    dictionaries, which every web worker would otherwise do at once): on PostgreSQL a
    transaction holding the tenant's advisory lock, on SQLite the write turn."""
    if connection.vendor != "postgresql":
        with write_turn():
            yield
        return
    with transaction.atomic():
        _xact_locks(TENANT_LOCKS, [tenant_id % 2**31])
        yield


def _xact_locks(kind: int, keys: list[int]) -> None:
    """PostgreSQL advisory locks (kind, key) held until the transaction ends, taken in
    key order: two holders of overlapping sets then cannot deadlock."""
    with connection.cursor() as cursor:
        # The sorted subquery fixes the order in which the locks are taken.
        cursor.execute(
            "SELECT pg_advisory_xact_lock(%s, k) FROM (SELECT unnest(%s::int[]) AS k ORDER BY k) s",
            [kind, keys],
        )


def _lock_path() -> Path:
    name = str(settings.DATABASES["default"]["NAME"])
    if connection.is_in_memory_db():
        # A test database: its writers are threads of one process; lock beside var/.
        Path(settings.VAR_DIR).mkdir(parents=True, exist_ok=True)
        return Path(settings.VAR_DIR) / "memory-db.write-lock"
    return Path(name).with_suffix(".write-lock")


# Each thread's open lock file per path: a gateway thread takes the turn for every
# budgeted call, and opening the file each time cost more than the flock. flock locks
# an open file, so threads with their own handles still exclude one another; a file
# removed since (a test's scratch folder) is opened again, as others will open anew.
_handles = threading.local()


def _lock_handle():
    held = getattr(_handles, "files", None)
    if held is None:
        held = _handles.files = {}
    key = (str(settings.DATABASES["default"]["NAME"]), str(settings.VAR_DIR))
    handle = held.get(key)
    if handle is None or os.fstat(handle.fileno()).st_nlink == 0:
        handle = held[key] = open(_lock_path(), "a")  # noqa: SIM115 - kept for the thread
    return handle


@contextmanager
def write_turn():
    """On SQLite, take turns to write through a file lock.

    SQLite lets one writer in at a time and makes the others poll with growing sleeps
    (up to 100 ms), which cost more than the writes themselves when two web workers
    ingest at once. A blocking flock hands the turn over as soon as it is free. On
    PostgreSQL, rows lock individually and this does nothing.
    """
    if connection.vendor != "sqlite" or getattr(_handles, "depth", 0):
        # Taken already by this thread (a write that must commit with another's, as
        # retention's search removal with its mark): an inner release would hand the
        # turn over in the middle of the outer write.
        yield
        return
    handle = _lock_handle()
    fcntl.flock(handle, fcntl.LOCK_EX)
    _handles.depth = 1
    try:
        yield
    finally:
        _handles.depth = 0
        fcntl.flock(handle, fcntl.LOCK_UN)

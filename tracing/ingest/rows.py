"""Fast inserts for the span path's two big tables.

bulk_create spent most of an ingest batch building model instances and preparing
values field by field; this writes the same rows with one INSERT ... ON CONFLICT DO
NOTHING per chunk (both PostgreSQL and SQLite have it). Values are adapted with the
connection's own operations, so types match what the ORM would write.
"""

import uuid
from datetime import date

import orjson
from django.db import connection

SPAN_COLUMNS = (
    "tenant_id", "trace_id", "span_id", "parent_span_id", "name", "kind", "start_ns", "end_ns",
    "status_code", "status_message", "service_name", "agent_name", "operation", "provider",
    "request_model", "response_model", "input_tokens", "output_tokens", "session_id", "run_id",
    "tool_name", "tool_call_id", "detail", "redactions",
)  # fmt: skip
PAYLOAD_COLUMNS = ("tenant_id", "digest", "kind", "size", "data", "redactions", "last_seen")
CHUNK = 400


def _json(value):
    if value is None:
        return None
    return orjson.dumps(value).decode()


def uuid_param(value: uuid.UUID):
    return value if connection.features.has_native_uuid_field else value.hex


def date_param(value: date):
    return connection.ops.adapt_datefield_value(value)


def insert_ignoring_conflicts(table: str, columns: tuple, rows: list[tuple]) -> None:
    if not rows:
        return
    placeholder = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as cursor:
        for start in range(0, len(rows), CHUNK):
            chunk = rows[start : start + CHUNK]
            cursor.execute(
                f"INSERT INTO {table} ({', '.join(columns)}) VALUES "  # noqa: S608 - fixed names
                f"{', '.join([placeholder] * len(chunk))} ON CONFLICT DO NOTHING",
                [value for row in chunk for value in row],
            )


def json_param(value):
    return _json(value)

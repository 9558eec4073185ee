"""Migration 0029 lays tracing_span's columns out widest first on PostgreSQL, and back,
keeping every row; SQLite's table stays as it is."""

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from controlplane.tenancy import tenant_scope
from tracing.ingest.rows import SPAN_COLUMNS
from tracing.models import Span

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = ("tracing", "0028_search_blocks_postgres")
AFTER = ("tracing", "0029_span_columns_aligned")
TRACE = uuid.UUID("0123456789abcdef0123456789abcdef")


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def _order() -> tuple:
    with connection.cursor() as cursor:
        described = connection.introspection.get_table_description(cursor, "tracing_span")
    return tuple(column.name for column in described)


def _spans(tenant) -> list[tuple]:
    with tenant_scope(tenant):
        return list(Span.objects.order_by("span_id").values_list(*SPAN_COLUMNS[1:]))


def test_it_rebuilds_the_span_table_keeping_its_rows(acme):
    for span_id, name in ((1, None), (2, "custom")):
        Span.all_tenants.create(
            tenant=acme, trace_id=TRACE, span_id=span_id, parent_span_id=None if span_id == 1
            else 1, name=name, kind=1, start_ns=10 * span_id, end_ns=10 * span_id + 5,
            input_tokens=7, session_id="conv-1", tool_call_id="call-1",
            detail_packed=b"\x81packed", redactions={"EMAIL": 1},
        )  # fmt: skip
    stored = _spans(acme)
    aligned = _order()
    _migrate(BEFORE)
    try:
        assert _spans(acme) == stored
        if connection.vendor == "postgresql":
            assert aligned == SPAN_COLUMNS and _order() != aligned
        else:
            assert _order() == aligned
    finally:
        _migrate(AFTER)
    assert _spans(acme) == stored and _order() == aligned
    with connection.cursor() as cursor:
        indexes = connection.introspection.get_constraints(cursor, "tracing_span")
    if connection.vendor == "postgresql":
        assert indexes["span_trace"]["columns"] == ["tenant_id", "trace_id"]
        assert any(c["foreign_key"] == ("controlplane_tenant", "id") for c in indexes.values())

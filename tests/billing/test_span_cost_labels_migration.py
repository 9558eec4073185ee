"""Migration 0012 turns a cost row's agent, session, provider and model strings into its
span's labels id, and back, on whichever database the suite runs on."""

import uuid
from datetime import date

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tracing.ingest.rows import uuid_param
from tracing.labels import label_key
from tracing.models import LABEL_FIELDS, Span, SpanLabels

pytestmark = pytest.mark.django_db(transaction=True)
BEFORE = ("billing", "0011_span_cost_and_cost_total_keys")
AFTER = ("billing", "0012_span_cost_labels")
TRACE = uuid.UUID("0123456789abcdef0123456789abcdef")
STRINGS = ("agent_name", "session_id", "provider", "model")


def _migrate(target):
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate([target])


def _cost_rows(columns: tuple) -> dict[int, tuple]:
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT span_id, {', '.join(columns)} FROM billing_spancost"  # noqa: S608 - fixed names
        )
        return {row[0]: row[1:] for row in cursor.fetchall()}


def test_it_moves_the_strings_to_labels_and_back(acme):
    values = dict.fromkeys(LABEL_FIELDS, "")
    values.update(
        service_name="svc", operation="chat", provider="anthropic",
        request_model="claude-sonnet-4", response_model="claude-sonnet-4-20250514",
    )  # fmt: skip
    labels = SpanLabels.all_tenants.create(
        tenant=acme, key=label_key(tuple(values[f] for f in LABEL_FIELDS)), **values
    )
    Span.all_tenants.create(
        tenant=acme, trace_id=TRACE, span_id=1, start_ns=0, end_ns=1, labels=labels,
        session_id="conv-1",
    )  # fmt: skip
    _migrate(BEFORE)
    try:
        # Span 1 is a row; span 2's trace went to a bundle, so only its strings say who.
        rows = [
            (1, "svc", "conv-1", "anthropic", "claude-sonnet-4-20250514"),
            (2, "archived-agent", "conv-2", "openai", "gpt-4o"),
        ]
        with connection.cursor() as cursor:
            for span_id, *strings in rows:
                cursor.execute(
                    "INSERT INTO billing_spancost (tenant_id, trace_id, span_id, day, call_key, "
                    "run_id, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, "
                    "price_override, counted, over_budget, cost_nusd, "
                    f"{', '.join(STRINGS)}) VALUES "
                    "(%s, %s, %s, %s, '', '', 10, 5, 0, 0, %s, %s, %s, 42, %s, %s, %s, %s)",
                    [acme.id, uuid_param(TRACE), span_id,
                     connection.ops.adapt_datefield_value(date(2026, 12, 1)),
                     False, True, False, *strings],
                )  # fmt: skip
        _migrate(AFTER)
        moved = _cost_rows(("labels_id", "cost_nusd"))
        assert moved[1] == (labels.id, 42)
        made = SpanLabels.all_tenants.get(id=moved[2][0])
        assert (made.tenant_id, made.agent_name, made.provider, made.request_model) == (
            acme.id, "archived-agent", "openai", "gpt-4o",
        )  # fmt: skip
        _migrate(BEFORE)
        # The archived row's session went with its span: its strings come back without it.
        assert _cost_rows(STRINGS) == {
            1: ("svc", "conv-1", "anthropic", "claude-sonnet-4-20250514"),
            2: ("archived-agent", "", "openai", "gpt-4o"),
        }
    finally:
        _migrate(AFTER)

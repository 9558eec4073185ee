"""Full-text search on the embedded default: SQLite with FTS5, in a process of its own
(the suite itself runs on PostgreSQL)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
from django.core.management import call_command
from django.test.utils import CaptureQueriesContext
from django.db import connection
from django.http import QueryDict
from controlplane import services
from controlplane.tenancy import tenant_scope
from tests.tracing.searchdata import conversation_trace, in_process_provider
from tracing.models import Span
from tracing.query import traces
from tracing.query.filters import parse_trace_filters, span_hex
from tracing.search.index import search_index_spans

call_command("migrate", verbosity=0)
acme = services.tenant_create(slug="acme", name="Acme")
other = services.tenant_create(slug="other", name="Other")
order = conversation_trace(in_process_provider(acme), user="Where is parcel 4471?")
refund = conversation_trace(in_process_provider(acme), user="Refund my invoice", error=True)
conversation_trace(in_process_provider(other), user="Refund for parcel 4471")  # not acme's
for tenant in (acme, other):
    with tenant_scope(tenant):
        pairs = [(t.hex, span_hex(s)) for t, s in Span.objects.values_list("trace_id", "span_id")]
        search_index_spans(tenant_id=tenant.id, spans=pairs)
        search_index_spans(tenant_id=tenant.id, spans=pairs)  # a second run changes nothing

def found(query):
    with tenant_scope(acme):
        rows, _ = traces.trace_page(filters=parse_trace_filters(QueryDict(query)))
        return [t.trace_id.hex for t in rows]

assert found("q=parcel+4471") == [order], found("q=parcel+4471")
assert found("q=refu") == [refund]
assert found("q=timed+out&status=error") == [refund]
assert found("q=nothing+like+this") == []
assert found("q=parcel+baker") == [order]  # the question and a tool result between them
# Same start time: the later row first.
assert found("attr=gen_ai.tool.name%3Dlookup_order") == [refund, order]
with CaptureQueriesContext(connection) as queries:
    found("q=parcel")
assert any("tracing_searchtrace MATCH" in q["sql"] for q in queries.captured_queries)
# The index holds terms, one document per trace, not a copy of the texts (those stay in
# the payload store) and no link rows.
with connection.cursor() as cursor:
    cursor.execute("SELECT sql FROM sqlite_master WHERE name = 'tracing_searchtrace'")
    assert "content=''" in cursor.fetchone()[0]
    cursor.execute("SELECT count(*) FROM tracing_searchblock")  # PostgreSQL's
    assert cursor.fetchone() == (0,)
print("sqlite fts5 ok")
"""


MIGRATION = """
from django.core.management import call_command
from django.db import connection
from controlplane import services
from tracing.search.fulltext import traces_matching_sql

call_command("migrate", "tracing", "0017", verbosity=0)
call_command("migrate", "controlplane", verbosity=0)  # the Tenant model as it is now
acme = services.tenant_create(slug="acme", name="Acme")
with connection.cursor() as cursor:
    cursor.execute(
        "INSERT INTO tracing_searchtext (tenant_id, digest, document) VALUES (%s, 'd1', %s)",
        [acme.id, "Where is parcel 4471?"],
    )
    cursor.execute(
        "INSERT INTO tracing_tracetext (tenant_id, digest, trace_id) VALUES (%s, 'd1', %s)",
        [acme.id, bytes(range(16))],
    )
    cursor.execute(
        "INSERT INTO tracing_traceattribute (tenant_id, key, value, trace_id) "
        "VALUES (%s, 'gen_ai.tool.name', 'lookup_order', %s)",
        [acme.id, bytes(range(16))],
    )
call_command("migrate", "tracing", "0023", verbosity=0)

def search_finds_the_trace():
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, document FROM tracing_searchtext")
        [(row_id, document)] = cursor.fetchall()
        assert document is None
        cursor.execute(
            "SELECT rowid FROM tracing_searchtext_fts WHERE tracing_searchtext_fts MATCH %s",
            ['"parc"* "4471"*'],
        )
        assert cursor.fetchall() == [(row_id,)]
        # The trace's link is kept, by the text's id, in a table that is its own key.
        cursor.execute("SELECT tenant_id, text_id, trace_id FROM tracing_tracetext")
        assert cursor.fetchall() == [(acme.id, row_id, bytes(range(16)))]
        for table in ("tracing_tracetext", "tracing_traceattribute"):
            cursor.execute("SELECT sql FROM sqlite_master WHERE name = %s", [table])
            assert "WITHOUT ROWID" in cursor.fetchone()[0]
        cursor.execute("SELECT key, value, trace_id FROM tracing_traceattribute")
        assert cursor.fetchall() == [("gen_ai.tool.name", "lookup_order", bytes(range(16)))]

search_finds_the_trace()
call_command("migrate", "tracing", "0017", verbosity=0)
with connection.cursor() as cursor:
    cursor.execute("SELECT digest FROM tracing_tracetext")
    assert cursor.fetchall() == [("d1",)]
call_command("migrate", "tracing", "0023", verbosity=0)
with connection.cursor() as cursor:  # (0018 backwards leaves the terms to index_traces)
    cursor.execute("SELECT tenant_id, trace_id FROM tracing_tracetext")
    assert cursor.fetchall() == [(acme.id, bytes(range(16)))]
# 0024: one document per trace; the per-text index and its links go (index_traces
# refills the new table from the stored spans), both ways; 0026 drops their tables.
call_command("migrate", "tracing", "0024", verbosity=0)
with connection.cursor() as cursor:
    for table in ("tracing_searchtext", "tracing_tracetext"):
        cursor.execute(f"SELECT count(*) FROM {table}")
        assert cursor.fetchone() == (0,), table
call_command("migrate", "tracing", verbosity=0)
with connection.cursor() as cursor:
    cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE 'tracing_%%text'")
    assert cursor.fetchall() == []
    cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE 'tracing_search%%'")
    names = {name for (name,) in cursor.fetchall()}
    assert "tracing_searchtrace" in names and "tracing_searchtext_fts" not in names
    cursor.execute(*traces_matching_sql(acme.id, "parcel"))
    assert cursor.fetchall() == []
call_command("migrate", "tracing", "0023", verbosity=0)
with connection.cursor() as cursor:
    cursor.execute("SELECT name FROM sqlite_master WHERE name LIKE 'tracing_search%%'")
    names = {name for (name,) in cursor.fetchall()}
    assert "tracing_searchtext_fts" in names and "tracing_searchtrace" not in names
call_command("migrate", "tracing", verbosity=0)
print("sqlite migration ok")
"""


def _sqlite_script(tmp_path, script: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    var = tmp_path / "var"
    for folder in ("queue", "processed"):
        (var / "celery" / folder).mkdir(parents=True)
    env.update(
        DATABASE_URL=f"sqlite:///{tmp_path / 'fd.sqlite3'}",
        BLOB_STORE_URL=f"file://{tmp_path / 'blobs'}",
        FLIGHTDECK_VAR_DIR=str(var),
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="controlplane.settings",
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


@pytest.mark.slow
def test_it_searches_full_text_with_sqlite_fts5(tmp_path):
    assert "sqlite fts5 ok" in _sqlite_script(tmp_path, SCRIPT)


@pytest.mark.slow
def test_it_moves_the_index_to_contentless_tables_and_back(tmp_path):
    assert "sqlite migration ok" in _sqlite_script(tmp_path, MIGRATION)

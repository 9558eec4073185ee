"""SpanCost holds its span's labels id instead of the agent, session, provider and
model strings.

Tracing stores those once already: the span row's `labels` (a tenant's few
combinations, cached both ways) and the span's session. Four strings of about 60 bytes
made a third of each cost row on PostgreSQL (a 168-byte tuple); an int4 replaces them.
Existing rows take their span's labels; a row whose span is no longer a row (its trace
moved to a bundle) gets a combination of its own strings, found or stored here.

On PostgreSQL the table is rebuilt, its columns widest first as migration 0011 laid
them: dropped columns would stay in every new row's null bitmap. SQLite adds and
drops columns in place. Backwards restores the strings from the labels and the spans.
"""

import hashlib

from django.db import migrations, models

FK = "CONSTRAINT billing_spancost_tenant_id_fk REFERENCES controlplane_tenant (id) DEFERRABLE INITIALLY DEFERRED"
CHECK = "CONSTRAINT billing_spancost_price_version_check CHECK (price_version >= 0)"
SHARED = (
    "tenant_id", "span_id", "parent_span_id", "cost_nusd", "trace_id", "day", "input_tokens",
    "output_tokens", "cache_read_tokens", "cache_write_tokens", "price_version",
    "price_override", "counted", "over_budget", "call_key", "run_id",
)  # fmt: skip
FIRST = f"""tenant_id bigint NOT NULL {FK},
    span_id bigint NOT NULL,
    parent_span_id bigint,
    cost_nusd bigint,
    trace_id uuid NOT NULL,
    day date NOT NULL,"""
TOKENS = f"""input_tokens integer NOT NULL,
    output_tokens integer NOT NULL,
    cache_read_tokens integer NOT NULL,
    cache_write_tokens integer NOT NULL,
    price_version integer {CHECK},
    price_override boolean NOT NULL,
    counted boolean NOT NULL,
    over_budget boolean NOT NULL,"""
WITH_LABELS = f"""CREATE TABLE billing_spancost_new (
    {FIRST}
    labels_id integer,
    {TOKENS}
    call_key varchar(255) NOT NULL,
    run_id varchar(64) NOT NULL)"""
# Migration 0011's shape.
WITH_STRINGS = f"""CREATE TABLE billing_spancost_new (
    {FIRST}
    {TOKENS}
    call_key varchar(255) NOT NULL,
    agent_name varchar(255) NOT NULL,
    session_id varchar(255) NOT NULL,
    run_id varchar(64) NOT NULL,
    provider varchar(64) NOT NULL,
    model varchar(255) NOT NULL)"""
STRINGS = ("agent_name", "session_id", "provider", "model")
# Each string as costing derived it from the labels (billing.models.call_labels), and
# the session from the span ({c}: the cost row's table, or its alias).
LABEL_OF = "FROM tracing_spanlabels l WHERE l.id = {c}.labels_id"
SPAN_OF = (
    "FROM tracing_span s "
    "WHERE s.tenant_id = {c}.tenant_id AND s.trace_id = {c}.trace_id AND s.span_id = {c}.span_id"
)
STRING_OF = {
    "agent_name": f"SELECT COALESCE(NULLIF(l.agent_name, ''), l.service_name) {LABEL_OF}",
    "session_id": f"SELECT s.session_id {SPAN_OF}",
    "provider": f"SELECT l.provider {LABEL_OF}",
    "model": "SELECT SUBSTR(COALESCE(NULLIF(l.response_model, ''), l.request_model), 1, 255) "
    + LABEL_OF,
}
INDEXES = (
    "CREATE INDEX span_cost_trace ON billing_spancost (tenant_id, trace_id)",
    "CREATE INDEX span_cost_unknown ON billing_spancost (tenant_id, day) "
    "WHERE cost_nusd IS NULL AND counted",
)
# tracing.models.LABEL_FIELDS, in its order, as tracing.labels.label_key hashes them.
LABEL_FIELDS = (
    "service_name", "agent_name", "operation", "provider", "request_model",
    "response_model", "tool_name",
)  # fmt: skip


def _rebuild(execute, create: str, columns: str, select: str) -> None:
    """billing_spancost as `create` makes it, filled by `select` from the old table
    (aliased c), in key order; its indexes made again."""
    execute("ALTER TABLE billing_spancost RENAME TO billing_spancost_old")
    execute("DROP INDEX IF EXISTS span_cost_trace")
    execute("DROP INDEX IF EXISTS span_cost_unknown")
    execute(create)
    execute(
        f"INSERT INTO billing_spancost_new ({columns}) {select} "  # noqa: S608 - fixed names
        "ORDER BY c.tenant_id, c.trace_id, c.span_id"
    )
    # The old rows' deferred tenant checks, queued by the update, must run before their
    # table can go.
    execute("SET CONSTRAINTS ALL IMMEDIATE")
    execute("DROP TABLE billing_spancost_old")
    execute("ALTER TABLE billing_spancost_new RENAME TO billing_spancost")
    for sql in INDEXES:
        execute(sql)


def _labels_of_orphans(schema_editor) -> None:
    """Rows whose span is not a row any more take a combination of their own strings
    (found, or stored as tracing.labels stores one)."""
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT DISTINCT tenant_id, agent_name, provider, model FROM billing_spancost "
            "WHERE labels_id IS NULL AND (agent_name <> '' OR provider <> '' OR model <> '')"
        )
        for tenant_id, agent, provider, model in cursor.fetchall():
            values = dict.fromkeys(LABEL_FIELDS, "")
            values.update(agent_name=agent, provider=provider, request_model=model)
            ordered = tuple(values[f] for f in LABEL_FIELDS)
            key = hashlib.blake2b("\x1f".join(ordered).encode(), digest_size=16).digest()
            cursor.execute(
                "SELECT id FROM tracing_spanlabels WHERE tenant_id = %s AND key = %s",
                [tenant_id, key],
            )
            found = cursor.fetchone()
            if found is None:
                cursor.execute(
                    f"INSERT INTO tracing_spanlabels (tenant_id, key, {', '.join(LABEL_FIELDS)}) "  # noqa: S608 - fixed names
                    f"VALUES (%s, %s, {', '.join(['%s'] * len(LABEL_FIELDS))})",
                    [tenant_id, key, *ordered],
                )
                cursor.execute(
                    "SELECT id FROM tracing_spanlabels WHERE tenant_id = %s AND key = %s",
                    [tenant_id, key],
                )
                found = cursor.fetchone()
            cursor.execute(
                "UPDATE billing_spancost SET labels_id = %s WHERE labels_id IS NULL "
                "AND tenant_id = %s AND agent_name = %s AND provider = %s AND model = %s",
                [found[0], tenant_id, agent, provider, model],
            )


def forwards(apps, schema_editor):
    execute = schema_editor.execute
    execute("ALTER TABLE billing_spancost ADD COLUMN labels_id integer NULL")
    span_labels = f"SELECT s.labels_id {SPAN_OF.format(c='billing_spancost')}"
    execute(f"UPDATE billing_spancost SET labels_id = ({span_labels})")  # noqa: S608 - fixed names
    _labels_of_orphans(schema_editor)
    if schema_editor.connection.vendor == "postgresql":
        columns = ", ".join((*SHARED, "labels_id"))
        _rebuild(execute, WITH_LABELS, columns, f"SELECT {columns} FROM billing_spancost_old c")
        return
    for name in STRINGS:
        execute(f"ALTER TABLE billing_spancost DROP COLUMN {name}")


def backwards(apps, schema_editor):
    execute = schema_editor.execute
    if schema_editor.connection.vendor == "postgresql":
        values = [f"COALESCE(({STRING_OF[name].format(c='c')}), '')" for name in STRINGS]
        _rebuild(
            execute,
            WITH_STRINGS,
            ", ".join((*SHARED, *STRINGS)),
            f"SELECT {', '.join([*(f'c.{name}' for name in SHARED), *values])} "
            "FROM billing_spancost_old c",
        )
        return
    for name in STRINGS:
        execute(f"ALTER TABLE billing_spancost ADD COLUMN {name} varchar(255) NOT NULL DEFAULT ''")
        value = STRING_OF[name].format(c="billing_spancost")
        execute(f"UPDATE billing_spancost SET {name} = COALESCE(({value}), '')")  # noqa: S608 - fixed names
    execute("ALTER TABLE billing_spancost DROP COLUMN labels_id")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0011_span_cost_and_cost_total_keys"),
        ("tracing", "0012_span_labels"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forwards, backwards)],
            state_operations=[
                *(migrations.RemoveField(model_name="spancost", name=name) for name in STRINGS),
                migrations.AddField(
                    model_name="spancost",
                    name="labels",
                    field=models.ForeignKey(
                        db_constraint=False,
                        db_index=False,
                        null=True,
                        on_delete=models.deletion.DO_NOTHING,
                        related_name="+",
                        to="tracing.spanlabels",
                    ),
                ),
            ],
        )
    ]

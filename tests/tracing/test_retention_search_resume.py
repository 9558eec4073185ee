"""A retention run stopped right after it took a trace's texts out of search, and run
again, does not take them out a second time: SQLite's contentless index refuses that
('database disk image is malformed'), which left the trace stuck in its move or its
removal. The stop is a real database error, raised by a trigger on the run's next write."""

from datetime import timedelta

import pytest
from django.db import DatabaseError, connection
from django.utils import timezone

from controlplane.tenancy import tenant_scope
from tests.retention.helpers import POLICY, apply, send_trace, tier_of
from tests.retention.test_removal import send_user_span
from tracing.models import Trace
from tracing.query.filters import TraceFilters
from tracing.query.traces import traces_filtered
from tracing.retention.models import Tier

pytestmark = pytest.mark.django_db(transaction=True)


def found(tenant, words: str) -> set[str]:
    with tenant_scope(tenant):
        return {t.trace_id.hex for t in traces_filtered(TraceFilters(q=words))}


def stop_at(table: str, event: str, when: str = "") -> None:
    """Fail the next `event` on `table` whose row meets `when` (SQL on OLD and NEW)."""
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute(
                f"CREATE TRIGGER stop_here BEFORE {event} ON {table} "
                f"{'WHEN ' + when if when else ''} "
                "BEGIN SELECT RAISE(ABORT, 'stopped here'); END"
            )
            return
        cursor.execute(
            "CREATE FUNCTION stop_here() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'stopped here'; END $$"
        )
        cursor.execute(
            f"CREATE TRIGGER stop_here BEFORE {event} ON {table} FOR EACH ROW "
            f"{'WHEN (' + when + ')' if when else ''} EXECUTE FUNCTION stop_here()"
        )


def go_on(table: str) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("DROP TRIGGER stop_here")
        else:
            cursor.execute(f"DROP TRIGGER stop_here ON {table}")
            cursor.execute("DROP FUNCTION stop_here()")


def started(tenant, hex_id: str, *, days_ago: float) -> None:
    when = timezone.now() - timedelta(days=days_ago)
    Trace.all_tenants.filter(tenant=tenant, trace_id=hex_id).update(start_time=when)


@pytest.fixture
def policy(api, acme, make_key):
    key = make_key(acme, "admin")
    assert api.request("PUT", "/api/v1/retention", key=key, json=POLICY).status_code == 200


def test_a_removal_stopped_after_its_search_part_is_finished_once(acme, policy):
    gone, kept = "1" * 32, "2" * 32
    send_user_span(acme, gone, "u-1", "zanzibar quartermaster")
    send_user_span(acme, kept, "u-2", "zanzibar harbourmaster")
    # One past every tier (removed by the next run), one sent now.
    started(acme, gone, days_ago=10)
    started(acme, kept, days_ago=0)
    assert found(acme, "zanzibar") == {gone, kept}
    # A removal takes the search entries out, then the span rows: stop it there.
    stop_at("tracing_span", "DELETE")
    with pytest.raises(DatabaseError, match="stopped here"):
        apply(acme)
    go_on("tracing_span")
    assert Trace.all_tenants.get(tenant=acme, trace_id=gone).tier == Tier.DELETING
    apply(acme)  # finishes the removal
    assert tier_of(acme, gone) is None and tier_of(acme, kept) == Tier.HOT
    assert found(acme, "zanzibar") == {kept}
    assert found(acme, "quartermaster") == set()


def test_a_move_to_cold_stopped_after_its_search_part_is_finished_once(acme, policy):
    # Two traces with the same words: the index is refused a second removal of terms
    # other documents still hold.
    trace, other = send_trace(acme, session="cold"), send_trace(acme, session="other")
    apply(acme, days_ahead=1.5)
    assert tier_of(acme, trace) == Tier.WARM and found(acme, "Baker Street") == {trace, other}
    # A move to cold takes the texts out of search, then the mark saying it must off
    # the trace's row: stop it there.
    if connection.vendor == "sqlite":
        mark_off = (
            "json_extract(OLD.archive, '$.search_listed') IS NOT NULL "
            "AND json_extract(NEW.archive, '$.search_listed') IS NULL"
        )
    else:
        mark_off = "OLD.archive ? 'search_listed' AND NOT NEW.archive ? 'search_listed'"
    stop_at("tracing_trace", "UPDATE", mark_off)
    with pytest.raises(DatabaseError, match="stopped here"):
        apply(acme, days_ahead=4)
    go_on("tracing_trace")
    assert Tier.COLD in (tier_of(acme, trace), tier_of(acme, other))
    apply(acme, days_ahead=4)  # finishes the move
    assert (tier_of(acme, trace), tier_of(acme, other)) == (Tier.COLD, Tier.COLD)
    assert found(acme, "Baker Street") == set()
    fresh = "3" * 32
    send_user_span(acme, fresh, "u-3", "Baker Street again")
    assert found(acme, "Baker Street") == {fresh}

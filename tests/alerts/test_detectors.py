import pytest

from alerts.models import Alert, TraceWatch
from alerts.tasks import detect_spans
from tests.alerts.helpers import ORDER_SCHEMA, Recorder, ingest_and_detect

pytestmark = pytest.mark.django_db


def alerts_of(tenant, trace_id=None):
    rows = Alert.all_tenants.filter(tenant=tenant)
    return list(rows.filter(trace_id=trace_id) if trace_id else rows)


def test_it_raises_a_loop_on_the_same_call_repeated(acme, rule):
    rule("loop", threshold=3)
    rec = Recorder()
    trace = rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(4)])
    ingest_and_detect(acme, rec.spans())
    (alert,) = alerts_of(acme, trace)
    assert alert.detector == "loop" and alert.agent == "support"
    assert "lookup_order called 3 times" in alert.summary
    assert len(alert.span_id) == 16


def test_it_sees_arguments_as_the_same_call_whatever_their_key_order(acme, rule):
    rule("loop", threshold=2)
    rec = Recorder()
    trace = rec.trace(
        lambda r: [r.tool("search", {"q": "x", "n": 1}), r.tool("search", {"n": 1, "q": "x"})]
    )
    ingest_and_detect(acme, rec.spans())
    assert len(alerts_of(acme, trace)) == 1


def test_it_does_not_call_different_arguments_a_loop(acme, rule):
    rule("loop", threshold=3)
    rec = Recorder()
    trace = rec.trace(lambda r: [r.tool("lookup_order", {"order": i}) for i in range(5)])
    ingest_and_detect(acme, rec.spans())
    assert alerts_of(acme, trace) == []


def test_it_does_not_call_a_legitimate_retry_a_loop(acme, rule):
    rule("loop", threshold=3)
    rec = Recorder()

    def retried(r):
        r.tool("lookup_order", {"order": 7}, error=True)
        r.tool("lookup_order", {"order": 7}, error=True)
        r.tool("lookup_order", {"order": 7})  # the third try works

    trace = rec.trace(retried)
    ingest_and_detect(acme, rec.spans())
    assert alerts_of(acme, trace) == []


def test_it_calls_retries_past_the_budget_a_loop(acme, rule, settings):
    settings.ALERTS_RETRY_BUDGET = 2
    rule("loop", threshold=10)
    rec = Recorder()
    trace = rec.trace(
        lambda r: [r.tool("lookup_order", {"order": 7}, error=True) for _ in range(4)]
    )
    ingest_and_detect(acme, rec.spans())
    (alert,) = alerts_of(acme, trace)
    assert "retried 3 times" in alert.summary


def test_it_raises_a_short_cycle(acme, rule):
    rule("loop", threshold=5)
    rec = Recorder()

    def cycle(r):
        for _ in range(2):
            r.tool("open_page", {"url": "a"})
            r.tool("go_back", {})

    trace = rec.trace(cycle)
    ingest_and_detect(acme, rec.spans())
    (alert,) = alerts_of(acme, trace)
    assert "cycle of 2" in alert.summary


def test_it_counts_across_batches_and_not_twice_for_a_resent_batch(acme, rule):
    rule("loop", threshold=3)
    rec = Recorder()
    trace = rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(3)])
    spans = rec.spans()
    first = ingest_and_detect(acme, spans[:1])
    detect_spans(tenant_id=acme.id, spans=first[0][1])  # a redelivered task
    assert alerts_of(acme, trace) == []
    ingest_and_detect(acme, spans[1:2])
    assert alerts_of(acme, trace) == []
    ingest_and_detect(acme, spans[2:])
    assert len(alerts_of(acme, trace)) == 1
    watch = TraceWatch.all_tenants.get(tenant=acme, trace_id=trace)
    assert len(watch.state["k"]) == 1  # one distinct call remembered, not the spans


def test_it_raises_a_tool_the_request_did_not_declare(acme, rule):
    rule("hallucinated_tool")
    rec = Recorder()
    trace = rec.trace(
        lambda r: r.chat(tools=[("lookup_order", ORDER_SCHEMA)], calls=[("refund_order", {})])
    )
    ingest_and_detect(acme, rec.spans())
    (alert,) = alerts_of(acme, trace)
    assert "'refund_order', which the request did not declare" in alert.summary


def test_it_raises_arguments_the_schema_refuses_openinference_form(acme, rule):
    rule("hallucinated_tool")
    rec = Recorder()
    trace = rec.trace(
        lambda r: r.chat(
            tools=[("lookup_order", ORDER_SCHEMA)],
            calls=[("lookup_order", {"order": "seven"})],
            attrs_form="openinference",
        )
    )
    ingest_and_detect(acme, rec.spans())
    (alert,) = alerts_of(acme, trace)
    assert "schema refuses" in alert.summary


def test_it_accepts_a_declared_tool_with_valid_arguments(acme, rule):
    rule("hallucinated_tool")
    rec = Recorder()
    trace = rec.trace(
        lambda r: r.chat(
            tools=[("lookup_order", ORDER_SCHEMA)], calls=[("lookup_order", {"order": 7})]
        )
    )
    ingest_and_detect(acme, rec.spans())
    assert alerts_of(acme, trace) == []


def test_it_raises_an_error_burst_once(acme, rule, settings):
    settings.ALERTS_ERROR_MIN_CALLS = 4
    rule("error_burst", threshold=0.5)
    rec = Recorder(agent="billing-bot")
    rec.trace(lambda r: [r.tool("charge", {"n": i}, error=i % 4 != 0) for i in range(8)])
    ingest_and_detect(acme, rec.spans())
    rows = alerts_of(acme)
    assert {a.cause for a in rows} == {"error_burst:agent:billing-bot", "error_burst:tool:charge"}


def test_it_raises_no_error_burst_below_the_rate(acme, rule, settings):
    settings.ALERTS_ERROR_MIN_CALLS = 4
    rule("error_burst", threshold=0.5)
    rec = Recorder(agent="billing-bot")
    rec.trace(lambda r: [r.tool("charge", {"n": i}, error=i == 0) for i in range(8)])
    ingest_and_detect(acme, rec.spans())
    assert alerts_of(acme) == []


def test_it_runs_no_detector_without_a_rule(acme):
    rec = Recorder()
    rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(6)])
    ingest_and_detect(acme, rec.spans())
    assert alerts_of(acme) == [] and not TraceWatch.all_tenants.exists()


def test_it_keeps_an_agents_rule_to_that_agent(acme, rule):
    rule("loop", agent="other-agent", threshold=2)
    rec = Recorder()
    rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(4)])
    ingest_and_detect(acme, rec.spans())
    assert alerts_of(acme) == []

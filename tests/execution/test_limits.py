"""Run limits enforced by the gateway (steps, tool calls, budget, loops) and rate limits
(token buckets in Redis, and in the database on the embedded default)."""

import time

import pytest

from controlplane.models import RateBucket
from execution import ratelimit
from tests.execution.bundles import agent_with_bundle, run_now

LOOPER = """
def main(ctx, input):
    for i in range(input["n"]):
        if input["kind"] == "llm":
            ctx.llm.messages(messages=[{"role": "user", "content": "hi " + str(i if input.get("vary") else 0)}], max_tokens=20)
        elif input["kind"] == "tool":
            try:
                ctx.tool("http_request", url="http://nowhere.invalid/" + str(i if input.get("vary") else 0))
            except Exception:
                pass
        else:
            ctx.now()
    return "finished"
"""
MANIFEST = 'entrypoint = "agent:main"\ntools = ["http_request"]\n'


@pytest.fixture
def looper(acme, transactional_db):
    return agent_with_bundle(acme, name="looper", code=LOOPER, manifest=MANIFEST)


def test_it_stops_a_run_past_its_steps(acme, looper):
    run = run_now(acme, looper, input={"kind": "now", "n": 50}, limits={"max_steps": 10})
    assert (run.status, run.stop_reason, run.step_count) == ("stopped", "steps", 10)


def test_it_stops_a_run_past_its_tool_calls(acme, looper):
    run = run_now(
        acme, looper, input={"kind": "tool", "n": 20, "vary": True}, limits={"max_tool_calls": 3}
    )
    assert (run.status, run.stop_reason, run.tool_call_count) == ("stopped", "tool_calls", 3)


def test_it_stops_a_run_past_its_token_budget(acme, looper):
    run = run_now(
        acme, looper, input={"kind": "llm", "n": 50, "vary": True}, limits={"budget_tokens": 100}
    )
    assert (run.status, run.stop_reason) == ("stopped", "budget")
    assert run.input_tokens + run.output_tokens >= 100
    assert run.step_count < 50


def test_it_stops_a_run_that_loops_on_the_same_call(acme, looper):
    run = run_now(acme, looper, input={"kind": "llm", "n": 50}, limits={"loop_repeats": 4})
    assert (run.status, run.stop_reason, run.step_count) == ("stopped", "loop", 3)


def test_it_lets_a_run_within_its_limits_finish(acme, looper):
    run = run_now(acme, looper, input={"kind": "llm", "n": 5, "vary": True})
    assert (run.status, run.output, run.step_count) == ("succeeded", "finished", 5)


def test_it_waits_for_the_agents_llm_rate_limit(acme, transactional_db):
    toml = MANIFEST + "[rate_limits]\nllm_per_minute = 120\n"  # 2/s, a burst of 12
    agent = agent_with_bundle(acme, name="rated", code=LOOPER, manifest=toml)
    started = time.monotonic()
    run = run_now(acme, agent, input={"kind": "llm", "n": 14, "vary": True})
    assert run.status == "succeeded", run.error
    assert time.monotonic() - started >= 0.9  # two calls past the burst, at 2 a second


def test_it_answers_rate_limited_when_the_wait_would_be_too_long(acme, transactional_db, settings):
    settings.EXECUTION_RATE_LIMIT_MAX_WAIT_MS = 0
    code = """
def main(ctx, input):
    out = []
    for i in range(4):
        try:
            ctx.llm.messages(messages=[{"role": "user", "content": str(i)}], max_tokens=5)
            out.append("ok")
        except Exception as exc:
            out.append(type(exc).__name__)
    return out
"""
    toml = 'entrypoint = "agent:main"\n[rate_limits]\nllm_per_minute = 20\n'  # a burst of 2
    agent = agent_with_bundle(acme, name="limited", code=code, manifest=toml)
    run = run_now(acme, agent)
    assert run.output == ["ok", "ok", "RateLimited", "RateLimited"]


@pytest.mark.redis
def test_it_keeps_token_buckets_atomic_in_redis(settings):
    assert settings.REDIS_URL
    key = f"bucket-{time.monotonic_ns()}"
    waits = [ratelimit.acquire(key, 60) for _ in range(8)]  # burst 6, one a second
    assert waits[:6] == [0] * 6
    assert 0.5 < waits[6] <= 1.0 and waits[7] > 0


def test_it_keeps_token_buckets_in_the_database_without_redis(settings, db):
    settings.REDIS_URL = None
    key = f"bucket-{time.monotonic_ns()}"
    waits = [ratelimit.acquire(key, 60) for _ in range(8)]  # burst 6, one a second
    assert waits[:6] == [0] * 6
    assert 0.5 < waits[6] <= 1.0
    assert RateBucket.objects.get(key=key).tokens < 1

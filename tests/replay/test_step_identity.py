"""A step is identified by its request and occurrence, not by when its thread arrived."""

import pytest

from controlplane.tenancy import tenant_scope
from execution import services
from execution.models import Run
from execution.testing import agent_with_bundle, run_now
from replay.models import JournalStep

PARALLEL = """
from concurrent.futures import ThreadPoolExecutor

def main(ctx, input):
    out = []
    with ThreadPoolExecutor(8) as pool:
        for step in range(input["steps"]):
            calls = [pool.submit(ctx.tool, "echo", step=step, i=i) for i in range(8)]
            out.append([f.result()["i"] for f in calls])
            reply = ctx.llm.messages(messages=[{"role": "user", "content": str(out)}], max_tokens=20)
            out.append(reply.content[0].text)
    return out
"""
MANIFEST = 'entrypoint = "agent:main"\ntools = ["echo"]\n[limits]\nmax_parallel_tools = 8\n'


def take_up_again(run: Run) -> Run:
    """The run as a worker takes it up after a crash: same journal, agent from the top."""
    Run.all_tenants.filter(pk=run.pk).update(
        status="queued", attempts=0, output=None, finished_at=None, lease_expires_at=None
    )
    with tenant_scope(run.tenant_id):
        services.run_execute(run_id=run.pk, worker_id="another-worker")
    return Run.all_tenants.get(pk=run.pk)


@pytest.mark.slow
def test_it_serves_eight_parallel_tool_calls_their_own_answers_twenty_times(
    transactional_db, acme, messages_api
):
    agent = agent_with_bundle(acme, name="parallel", code=PARALLEL, manifest=MANIFEST)
    source = run_now(acme, agent, input={"steps": 3})
    assert source.status == "succeeded", (source.error, source.logs)
    assert source.output[0] == list(range(8))
    journal = list(JournalStep.all_tenants.filter(run=source).order_by("step"))
    assert len(journal) == 27 and {s.occurrence for s in journal} == {1}
    assert len({s.thread for s in journal if s.kind == "tool"}) > 1  # really in parallel
    llm_calls = messages_api.requests
    for _ in range(20):
        again = take_up_again(source)
        assert again.status == "succeeded", (again.error, again.logs)
        assert again.output == source.output
        # Every call was answered from the journal: nothing new written, nothing called.
        assert JournalStep.all_tenants.filter(run=source).count() == 27
        assert messages_api.requests == llm_calls


def test_it_numbers_repeated_requests_by_occurrence(transactional_db, acme):
    code = "def main(ctx, input):\n    return [ctx.random() for _ in range(3)]\n"
    run = run_now(acme, agent_with_bundle(acme, name="dice", code=code))
    steps = list(JournalStep.all_tenants.filter(run=run).order_by("step"))
    assert [(s.occurrence, s.thread, s.thread_seq) for s in steps] == [
        (1, "main", 2),  # the thread's first call was hello
        (2, "main", 3),
        (3, "main", 4),
    ]
    assert len({s.request_hash for s in steps}) == 1
    again = take_up_again(run)
    assert again.output == run.output == [s.result for s in steps]

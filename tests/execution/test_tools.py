"""Tools through the gateway: the allowlist, the vault, webhooks, validation, retries
with backoff and Retry-After, fallbacks, and the python tool's nested sandbox."""

import base64
import html
import json
import threading
import time
from urllib.parse import quote

import pytest

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from execution import services
from execution.models import Credential, ToolCall
from replay.models import JournalStep
from tests.execution.bundles import agent_with_bundle, run_now
from tests.execution.conftest import QUEUES
from tests.execution.upstream import LEAKY, MAX_RESPONSE, EchoHandler, caller, echoes

SECRET = "s3cr3t-token-value"


@pytest.fixture
def tenant(acme, transactional_db, upstream, settings):
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ["127.0.0.1/32"]  # where `upstream` listens
    with tenant_scope(acme):
        services.allowed_host_add(
            tenant=acme, host=f"127.0.0.1:{upstream.server_address[1]}", actor=Actor.system()
        )
        services.credential_set(tenant=acme, name="upstream", value=SECRET, actor=Actor.system())
    return acme


def test_it_injects_vault_credentials_host_side_and_scrubs_them(tenant, upstream):
    agent = caller(tenant, ["http_request"])
    args = {"url": upstream.base + "/echo", "credential": "upstream"}
    run = run_now(tenant, agent, input={"calls": [["http_request", args]]})
    assert run.status == "succeeded", run.error
    answer = run.output[0]["ok"]
    assert answer["status"] == 200
    # The server saw the real secret; the agent sees it scrubbed.
    assert upstream.seen_headers[0]["Authorization"] == f"Bearer {SECRET}"
    assert answer["json"]["auth"] == "Bearer [credential]"
    steps = JournalStep.all_tenants.filter(run_id=run.pk)
    assert SECRET not in json.dumps([s.result for s in steps] + [s.request for s in steps])
    assert SECRET not in run.logs
    # Encrypted at rest.
    assert SECRET.encode() not in bytes(Credential.all_tenants.get(tenant=tenant).ciphertext)


def test_it_scrubs_the_credential_in_every_form_an_echo_server_gives_it(tenant, upstream):
    with tenant_scope(tenant):
        services.credential_set(tenant=tenant, name="leaky", value=LEAKY, actor=Actor.system())
    agent = caller(tenant, ["http_request"])
    calls = [
        ["http_request", {"url": upstream.base + path, "credential": "leaky"}]
        for path in ("/encoded", "/padded", "/echo")
    ]
    run = run_now(tenant, agent, input={"calls": calls})
    assert run.status == "succeeded", run.error
    encoded, padded, echoed = (result["ok"] for result in run.output)
    # The server was sent the real value, and echoed it in each of these forms.
    assert upstream.seen_headers[0]["Authorization"] == f"Bearer {LEAKY}"
    lines = encoded["body"].splitlines()
    assert len(lines) == len(echoes("Bearer x")) and all("[credential]" in line for line in lines)
    # What is left of each line is the encoded "Bearer " around it (at most 19
    # characters, `{"auth": "Bearer "}`), not a piece of the value.
    assert max(len(line.replace("[credential]", "")) for line in lines) <= 19, lines
    assert echoed["json"]["auth"] == "Bearer [credential]"
    # Cut at the response limit after scrubbing: no prefix of the value is left at the end.
    assert len(padded["body"]) == MAX_RESPONSE and padded["body"].startswith("xxx")
    assert not any(padded["body"].endswith(LEAKY[:n]) for n in range(2, len(LEAKY) + 1))
    steps = JournalStep.all_tenants.filter(run_id=run.pk)
    stored = json.dumps([s.result for s in steps] + [run.output])
    for form in (json.dumps(LEAKY)[1:-1], quote(LEAKY, safe=""), html.escape(LEAKY)):
        assert form not in stored and json.dumps(form)[1:-1] not in stored
    assert base64.b64encode(LEAKY.encode()).decode().rstrip("=") not in stored


def test_it_refuses_hosts_off_the_allowlist(tenant, upstream):
    agent = caller(tenant, ["http_request"])
    run = run_now(
        tenant,
        agent,
        input={
            "calls": [
                ["http_request", {"url": "http://localhost:1/"}],
                ["http_request", {"url": "http://example.com/"}],
            ]
        },
    )
    assert run.status == "succeeded", run.error
    for result in run.output:
        assert (
            result["error"] == "ToolError" and "not on the tenant's allowlist" in result["message"]
        )
    assert upstream.hits == {}


def test_it_returns_tool_errors_for_unknown_tools_and_bad_arguments(tenant, upstream):
    agent = caller(tenant, ["http_request"])
    run = run_now(
        tenant,
        agent,
        input={
            "calls": [
                ["nope", {}],
                ["python", {"code": "print(1)"}],  # a real tool, but not this agent's
                ["http_request", {"url": 7}],
                ["http_request", {"url": "http://x", "verb": "GET"}],
            ]
        },
    )
    assert run.status == "succeeded", run.error
    messages = [r["message"] for r in run.output]
    assert all(r["error"] == "ToolError" for r in run.output)
    assert "unknown tool 'nope'" in messages[0] and "unknown tool 'python'" in messages[1]
    assert "invalid arguments for http_request: url: 7 is not of type 'string'" in messages[2]
    assert "Additional properties are not allowed ('verb'" in messages[3]
    steps = list(JournalStep.all_tenants.filter(run_id=run.pk).order_by("step"))
    assert [s.is_error for s in steps] == [True] * 4


def test_it_calls_webhook_tools_with_their_schema(tenant, upstream):
    with tenant_scope(tenant):
        services.tool_definition_create(
            tenant=tenant,
            actor=Actor.system(),
            name="lookup",
            url=upstream.base + "/lookup",
            schema={"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
            credential="upstream",
        )
    agent = caller(tenant, ["lookup"])
    run = run_now(tenant, agent, input={"calls": [["lookup", {"q": "flights"}], ["lookup", {}]]})
    assert run.status == "succeeded", run.error
    assert run.output[0]["ok"] == {
        "path": "/lookup",
        "auth": "Bearer [credential]",
        "got": '{"q":"flights"}',
    }
    assert "'q' is a required property" in run.output[1]["message"]


def test_it_retries_5xx_and_honours_retry_after_then_succeeds(tenant, upstream):
    upstream.plan["/flaky"] = [(503, {}), (429, {"retry-after": "0.4"}), (200, {})]
    agent = caller(tenant, ["http_request"])
    run = run_now(
        tenant, agent, input={"calls": [["http_request", {"url": upstream.base + "/flaky"}]]}
    )
    assert run.status == "succeeded", run.error
    assert run.output[0]["ok"]["status"] == 200
    hits = upstream.hits["/flaky"]
    assert len(hits) == 3
    assert hits[2] - hits[1] >= 0.39  # waited as long as Retry-After asked
    step = JournalStep.all_tenants.get(run_id=run.pk)
    assert step.is_error is False


def test_it_falls_back_then_gives_the_agent_an_error_it_can_handle(tenant, upstream, settings):
    settings.EXECUTION_RETRY_ATTEMPTS = 2
    upstream.plan["/primary"] = [(500, {})] * 4
    upstream.plan["/broken"] = [(500, {})] * 4
    with tenant_scope(tenant):
        for name, path, fallback in (
            ("backup", "/backup", ""),
            ("primary", "/primary", "backup"),
            ("broken", "/broken", "primary"),
        ):
            services.tool_definition_create(
                tenant=tenant,
                actor=Actor.system(),
                name=name,
                url=upstream.base + path,
                fallback=fallback,
            )
    agent = caller(tenant, ["primary", "broken"])
    run = run_now(tenant, agent, input={"calls": [["primary", {}], ["broken", {}]]})
    assert run.status == "succeeded", run.error
    assert run.output[0]["ok"]["path"] == "/backup"  # primary failed twice, backup answered
    # broken -> its fallback primary: both fail for good (a fallback's own fallback is not
    # followed), and the agent gets an error it can handle.
    assert len(upstream.hits["/primary"]) == 4 and len(upstream.hits["/backup"]) == 1
    assert run.output[1]["error"] == "ToolError"
    assert (
        "answered 500" in run.output[1]["message"]
        and "fallback primary" in run.output[1]["message"]
    )


def test_it_bounds_parallel_tool_calls_within_a_run(tenant, upstream):
    upstream_slow = """
import threading, time
def main(ctx, input):
    def call(i):
        ctx.tool("http_request", url=input["url"] + "?i=" + str(i))
    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    return "done"
"""
    agent = agent_with_bundle(
        tenant,
        name="parallel",
        code=upstream_slow,
        manifest='entrypoint = "agent:main"\ntools = ["http_request"]\n[limits]\nmax_parallel_tools = 2\n',
    )
    in_flight, peak = [0], [0]
    lock = threading.Lock()
    original = EchoHandler._answer

    def slow_answer(self):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.2)
        with lock:
            in_flight[0] -= 1
        original(self)

    EchoHandler.do_GET = slow_answer
    try:
        run = run_now(tenant, agent, input={"url": upstream.base + "/slow"})
    finally:
        EchoHandler.do_GET = original
    assert run.status == "succeeded", run.error
    assert sum(len(v) for k, v in upstream.hits.items() if k.startswith("/slow")) == 6
    assert peak[0] == 2


def test_it_runs_the_python_tool_in_a_fresh_sandbox_on_the_tools_queue(tenant, worker, settings):
    # The worker is here for the tools queue: the run itself stays in this process, not
    # queued where the worker would race run_now for its claim.
    settings.EXECUTION_QUEUE = QUEUES["inprocess"]
    agent = caller(tenant, ["python"])
    code = "import os, socket\nprint(sorted(os.listdir('/fd')), 6 * 7)\nsocket.create_connection(('127.0.0.1', 5432))"
    run = run_now(tenant, agent, input={"calls": [["python", {"code": code}]]})
    assert run.status == "succeeded", run.error
    result = run.output[0]["ok"]
    assert result["output"].startswith("['scratch'] 42\n")  # no socket, no bundle, no other run
    assert "ConnectionRefusedError" in result["output"] or "OSError" in result["output"]
    assert result["exit_code"] == 1


def test_it_runs_slow_tools_on_the_run_workers_own_threads_when_it_has_some(tenant, settings):
    # The embedded default's one worker process: no tools worker reads the tools queue here.
    settings.EXECUTION_TOOL_THREADS = 2
    agent = caller(tenant, ["python"])
    calls = [["python", {"code": f"print({n} * 7)"}] for n in (6, 7)]
    run = run_now(tenant, agent, input={"calls": calls})
    assert run.status == "succeeded", run.error
    assert [c["ok"]["output"] for c in run.output] == ["42\n", "49\n"]
    with tenant_scope(tenant):
        assert sorted(ToolCall.objects.values_list("status", flat=True)) == ["done", "done"]

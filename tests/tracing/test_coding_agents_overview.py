"""What the coding-agents page reads, from records the OpenTelemetry SDK's own log
exporter sends as each agent does: Codex's tool decisions count in the acceptance rate,
and a Codex session's traces act for its account."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogs

from controlplane.services import Actor
from controlplane.tenancy import tenant_scope
from tests.tracing.codingagents import CODEX, fixture, send
from tracing.codingagents.selectors import coding_overview
from tracing.models import Trace
from tracing.services import redaction_policy_update

pytestmark = pytest.mark.django_db(transaction=True)


def exporter(live_server, key):
    return HttpLogs(
        endpoint=f"{live_server.url}/v1/logs", headers={"Authorization": f"Bearer {key}"}
    )


def today_overview():
    today = timezone.now().date()
    return coding_overview(since=today - timedelta(days=1), until=today)


def test_it_counts_codexs_tool_decisions_in_the_acceptance_rate(live_server, acme, make_key):
    redaction_policy_update(
        tenant=acme, custom_patterns=[], drop_keys=[], never_scan_keys=["user.email"],
        actor=Actor.system(),
    )  # fmt: skip
    doc = fixture(CODEX)
    # Every decision Codex documents: approved, approved_execpolicy_amendment,
    # approved_for_session, denied, abort.
    for call, decision in enumerate(["approved_execpolicy_amendment", "abort"], start=3):
        doc["records"].append(
            {
                "event": "codex.tool_decision",
                "at_ms": 90_000 + call,
                "attributes": {
                    "tool_name": "shell",
                    "call_id": f"call_{call}",
                    "decision": decision,
                    "source": "user",
                },
            }
        )
    send(exporter(live_server, make_key(acme, "ingest")), doc)
    with tenant_scope(acme):
        overview = today_overview()
        # approved, approved_execpolicy_amendment / denied, abort
        assert (overview.total.accepted, overview.total.rejected) == (2, 2)
        assert overview.total.acceptance == 0.5
        assert overview.by_tool == {"apply_patch": [0, 1], "shell": [2, 1]}
        (user,) = overview.users
        assert user.user == "ops@acme.example" and (user.accepted, user.rejected) == (2, 2)
        # No user.id from Codex: its traces act for the account it sends.
        users = set(Trace.objects.values_list("user_id", flat=True))
        assert users == {"acct_synthetic"}


def test_another_tenant_counts_none_of_them(live_server, acme, globex, make_key):
    send(exporter(live_server, make_key(globex, "ingest")), fixture(CODEX))
    with tenant_scope(acme):
        overview = today_overview()
    assert (overview.total.accepted, overview.total.rejected) == (0, 0)
    assert overview.users == [] and json.dumps(overview.by_tool) == "{}"

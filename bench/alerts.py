"""Alerts' figures (not part of CI), on the embedded default (SQLite), DEBUG off as
deployed:

- ingest with every detector on versus off: OTLP batches of agent traces
  (bench/ingest.py's, text from bench/corpus.py; each chat span also declares the
  agent's five tools with their JSON schemas) through the span path in this process.
  "On" is what a user gets with a rule of every detector: the request path's
  receiver of spans_ingested queues the detection tasks (what an exporter waits for),
  and the tasks it queued, taken as they are published (500 spans each, checked to
  cover exactly the spans announced), are then run as a worker runs them and timed
  (what the platform pays). Billing's costing runs untimed between the two, in both
  rounds, so cost spike reads real costs. Wall and CPU time (this process's: SQLite
  works in it too; CPU is the figure that holds on a loaded machine), interleaved
  off/on rounds (BENCH_ROUNDS, 5), medians compared, the spread of detection's share
  over the rounds and the load average printed beside them;
- span arrival -> webhook delivery: a looping trace ingested, detected and delivered
  to a signed-webhook receiver on loopback, as the worker's tasks run them one after
  the other in this process (the broker's hop between them is not included), p50/p95.

Targets: under 15 % overhead; p50 under 2 s.
"""

import gc
import os
import statistics
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import execution as ex  # noqa: E402 - sets up the environment and Django

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))  # pairs of off/on runs, interleaved


def main() -> None:
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from alerts.models import AlertRule, Detector, WebhookEndpoint
    from billing import services as billing_services
    from billing.models import PriceBook
    from controlplane.services import tenant_create
    from controlplane.tenancy import tenant_scope

    # What a deployment runs: Django's SQL log (DEBUG) would be much of detection's time.
    settings.DEBUG = False
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ("127.0.0.0/8",)
    if not PriceBook.objects.exists():
        billing_services.price_book_load_file(path=billing_services.seed_path())
    tenant = tenant_create(slug=f"bench-alerts-{int(time.time())}")
    arrived: dict[str, float] = {}
    server = _receiver(arrived)
    with tenant_scope(tenant):
        endpoint = WebhookEndpoint.objects.create(
            tenant=tenant,
            url=f"http://127.0.0.1:{server.server_port}/hook",
            secret="whsec_YmVuY2hiZW5jaGJlbmNoYmVuY2g=",
        )
        for detector in Detector.values:
            rule = AlertRule.objects.create(tenant=tenant, detector=detector)
            rule.endpoints.add(endpoint)
    print("--- embedded ---")
    _ingest(tenant)
    settings.ALERTS_DETECT_ON_INGEST = False  # detection is run here, as a worker would
    _delay(tenant, arrived)
    server.shutdown()


def _receiver(arrived: dict) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            arrived.setdefault(self.headers["webhook-id"], time.perf_counter())
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "query": {"type": "string", "minLength": 1},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
    },
    "required": ["query"],
    "additionalProperties": False,
}


def _requests(traces: int, steps: int) -> tuple[list, int]:
    """bench/ingest.py's load, each chat span declaring the agent's tools as
    OpenLLMetry records them (gen_ai.tool.definitions), so every tool call it asks for
    is checked against a schema."""
    import json

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from bench.ingest import TOOLS, kv, requests_for

    definitions = json.dumps(
        [{"name": t, "description": f"{t} tool", "input_schema": TOOL_SCHEMA} for t in TOOLS]
    )
    bodies, total, _ = requests_for(traces, steps)
    requests = [ExportTraceServiceRequest.FromString(b) for b in bodies]
    for request in requests:
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    if span.name.startswith("chat"):
                        span.attributes.append(kv("gen_ai.tool.definitions", definitions))
    return requests, total


def _ingest(tenant, traces=40, steps=10) -> None:
    from celery.signals import before_task_publish
    from django.conf import settings

    from alerts.tasks import detect_spans
    from billing import costs
    from tracing.ingest.pipeline import spans_ingest
    from tracing.signals import spans_ingested

    settings.BILLING_COST_ON_INGEST = False  # costed below, untimed, in both rounds

    def ingest(requests) -> tuple[float, float, list, list]:
        """Wall and CPU seconds of the span path; the spans it announced and the
        detection tasks its receiver queued (their kwargs, as the broker carries them)."""
        announced, queued = [], []

        def collect(sender, *, spans, **kwargs):
            announced.extend(tuple(p) for p in spans)

        def published(sender=None, body=None, **kwargs):
            if sender == detect_spans.name:
                queued.append(body[1])  # protocol 2: (args, kwargs, embed)

        spans_ingested.connect(collect, dispatch_uid="bench.alerts")
        before_task_publish.connect(published, dispatch_uid="bench.alerts")
        try:
            gc.collect()  # the previous phase's garbage is not collected on this one's time
            started, cpu = time.perf_counter(), time.process_time()
            for request in requests:
                spans_ingest(tenant_id=tenant.id, request=request)
            return time.perf_counter() - started, time.process_time() - cpu, announced, queued
        finally:
            spans_ingested.disconnect(dispatch_uid="bench.alerts")
            before_task_publish.disconnect(dispatch_uid="bench.alerts")

    def detect(queued, announced) -> tuple[float, float, int]:
        """The queued detection tasks, run as a worker runs them (the task itself, in
        this process); they must cover exactly the spans the span path announced."""
        from alerts.models import Alert
        from controlplane.tenancy import tenant_scope

        covered = sorted(tuple(p) for kwargs in queued for p in kwargs["spans"])
        assert covered == sorted(announced), "the receiver did not queue every span"
        with tenant_scope(tenant):
            before = Alert.objects.count()
        gc.collect()
        started, cpu = time.perf_counter(), time.process_time()
        for kwargs in queued:
            detect_spans(**kwargs)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu
        with tenant_scope(tenant):
            return wall, cpu, Alert.objects.count() - before

    def cost(spans) -> None:
        for start in range(0, len(spans), 500):
            costs.spans_cost(
                tenant_id=tenant.id, spans=[list(p) for p in spans[start : start + 500]]
            )

    # Warm: dictionaries trained, caches filled, and enough costed traces of the agent
    # for cost spike to have a median.
    settings.ALERTS_DETECT_ON_INGEST = True
    _, _, spans, queued = ingest(_requests(traces, steps)[0])
    cost(spans)
    detect(queued, spans)
    off, on, detecting, raised = [], [], [], 0
    loads = [_load()]
    for _ in range(ROUNDS):  # off, on, off, on, ...: interleaved, medians compared
        for detect_on in (False, True):
            settings.ALERTS_DETECT_ON_INGEST = detect_on
            requests, total = _requests(traces, steps)
            wall, cpu, spans, queued = ingest(requests)
            (on if detect_on else off).append((wall / total, cpu / total))
            cost(spans)
            if detect_on:
                wall, cpu, alerts = detect(queued, spans)
                detecting.append((wall / total, cpu / total))
                raised += alerts
            else:
                assert not queued, "detection was queued with ALERTS_DETECT_ON_INGEST off"
    loads.append(_load())
    for what, i in (("wall", 0), ("CPU", 1)):
        off_s, on_s, det_s = (statistics.median(r[i] for r in v) for v in (off, on, detecting))
        share = sorted(100 * d[i] / o[i] for d, o in zip(detecting, off, strict=True))
        print(
            f"ingest spans/s ({steps}-step traces, {what} time): detectors off {1 / off_s:,.0f}, "
            f"on {1 / on_s:,.0f} (request path {100 * (on_s / off_s - 1):+.1f} %); detection "
            f"on the worker {1 / det_s:,.0f} spans/s, {100 * det_s / off_s:.1f} % of the "
            f"ingest's {what} (rounds {share[0]:.1f}-{share[-1]:.1f} %); ingest and detection "
            f"together {100 * ((on_s + det_s) / off_s - 1):+.1f} % of ingest alone "
            "(target under 15 %)"
        )
    print(
        f"  (medians of {ROUNDS} interleaved rounds of {total} spans, {raised} alerts raised; "
        f"load average {loads[0]} before, {loads[1]} after)"
    )


def _load() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def _delay(tenant, arrived: dict, traces: int = 30) -> None:
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from alerts import services
    from alerts.detect import spans_detect
    from alerts.models import Alert
    from controlplane.tenancy import tenant_scope
    from tests.alerts.helpers import Recorder, announced
    from tracing.ingest.pipeline import spans_ingest

    delays = []
    for _ in range(traces):
        rec = Recorder()
        trace = rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(3)])
        request = encode_spans(list(rec.spans()))
        started = time.perf_counter()
        with announced() as seen:
            spans_ingest(tenant_id=tenant.id, request=request)
        for _, spans in seen:
            spans_detect(tenant_id=tenant.id, spans=[tuple(s) for s in spans])
        with tenant_scope(tenant):
            for alert in Alert.objects.filter(trace_id=trace):
                for endpoint in alert.rule.endpoints.all():
                    services.delivery_attempt(alert_id=alert.pk, endpoint_id=endpoint.pk, attempt=1)
            ids = [f"msg_{a.pk}_{e}" for a in Alert.objects.filter(trace_id=trace)
                   for e in a.rule.endpoints.values_list("pk", flat=True)]  # fmt: skip
        if ids and ids[0] in arrived:
            delays.append(arrived[ids[0]] - started)
    print(
        f"span arrival -> webhook delivery ({len(delays)} looping traces): "
        f"p50 {ex.pct(delays, 50) * 1000:.1f} ms, p95 {ex.pct(delays, 95) * 1000:.1f} ms "
        "(target: p50 under 2 s)"
    )


if __name__ == "__main__":
    main()

"""Alerts' figures (not part of CI), on the embedded default (SQLite):

- ingest spans/s with every detector on versus off (and CPU time, the paired figure
  being detection's own CPU against the ingest's in the same runs): OTLP batches of agent traces
  (bench/ingest.py's) through the span path in this process; "on" adds, per batch,
  the detection a worker runs for it (a rule of every detector, the tenant's
  detectors all running), so the figure is what detection costs the platform per span;
- span arrival -> webhook delivery: a looping trace ingested, detected and delivered
  to a signed-webhook receiver on loopback, as the worker's tasks run them one after
  the other in this process (the broker's hop between them is not included), p50/p95.

Targets: under 15 % overhead; p50 under 2 s.
"""

import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import execution as ex  # noqa: E402 - sets up the environment and Django


def main() -> None:
    from django.conf import settings
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from alerts.models import AlertRule, Detector, WebhookEndpoint
    from controlplane.services import tenant_create
    from controlplane.tenancy import tenant_scope

    settings.ALERTS_DETECT_ON_INGEST = False  # detection is run here, as a worker would
    settings.EGRESS_ALLOW_PRIVATE_NETWORKS = ("127.0.0.0/8",)
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


def _announced_ingest(tenant, request) -> list:
    from tracing.ingest.pipeline import spans_ingest
    from tracing.signals import spans_ingested

    seen = []

    def collect(sender, *, spans, **kwargs):
        seen.append([list(p) for p in spans])

    spans_ingested.connect(collect, dispatch_uid="bench.alerts")
    try:
        spans_ingest(tenant_id=tenant.id, request=request)
    finally:
        spans_ingested.disconnect(dispatch_uid="bench.alerts")
    return seen


ROUNDS = 3  # pairs of off/on runs, interleaved


def _ingest(tenant, traces=40, steps=10) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from alerts.detect import spans_detect
    from bench.ingest import requests_for

    def batches():
        bodies, total, _ = requests_for(traces, steps)
        return [ExportTraceServiceRequest.FromString(b) for b in bodies], total

    detecting = [0.0]  # CPU seconds inside spans_detect, summed over the "on" runs

    def run(requests, detect: bool) -> tuple[float, float]:
        started, cpu = time.perf_counter(), time.process_time()
        for request in requests:
            for spans in _announced_ingest(tenant, request):
                if detect:
                    before = time.process_time()
                    spans_detect(tenant_id=tenant.id, spans=[tuple(s) for s in spans])
                    detecting[0] += time.process_time() - before
        return time.perf_counter() - started, time.process_time() - cpu

    run(batches()[0], True)  # warm: dictionaries trained, caches filled
    detecting[0] = 0.0
    results: dict[bool, list] = {}
    for _ in range(ROUNDS):  # off, on, off, on, ...
        for on in (False, True):
            requests, total = batches()
            results.setdefault(on, []).append((total, *run(requests, on)))
    rate = {on: sum(r[0] for r in rs) / sum(r[1] for r in rs) for on, rs in results.items()}
    # CPU time (the ingest and SQLite both run in this process) is what detection costs
    # whatever else the machine runs; wall-clock spans/s is what an exporter sees.
    cpu = {
        on: 1000 * sum(r[2] for r in rs) / sum(r[0] for r in rs) * 1000
        for on, rs in results.items()
    }
    print(
        f"ingest spans/s ({steps}-step traces): detectors off {rate[False]:,.0f}, "
        f"every detector on {rate[True]:,.0f} "
        f"({100 * (rate[False] / rate[True] - 1):+.1f} %; target under 15 %)"
    )
    print(
        f"CPU ms per 1,000 spans: detectors off {cpu[False]:.1f}, on {cpu[True]:.1f} "
        f"({100 * (cpu[True] / cpu[False] - 1):+.1f} %); load average {_load()}"
    )
    # Paired within the same "on" runs: detection's CPU against the ingest it follows,
    # which the machine's load moves alike (the figure above compares separate runs).
    on_spans = sum(r[0] for r in results[True])
    on_cpu = sum(r[2] for r in results[True])
    print(
        f"detection's own CPU: {1e6 * detecting[0] / on_spans:.1f} ms per 1,000 spans, "
        f"{100 * detecting[0] / (on_cpu - detecting[0]):.1f} % of the ingest's "
        "(target under 15 %)"
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
    from tests.alerts.helpers import Recorder

    delays = []
    for _ in range(traces):
        rec = Recorder()
        trace = rec.trace(lambda r: [r.tool("lookup_order", {"order": 7}) for _ in range(3)])
        request = encode_spans(list(rec.spans()))
        started = time.perf_counter()
        for spans in _announced_ingest(tenant, request):
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

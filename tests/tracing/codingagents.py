"""Coding agents' records as they send them, through the OpenTelemetry SDK's own log
exporters, from the fixtures in tests/tracing/data (each names the agent's version)."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry._logs import LogRecord
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource

DATA = Path(__file__).parent / "data"
CLAUDE_CODE = "claude_code_2.1.121_events.json"
CODEX = "codex_0.154.0_events.json"


def fixture(name: str) -> dict:
    return json.loads((DATA / name).read_text())


def records(doc: dict, *, start_ns: int, session: str | None = None) -> list[dict]:
    """The fixture's records as (time, body, attributes, event name), standard
    attributes, event.timestamp and event.sequence added as the agent adds them."""
    claude = doc["resource"]["service.name"] == "claude-code"
    out = []
    for sequence, r in enumerate(doc["records"]):
        at = start_ns + r["at_ms"] * 1_000_000
        attrs = {**doc["standard"]}
        if session:
            attrs["session.id" if claude else "conversation.id"] = session
        attrs["event.name"] = r["event"]
        attrs["event.timestamp"] = datetime.fromtimestamp(at / 1e9, tz=UTC).isoformat()
        if claude:
            attrs["event.sequence"] = sequence
            attrs["prompt.id"] = r["prompt.id"]
        attrs.update(r["attributes"])
        body = f"claude_code.{r['event']}" if claude else None
        out.append({"time_ns": at, "body": body, "attributes": attrs})
    return out


def logger_provider(exporter, doc: dict) -> LoggerProvider:
    provider = LoggerProvider(resource=Resource.create(doc["resource"]))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider


def send(exporter, doc: dict, *, start_ns: int | None = None, session=None, only=None) -> int:
    """Emit the fixture's records (or those at the indexes in `only`) through the SDK;
    returns start_ns."""
    start_ns = start_ns or (time.time_ns() - 3_600 * 10**9)
    provider = logger_provider(exporter, doc)
    logger = provider.get_logger(doc["scope"])
    for i, r in enumerate(records(doc, start_ns=start_ns, session=session)):
        if only is not None and i not in only:
            continue
        logger.emit(
            LogRecord(
                timestamp=r["time_ns"],
                observed_timestamp=r["time_ns"],
                body=r["body"],
                attributes=r["attributes"],
            )
        )
    provider.shutdown()
    return start_ns


def otlp_json(doc: dict, *, start_ns: int, session=None, only=None) -> dict:
    """The same records as an OTLP/JSON ExportLogsServiceRequest (http/json)."""

    def value(v):
        if isinstance(v, bool):
            return {"boolValue": v}
        if isinstance(v, int):
            return {"intValue": str(v)}
        return {"stringValue": str(v)}

    logs = []
    for i, r in enumerate(records(doc, start_ns=start_ns, session=session)):
        if only is not None and i not in only:
            continue
        record = {
            "timeUnixNano": str(r["time_ns"]),
            "attributes": [{"key": k, "value": value(v)} for k, v in r["attributes"].items()],
        }
        if r["body"]:
            record["body"] = {"stringValue": r["body"]}
        logs.append(record)
    resource = [{"key": k, "value": {"stringValue": v}} for k, v in doc["resource"].items()]
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": resource},
                "scopeLogs": [{"scope": {"name": doc["scope"]}, "logRecords": logs}],
            }
        ]
    }


CLAUDE_CODE_METRICS = "claude_code_2.1.121_metrics.json"


def delta():
    """Claude Code exports with delta temporality: pass as an exporter's
    preferred_temporality."""
    from opentelemetry.sdk.metrics import Counter
    from opentelemetry.sdk.metrics.export import AggregationTemporality

    return {Counter: AggregationTemporality.DELTA}


def send_metrics(exporter, doc: dict, *, user_email: str | None = None) -> None:
    """The fixture's counters through the SDK's MeterProvider, exported once."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=Resource.create(doc["resource"]), metric_readers=[reader])
    meter = provider.get_meter(doc["scope"])
    standard = {**doc["standard"]}
    if user_email:
        standard["user.email"] = user_email
    for counter in doc["counters"]:
        instrument = meter.create_counter(counter["name"], unit=counter["unit"])
        for point in counter["points"]:
            instrument.add(point["value"], {**standard, **point["attributes"]})
    provider.force_flush()
    provider.shutdown()

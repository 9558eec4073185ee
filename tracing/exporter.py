"""An OpenTelemetry SDK exporter that sends a managed run's spans down the span path
inside the process, with no network hop but through the same pipeline as OTLP."""

import logging
from collections.abc import Sequence

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from tracing.ingest.pipeline import spans_ingest
from tracing.selectors import SourceInputs

logger = logging.getLogger(__name__)


class InProcessSpanExporter(SpanExporter):
    def __init__(self, tenant_id: int, sources: SourceInputs | None = None):
        self.tenant_id = tenant_id
        self.sources = sources  # a replay's source trace (see SourceInputs)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = spans_ingest(
                tenant_id=self.tenant_id, request=encode_spans(spans), sources=self.sources
            )
        except Exception:
            logger.exception("in-process span export failed for tenant %s", self.tenant_id)
            return SpanExportResult.FAILURE
        if result.rejected:
            logger.warning("spans rejected for tenant %s: %s", self.tenant_id, result.error_message)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

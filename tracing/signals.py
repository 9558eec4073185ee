"""What the span path announces. Billing and alerts subscribe; ingest knows neither.

`spans_ingested` is sent after the transaction that stored the spans commits, with
tenant_id, trace_ids (hex) and spans: [(trace_id hex, span_id hex), ...] of the spans
newly stored (an exporter's retry of a stored span is not announced again).
"""

from django.dispatch import Signal

spans_ingested = Signal()

"""Rebuild the search index from stored spans (after a broker outage, or for spans
stored before search existed). Safe to run at any time: indexing is idempotent."""

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from controlplane.models import Tenant
from controlplane.tenancy import tenant_scope
from tracing.models import Span
from tracing.query.filters import span_hex
from tracing.search.index import search_index_spans
from tracing.search.segments import segments_merge

CHUNK = 500


class Command(BaseCommand):
    help = "Index stored spans for trace search (one tenant, or every tenant)."

    def add_arguments(self, parser):
        parser.add_argument("--tenant", metavar="SLUG", help="only this tenant")

    def handle(self, *args, tenant=None, **options):
        tenants = Tenant.objects.order_by("pk")
        if tenant:
            tenants = tenants.filter(slug=tenant)
            if not tenants:
                raise CommandError(f"no tenant {tenant!r}")
        for t in tenants:
            total = 0
            with tenant_scope(t):
                pairs = Span.objects.order_by("trace_id", "start_ns").values_list(
                    "trace_id", "span_id"
                )
                batch = []
                for trace_id, span_id in pairs.iterator(chunk_size=CHUNK):
                    batch.append((trace_id.hex, span_hex(span_id)))
                    if len(batch) == CHUNK:
                        total += search_index_spans(tenant_id=t.pk, spans=batch)
                        batch = []
                total += search_index_spans(tenant_id=t.pk, spans=batch)
            if connection.vendor == "postgresql":
                # One segment: a rebuild posted every term again beside what was there.
                segments_merge(tenant_id=t.pk, everything=True)
            self.stdout.write(f"{t.slug}: {total} spans indexed")

from django.conf import settings
from django.core.management.base import BaseCommand

from tracing.grpc_server import make_server


class Command(BaseCommand):
    help = "Serve OTLP/gRPC TraceService/Export (default 127.0.0.1:4317, OTLP_GRPC_ADDRESS)."

    def add_arguments(self, parser):
        parser.add_argument("--address", default=settings.OTLP_GRPC_ADDRESS)

    def handle(self, *args, address, **options):
        server, port = make_server(address)
        server.start()
        self.stdout.write(f"OTLP/gRPC listening on {address.rsplit(':', 1)[0]}:{port}")
        server.wait_for_termination()

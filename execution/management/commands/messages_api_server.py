"""Serve the local Messages API (for `make run` and tests): see execution/devllm/server.py."""

from django.core.management.base import BaseCommand

from execution.devllm.server import MessagesServer


class Command(BaseCommand):
    help = "Serve a local server that speaks the Anthropic Messages API."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--latency-ms", type=int, default=0)
        parser.add_argument("--api-key", default=None, help="accept only this key")

    def handle(self, *args, host, port, latency_ms, api_key, **options):
        server = MessagesServer((host, port), api_key=api_key, latency_ms=latency_ms)
        self.stdout.write(f"Messages API server at {server.url}/v1/messages", ending="\n")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()

"""Serve the local Messages API: see execution/devllm/server.py (also runnable without
Django as `python -m execution.devllm.server`, which the Procfile uses)."""

from django.core.management.base import BaseCommand

from execution.devllm.server import main


class Command(BaseCommand):
    help = "Serve a local server that speaks the Anthropic Messages API."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--latency-ms", type=int, default=0)
        parser.add_argument("--api-key", default=None, help="accept only this key")

    def handle(self, *args, host, port, latency_ms, api_key, **options):
        argv = ["--host", host, "--port", str(port), "--latency-ms", str(latency_ms)]
        main(argv + (["--api-key", api_key] if api_key else []))

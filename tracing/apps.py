from django.apps import AppConfig


class TracingConfig(AppConfig):
    name = "tracing"
    verbose_name = "Traces"

    def ready(self):
        # Search indexing listens to spans_ingested (tracing/receivers.py).
        from tracing import receivers  # noqa: F401

from django.apps import AppConfig


class BillingConfig(AppConfig):
    name = "billing"
    verbose_name = "Billing"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Cost on ingest listens to spans_ingested (billing/receivers.py).
        from billing import receivers  # noqa: F401

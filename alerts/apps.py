from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "alerts"
    verbose_name = "Alerts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # Detection listens to spans_ingested and budget_threshold_crossed (receivers.py).
        from alerts import receivers  # noqa: F401

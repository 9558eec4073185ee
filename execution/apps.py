from django.apps import AppConfig


class ExecutionConfig(AppConfig):
    name = "execution"
    verbose_name = "Managed execution"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        # A stopping worker hands its runs back (execution/receivers.py).
        from execution import receivers  # noqa: F401

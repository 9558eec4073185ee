import os

from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
application = get_wsgi_application()

# Import every view now rather than on the first request, so gunicorn --preload forks
# workers that are ready (the first OTLP batch would otherwise pay for the imports).
get_resolver().url_patterns  # noqa: B018

from controlplane.gctune import collect_less  # noqa: E402

collect_less()

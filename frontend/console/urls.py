from django.urls import include, path

from frontend.console import agents, runs

urlpatterns = [
    path("runs/", include(runs)),
    path("agents/", include(agents)),
    path("settings/", include("frontend.console.settings.urls")),
]

from django.urls import path

from execution import api

urlpatterns = [
    path("api/v1/agents", api.AgentListView.as_view(), name="agents"),
    path(
        "api/v1/agents/<str:agent_ref>/versions",
        api.AgentVersionListView.as_view(),
        name="agent-versions",
    ),
    path("api/v1/runs", api.RunListView.as_view(), name="runs"),
    path("api/v1/runs/<int:run_id>", api.RunDetailView.as_view(), name="run"),
    path("api/v1/runs/<int:run_id>/cancel", api.RunCancelView.as_view(), name="run-cancel"),
    path("api/v1/runs/<int:run_id>/steps", api.RunStepsView.as_view(), name="run-steps"),
    path("api/v1/tools", api.ToolListView.as_view(), name="tools"),
    path("api/v1/credentials", api.CredentialListView.as_view(), name="credentials"),
    path("api/v1/allowed-hosts", api.AllowedHostListView.as_view(), name="allowed-hosts"),
]

from django.urls import path

from replay import api, playground_api

urlpatterns = [
    path("api/v1/runs/<int:run_id>/events", api.RunEventsView.as_view(), name="run-events"),
    path(
        "api/v1/runs/<int:run_id>/reconcile", api.RunReconcileView.as_view(), name="run-reconcile"
    ),
    path("api/v1/runs/<int:run_id>/replay", api.RunReplayView.as_view(), name="run-replay"),
    path("api/v1/runs/<int:run_id>/fork", api.RunForkView.as_view(), name="run-fork"),
    path("api/v1/runs/<int:run_id>/lineage", api.RunLineageView.as_view(), name="run-lineage"),
    path("api/v1/playground", playground_api.PlaygroundRunView.as_view(), name="playground-run"),
    path(
        "api/v1/playground/<str:span_id>",
        playground_api.PlaygroundSourceView.as_view(),
        name="playground-source",
    ),
]

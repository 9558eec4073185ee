from django.contrib.auth import views as auth_views
from django.urls import include, path

from frontend import playground, views

tenant = "t/<slug:tenant_slug>"

urlpatterns = [
    path("", views.home, name="home"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(next_page="login"), name="logout"),
    path(f"{tenant}/traces/", views.trace_list, name="trace-list"),
    path(f"{tenant}/traces/counts", views.trace_counts, name="trace-counts"),
    path(f"{tenant}/traces/<str:trace_id>/", views.trace_detail, name="trace-detail"),
    path(f"{tenant}/traces/<str:trace_id>/mark", views.trace_mark, name="trace-mark"),
    path(f"{tenant}/traces/<str:trace_id>/download", views.trace_download, name="trace-download"),
    path(
        f"{tenant}/traces/<str:trace_id>/spans/<str:span_id>",
        views.span_detail,
        name="span-detail",
    ),
    path(
        f"{tenant}/traces/<str:trace_id>/spans/<str:span_id>/playground",
        playground.playground_page,
        name="playground",
    ),
    path(f"{tenant}/sessions/", views.session_list, name="session-list"),
    path(f"{tenant}/sessions/<path:session_id>/", views.session_detail, name="session-detail"),
    path(f"{tenant}/users/", views.user_list, name="user-list"),
    path(f"{tenant}/setup/", views.setup, name="setup"),
    path(f"{tenant}/setup/key", views.setup_key, name="setup-key"),
    path(f"{tenant}/", include("frontend.console.urls")),
]

from django.urls import path

from billing import api

urlpatterns = [
    path("api/v1/prices", api.PricesView.as_view(), name="prices"),
    path("api/v1/budgets", api.BudgetListView.as_view(), name="budgets"),
    path("api/v1/budgets/check", api.BudgetCheckView.as_view(), name="budget-check"),
    path("api/v1/budgets/settings", api.BudgetSettingsView.as_view(), name="budget-settings"),
    path("api/v1/budgets/<int:budget_id>", api.BudgetDetailView.as_view(), name="budget"),
    path("api/v1/runs/<int:run_id>/cost", api.RunCostView.as_view(), name="run-cost"),
    path("api/v1/usage", api.UsageView.as_view(), name="usage"),
    path("api/v1/statements/<str:month>", api.StatementView.as_view(), name="statement"),
]

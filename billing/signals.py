"""What billing announces. Alerts subscribe; billing knows nothing of them.

`budget_threshold_crossed` is sent once per budget, period and threshold, after the
transaction that recorded the spend commits, with tenant_id, budget_id, scope, agent,
run_id, period, window (the period's key, e.g. "2026-12"), threshold (a fraction of
the cap, e.g. 0.8), cap_usd and spent_usd (decimal strings).
"""

from django.dispatch import Signal

budget_threshold_crossed = Signal()

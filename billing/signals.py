"""What billing announces. Alerts subscribe; billing knows nothing of them.

`budget_threshold_crossed` is sent once per budget, period and threshold, after the
transaction that recorded the spend commits, with tenant_id, budget_id, scope, agent,
run_id, period, window (the period's key, e.g. "2026-12"), threshold (a fraction of
the cap, e.g. 0.8), cap_reached, refused, cap_usd and spent_usd (decimal strings).

Reaching the cap is always announced, whatever thresholds the budget lists: once per
budget and period, as threshold 1.0 with cap_reached true, either when spend reaches
the cap or when the cap first refuses a call (refused true; spent_usd may then be
below the cap, the rest held for calls in flight or the refused call's worst case).
"""

from django.dispatch import Signal

budget_threshold_crossed = Signal()

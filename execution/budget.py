"""The seam between managed execution and whoever keeps budgets (billing).

EXECUTION_BUDGET_HOOK names a class; the gateway makes one per run and calls
`reserve(run_id=, kind=, request=)` before each LLM call, tool call and the sandbox's
CPU time, and `settle(reservation=, usage=)` after; `run_create` calls `admit(run=)`.
Any of them raises BudgetRefused to refuse: the run stops with reason `budget`.
A call made outside any run (the playground's) reserves with `run_id=None` and names
its `tenant_id=` and `agent=` instead.
A hook may also offer `settle_journaled(settlements=[(reservation, usage)], write=)`:
the gateway then hands it an LLM call's settlements with the function that writes the
call's journal step, so both can share one commit; without it the step is written
and then each call settled.
`flush()` is called about once a second while the run goes on and once when it ends,
before its outcome is written: a hook may hold its bookkeeping back until then.
`reconcile(run_id=)` is called when a run's lost worker is followed by another (its
second attempt and later, and when the run is given up after too many): what the lost
worker held is settled or given back.
"""

from django.conf import settings
from django.utils.module_loading import import_string


class BudgetRefused(Exception):
    """A budget refuses the call or the run; the message names the budget."""


def budget_hook():
    """A new hook object, or None when no hook is configured."""
    path = settings.EXECUTION_BUDGET_HOOK
    return import_string(path)() if path else None

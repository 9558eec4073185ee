from datetime import timedelta

import pytest
from django.utils import timezone

from alerts.models import ErrorWindow, TraceWatch
from alerts.tasks import prune_state

pytestmark = pytest.mark.django_db


def test_it_prunes_idle_trace_watches_and_old_error_windows_of_every_tenant(acme, globex, settings):
    settings.ALERTS_WATCH_IDLE_HOURS = 24
    settings.ALERTS_ERROR_KEEP_MINUTES = 120
    now = timezone.now()
    minute = int(now.timestamp()) // 60
    for tenant in (acme, globex):
        TraceWatch.all_tenants.create(
            tenant=tenant, trace_id=f"{tenant.pk:032x}", state={"k": {}},
            updated_at=now - timedelta(hours=25),
        )  # fmt: skip
        TraceWatch.all_tenants.create(
            tenant=tenant, trace_id=f"{tenant.pk + 100:032x}", updated_at=now - timedelta(hours=1)
        )
        for age in (0, 119, 121, 60 * 24):
            ErrorWindow.all_tenants.create(
                tenant=tenant, subject="agent:support", minute=minute - age, calls=1
            )
    prune_state.apply()  # in this process, as beat would queue it
    for tenant in (acme, globex):
        watches = TraceWatch.all_tenants.filter(tenant=tenant)
        assert list(watches.values_list("trace_id", flat=True)) == [f"{tenant.pk + 100:032x}"]
        kept = ErrorWindow.all_tenants.filter(tenant=tenant).values_list("minute", flat=True)
        assert sorted(minute - m for m in kept) == [0, 119]
    prune_state.apply()  # a second run finds nothing more to delete
    assert TraceWatch.all_tenants.count() == 2 and ErrorWindow.all_tenants.count() == 4

"""The stuck-run detector: a beat job, because a stuck run sends no spans."""

from datetime import timedelta

from django.db.models import Max
from django.utils import timezone

from alerts import services
from alerts.detectors import Finding
from alerts.models import AlertRule, Detector
from controlplane.tenancy import tenant_scope


def runs_stuck_detect() -> int:
    from execution.models import Run, RunStatus
    from replay.models import JournalStep

    raised = 0
    tenants = set(
        AlertRule.all_tenants.filter(detector=Detector.STUCK_RUN).values_list(
            "tenant_id", flat=True
        )
    )
    now = timezone.now()
    for tenant_id in sorted(tenants):
        with tenant_scope(tenant_id):
            rules = list(
                AlertRule.objects.filter(detector=Detector.STUCK_RUN).prefetch_related("endpoints")
            )
            shortest = min(services.rule_threshold(r) for r in rules)
            runs = list(
                Run.objects.filter(
                    status=RunStatus.RUNNING, started_at__lt=now - timedelta(seconds=shortest)
                ).select_related("agent")
            )
            last_steps = dict(
                JournalStep.objects.filter(run__in=runs)
                .values_list("run_id")
                .annotate(last=Max("created_at"))
                .values_list("run_id", "last")
            )
            for run in runs:
                last = last_steps.get(run.pk) or run.started_at
                idle = (now - last).total_seconds()
                finding = Finding(
                    cause=f"stuck_run:{run.pk}",
                    span_id="",
                    summary=f"run {run.pk} of {run.agent.name} has made no step for {idle:.0f} s",
                    detail={"run_id": run.pk, "idle_seconds": round(idle)},
                    count=idle,
                )
                raised += services.findings_raise(
                    rules=rules, detector=Detector.STUCK_RUN, finding=finding,
                    agent=run.agent.name, trace_id=run.trace_id, run_id=str(run.pk),
                )  # fmt: skip
    return raised

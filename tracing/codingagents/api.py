"""GET /api/v1/metrics: a tenant's stored metric series (coding agents' counters and
gauges) in hour or day buckets. Parse, call the selector, render."""

from collections import Counter
from datetime import UTC, date, datetime, timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from controlplane.api_base import TenantAPIView
from controlplane.models import Scope
from tracing.codingagents import selectors
from tracing.ingest.policy import tenant_redaction

FIELDS = ("user", *selectors.METRIC_FIELDS)
KNOWN = {"name", "since", "until", "interval", "group_by"}
MAX_VALUE = 255


def _moment(params, key: str, default: datetime) -> datetime:
    raw = params.get(key)
    if not raw:
        return default
    try:
        if len(raw) == 10:
            return datetime.combine(date.fromisoformat(raw), datetime.min.time(), tzinfo=UTC)
        moment = datetime.fromisoformat(raw)
        # In UTC here: an offset at the calendar's ends would overflow it later.
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise ValidationError(
            {key: ["must be an ISO 8601 time (2026-12-01T10:00:00Z) or day (2026-12-01)"]}
        ) from None


def _field(name: str, where: str) -> str:
    if name in FIELDS:
        return name
    key = name.removeprefix(selectors.ATTRIBUTE_PREFIX)
    if name.startswith(selectors.ATTRIBUTE_PREFIX) and key and len(key) <= MAX_VALUE:
        return name
    raise ValidationError({where: [f"must be one of {', '.join(FIELDS)} or attr.<attribute>"]})


class MetricsView(TenantAPIView):
    required_scope = Scope.READ

    @extend_schema(
        operation_id="metrics_series",
        summary="A stored metric's series in hour or day buckets (coding agents' metrics)",
        description="Counters and histograms (their sum) add up what each bucket's points "
        "added (a cumulative series' rises); gauges average their points. Filter by "
        f"{', '.join(FIELDS)} or any point attribute as attr.<key> (a parameter given "
        "twice matches either value); `user` is the user's e-mail when the agent sent one, "
        "else user.id. A value is matched as sent and as the span path redacts it. "
        "A bad parameter answers 400 naming it.",
        parameters=[
            OpenApiParameter("name", str, required=True, description="claude_code.cost.usage"),
            OpenApiParameter("since", str, description="ISO 8601 time or day (a day ago)"),
            OpenApiParameter("until", str, description="ISO 8601 time or day, exclusive (now)"),
            OpenApiParameter("interval", str, enum=list(selectors.INTERVALS)),
            OpenApiParameter("group_by", str, description=f"{', '.join(FIELDS)} or attr.<key>"),
            *(
                OpenApiParameter(f, str, description=f"only series whose {f} is this")
                for f in FIELDS
            ),
        ],
    )
    def get(self, request):
        params = request.query_params
        filters: dict[str, set[str]] = {}
        for key in params:
            if key in KNOWN:
                continue
            field = _field(key, key)
            values = params.getlist(key)
            if any(len(v) > MAX_VALUE or "\x00" in v for v in values):
                raise ValidationError(
                    {key: [f"must be at most {MAX_VALUE} characters, without NUL"]}
                )
            filters[field] = self._as_stored(values)
        name = params.get("name", "")
        if not name or len(name) > MAX_VALUE or "\x00" in name:
            raise ValidationError(
                {"name": ["is required: a metric's name, e.g. claude_code.cost.usage"]}
            )
        interval = params.get("interval", "hour")
        if interval not in selectors.INTERVALS:
            raise ValidationError({"interval": ["must be hour or day"]})
        group_by = params.get("group_by") or None
        if group_by is not None:
            group_by = _field(group_by, "group_by")
        until = _moment(params, "until", timezone.now())
        since = _moment(params, "since", until - timedelta(days=1))
        if since >= until:
            raise ValidationError({"since": ["must be before until"]})
        if selectors.bucket_count(since, until, interval) > selectors.MAX_BUCKETS:
            raise ValidationError(
                {
                    "interval": [
                        f"gives more than {selectors.MAX_BUCKETS} buckets: widen it or narrow since/until"
                    ]
                }
            )
        try:
            body = selectors.metric_series(
                name=name, start=since, end=until, interval=interval, group_by=group_by,
                filters=filters,
            )  # fmt: skip
        except selectors.TooMany as exc:
            raise ValidationError({"since": [str(exc)]}) from None
        return Response(
            {
                "name": name,
                "since": since.isoformat(),
                "until": until.isoformat(),
                "interval": interval,
                "group_by": group_by,
                **body,
            }
        )

    def _as_stored(self, values: list[str]) -> set[str]:
        """Each value as sent and as the tenant's redactor stores it (an e-mail is kept
        as its placeholder unless the tenant keeps e-mails)."""
        redactor = tenant_redaction(self.request.tenant.pk).redactor
        return {v for value in values for v in (value, redactor.redact_short(value, Counter()))}

"""Metric data points, per tenant: on PostgreSQL a table partitioned by day (see
migration 0019 and metrics.py), on SQLite a plain table."""

from django.db import models

from controlplane.tenancy import TenantModel


class MetricKind(models.IntegerChoices):
    SUM = 1
    GAUGE = 2
    HISTOGRAM = 3


class MetricPoint(TenantModel):
    """One data point as exported. A point is identified by its series (a digest of the
    metric, its resource and its attributes) and its time, so a resent batch is stored
    once. The attributes the coding-agents page groups by have columns; the others stay
    in `attributes`."""

    # On PostgreSQL the primary key is (tenant, series, time): a partitioned table's
    # keys must hold its partition key. `id` is a plain sequence there.
    id = models.BigAutoField(primary_key=True)
    tenant = models.ForeignKey("controlplane.Tenant", on_delete=models.CASCADE, db_index=False)
    time = models.DateTimeField()
    series = models.BinaryField(max_length=16)
    name = models.CharField(max_length=255)
    kind = models.SmallIntegerField(choices=MetricKind.choices)
    # Cumulative points repeat the running total; delta points add up.
    cumulative = models.BooleanField(default=False)
    start_ns = models.BigIntegerField(default=0)
    value = models.FloatField()  # a histogram's sum
    count = models.BigIntegerField(null=True)  # a histogram's count
    unit = models.CharField(max_length=32, blank=True)
    service_name = models.CharField(max_length=255, blank=True)
    service_version = models.CharField(max_length=64, blank=True)
    user_id = models.CharField(max_length=255, blank=True)
    user_email = models.CharField(max_length=255, blank=True)
    organization_id = models.CharField(max_length=255, blank=True)
    terminal_type = models.CharField(max_length=64, blank=True)
    session_id = models.CharField(max_length=255, blank=True)
    model = models.CharField(max_length=255, blank=True)
    attributes = models.JSONField(default=dict, blank=True)
    buckets = models.JSONField(null=True, blank=True)  # a histogram's bounds and counts

    class Meta(TenantModel.Meta):
        app_label = "tracing"
        db_table = "tracing_metricpoint"
        constraints = [
            models.UniqueConstraint(fields=["tenant", "series", "time"], name="metric_point_unique")
        ]
        indexes = [models.Index(fields=["tenant", "name", "time"], name="metric_point_name")]

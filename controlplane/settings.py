"""Flightdeck settings: one file, read from the environment.

With no environment at all the platform runs on its embedded default: SQLite, a blob
folder and a file-based Celery broker under var/. DATABASE_URL, CELERY_BROKER_URL,
REDIS_URL and BLOB_STORE_URL each switch one part to its real service.
"""

import secrets
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

from controlplane import security as _security
from controlplane.envconf import (
    blob_store_from_url,
    broker_url_checked,
    database_from_url,
    env_bool,
    env_cidrs,
    env_int,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FLIGHTDECK_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DEBUG", False)


def _secret_key() -> str:
    key = env_str("SECRET_KEY")
    if key:
        return key
    if not DEBUG and env_str("DATABASE_URL"):
        # A deployment with its own database has several machines: they must share one key.
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off and DATABASE_URL is set"
        )
    # Development or the embedded default (one machine, SQLite in var/): generate once
    # and keep it there, so sessions survive restarts and manage.py needs no variables.
    path = VAR_DIR / "secret_key"
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(50))
        path.chmod(0o600)
    return path.read_text().strip()


SECRET_KEY = _secret_key()
ALLOWED_HOSTS = [
    h.strip() for h in env_str("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")
]
CSRF_TRUSTED_ORIGINS = [
    o.strip() for o in (env_str("CSRF_TRUSTED_ORIGINS", "") or "").split(",") if o.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "controlplane",
    "execution",
    "replay",
    "tracing",
    "billing",
    "alerts",
    "frontend",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "controlplane.security.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"
ASGI_APPLICATION = "controlplane.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": database_from_url(
        env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'flightdeck.sqlite3'}")
    )
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
]
CSRF_FAILURE_VIEW = "controlplane.views.csrf_failure"  # JSON under /api/ and /v1/
LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# The embedded default serves static files straight from the apps, no collectstatic.
WHITENOISE_USE_FINDERS = True

# --- Services -------------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL")
# Every Redis key the platform writes starts with this (lets deployments share a Redis).
REDIS_PREFIX = env_str("FLIGHTDECK_REDIS_PREFIX", "fd:")
# Failed sign-ins and unknown API keys (controlplane/throttle.py): each client address and
# each account (username, key prefix) gets this many, then one more per refill period.
AUTH_FAILURES_PER_ADDRESS = env_int("AUTH_FAILURES_PER_ADDRESS", 20, minimum=1)
AUTH_FAILURES_PER_ACCOUNT = env_int("AUTH_FAILURES_PER_ACCOUNT", 5, minimum=1)
AUTH_FAILURE_REFILL_SECONDS = env_int("AUTH_FAILURE_REFILL_SECONDS", 60, minimum=1)
BLOB_STORE = blob_store_from_url(env_str("BLOB_STORE_URL", f"file://{VAR_DIR / 'blobs'}"))

CELERY_BROKER_URL = broker_url_checked(env_str("CELERY_BROKER_URL", "filesystem://"))
_CELERY_QUEUE_DIR = VAR_DIR / "celery"
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's filesystem transport: no server, works across processes. Its latency is
    # the polling interval. Ours writes each message whole (controlplane/fsqueue.py).
    CELERY_BROKER_TRANSPORT = "controlplane.fsqueue:Transport"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_CELERY_QUEUE_DIR / "queue"),
        "data_folder_out": str(_CELERY_QUEUE_DIR / "queue"),
        "processed_folder": str(_CELERY_QUEUE_DIR / "processed"),
        # Broadcast and reply exchanges; kombu's default is ./control in the cwd.
        "control_folder": str(_CELERY_QUEUE_DIR / "control"),
        "store_processed": False,
        # A batch's spans are searchable once the worker picks its task up: 20 ms at
        # most, at about 1% of a core while idle (a directory listing each poll).
        "polling_interval": 0.02,
    }
    # kombu does not create these; the first task published would fail without them.
    for _folder in ("queue", "processed", "control"):
        (_CELERY_QUEUE_DIR / _folder).mkdir(parents=True, exist_ok=True)
else:
    # Above the longest task time limit, so Redis does not hand a running task to a
    # second worker. Run ownership lives in the database anyway.
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 3600}
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Celery's prefork pool, noticing a SIGKILLed pool process within half a second
# instead of five (controlplane/pool.py), so its run is handed back at once.
CELERY_WORKER_POOL = "controlplane.pool:TaskPool"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
CELERY_BEAT_SCHEDULE: dict = {}

# --- API ------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.auth.ApiKeyAuthentication",
        "controlplane.auth.TenantSessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.auth.HasTenantScope"],
    "DEFAULT_PARSER_CLASSES": [
        "controlplane.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.errors.api_exception_handler",
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Flightdeck API",
    "DESCRIPTION": "Run, watch, bound and replay AI agents.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "controlplane.schema.add_errors_and_otlp",
    ],
    "APPEND_COMPONENTS": {
        "securitySchemes": {"ApiKey": {"type": "http", "scheme": "bearer"}},
    },
    "SECURITY": [{"ApiKey": []}],
}

API_KEY_TOUCH_SECONDS = env_int("API_KEY_TOUCH_SECONDS", 60, minimum=0)
# How long a web process trusts a key it read (controlplane/services.py): a key revoked,
# or its tenant deactivated, in another process is refused within this many seconds
# (at once in the revoking process). 0 reads the key on every request.
API_KEY_CACHE_SECONDS = env_int("API_KEY_CACHE_SECONDS", 5, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    "loggers": {"django.db.backends": {"level": "WARNING"}},
}

if not DEBUG:
    SESSION_COOKIE_HTTPONLY = True
    CSRF_COOKIE_HTTPONLY = False  # htmx reads the token from the cookie
    SECURE_CONTENT_TYPE_NOSNIFF = True

# controlplane/security.py sets the policy and marks cookies Secure on HTTPS requests.
CONTENT_SECURITY_POLICY = env_str("CONTENT_SECURITY_POLICY", _security.CONTENT_SECURITY_POLICY)
# Sent by SecurityMiddleware on HTTPS responses only, so plain-HTTP `make run` is unaffected.
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
# A deployment served only over HTTPS (platform/) turns these on; the embedded default
# serves plain HTTP on loopback and cannot, so they are off unless set (security.py
# still marks every cookie Secure on an HTTPS request).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
# Probes and the in-cluster OTLP path speak plain HTTP to the pod.
SECURE_REDIRECT_EXEMPT = [r"^api/v1/health$", r"^v1/"]
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", False)
# Behind a TLS-terminating proxy: "HTTP_X_FORWARDED_PROTO,https" (header, value). Only
# set it when the proxy always overwrites that header, or clients could claim HTTPS.
_proxy_ssl = env_str("SECURE_PROXY_SSL_HEADER", "")
if _proxy_ssl:
    _header, _, _value = _proxy_ssl.partition(",")
    if not _header.startswith("HTTP_") or not _value:
        raise ImproperlyConfigured(
            f"SECURE_PROXY_SSL_HEADER={_proxy_ssl!r} must be 'HTTP_<HEADER>,<value>'"
        )
    SECURE_PROXY_SSL_HEADER = (_header.strip(), _value.strip())

# --- Tracing --------------------------------------------------------------------------

# OTLP bodies (after gzip inflation) above this are refused with 413.
INGEST_MAX_BODY_BYTES = env_int("INGEST_MAX_BODY_BYTES", 16 * 1024 * 1024, minimum=1024)
# Default per-tenant ingest rate in spans a second (a tenant's own setting overrides);
# bursts of twice that pass.
INGEST_SPANS_PER_SECOND = env_int("INGEST_SPANS_PER_SECOND", 50_000, minimum=0)
OTLP_GRPC_ADDRESS = env_str("OTLP_GRPC_ADDRESS", "127.0.0.1:4317")
# The Celery queue `tracing.index_spans` goes to (Celery's default queue unless set).
SEARCH_INDEX_QUEUE = env_str("SEARCH_INDEX_QUEUE", "celery")

# --- Execution ------------------------------------------------------------------------

# auto: gVisor's runsc when installed, else bubblewrap. "unsandboxed" (rlimits only, no
# isolation) is for development machines without either, and refused with DEBUG off.
EXECUTION_SANDBOX = env_str("EXECUTION_SANDBOX", "auto")
if EXECUTION_SANDBOX == "unsandboxed" and not DEBUG:
    raise ImproperlyConfigured("EXECUTION_SANDBOX=unsandboxed is refused with DEBUG off")
if EXECUTION_SANDBOX not in ("auto", "bwrap", "runsc", "unsandboxed"):
    raise ImproperlyConfigured(
        f"EXECUTION_SANDBOX={EXECUTION_SANDBOX!r} is not one of auto, bwrap, runsc, unsandboxed"
    )
# Run folders live outside VAR_DIR: sandbox uids must be able to pass through the path.
# gVisor's own memory, on top of an agent's memory_mb, in the sandbox's memory cgroup.
EXECUTION_RUNSC_OVERHEAD_MB = env_int("EXECUTION_RUNSC_OVERHEAD_MB", 128, minimum=0)
EXECUTION_WORK_DIR = env_str("EXECUTION_WORK_DIR", "/tmp/flightdeck-runs")  # noqa: S108 - 0o711, random names
EXECUTION_SANDBOX_UID_BASE = env_int("EXECUTION_SANDBOX_UID_BASE", 200000, minimum=1000)
EXECUTION_SANDBOX_UID_COUNT = env_int("EXECUTION_SANDBOX_UID_COUNT", 1000, minimum=1)
EXECUTION_QUEUE = env_str("EXECUTION_QUEUE", "celery")
EXECUTION_TOOL_QUEUE = env_str("EXECUTION_TOOL_QUEUE", "execution-tools")
# 0: slow tools go to EXECUTION_TOOL_QUEUE for a tools worker. N: the run's worker
# process runs them itself on N threads of their own (the embedded default's Procfile).
EXECUTION_TOOL_THREADS = env_int("EXECUTION_TOOL_THREADS", 0, minimum=0)
# Renewed each second, so a dead worker's run is free again within this many seconds.
EXECUTION_LEASE_SECONDS = env_int("EXECUTION_LEASE_SECONDS", 5, minimum=3)
EXECUTION_MAX_ATTEMPTS = env_int("EXECUTION_MAX_ATTEMPTS", 3, minimum=1)
EXECUTION_REQUEUE_QUEUED_AFTER_SECONDS = env_int("EXECUTION_REQUEUE_QUEUED_AFTER_SECONDS", 120)
EXECUTION_BUNDLE_MAX_BYTES = env_int("EXECUTION_BUNDLE_MAX_BYTES", 5 * 1024 * 1024, minimum=1024)
EXECUTION_BUNDLE_MAX_UNPACKED_BYTES = env_int(
    "EXECUTION_BUNDLE_MAX_UNPACKED_BYTES", 50 * 1024 * 1024, minimum=1024
)
EXECUTION_BUNDLE_MAX_FILES = env_int("EXECUTION_BUNDLE_MAX_FILES", 2000, minimum=1)
EXECUTION_DEFAULT_LIMITS = {
    "wall_seconds": 120,
    "cpu_seconds": 60,
    "memory_mb": 256,
    "max_processes": 32,
    "max_file_mb": 16,
    "max_steps": 200,
    "max_tool_calls": 100,
    "max_parallel_tools": 4,
    "budget_tokens": 200_000,
    "loop_repeats": 5,
}
EXECUTION_MAX_LIMITS = {
    "wall_seconds": 3600,
    "cpu_seconds": 1800,
    "memory_mb": 4096,
    "max_processes": 256,
    "max_file_mb": 1024,
    "max_steps": 10_000,
    "max_tool_calls": 5_000,
    "max_parallel_tools": 32,
    "budget_tokens": 10_000_000,
    "budget_usd": 100_000,  # a run's own spend cap (billing holds it)
    "loop_repeats": 100,
}
EXECUTION_PYTHON_TOOL_LIMITS = {
    "cpu_seconds": 10,
    "memory_mb": 256,
    "max_processes": 16,
    "max_file_mb": 16,
}
EXECUTION_DEFAULT_MODEL = env_str("EXECUTION_DEFAULT_MODEL", "claude-sonnet-5")
# The LLM upstream. With ANTHROPIC_API_KEY set, the real API; otherwise the local
# Messages API server (`manage.py messages_api_server`, started by `make run`).
EXECUTION_LLM_API_KEY = env_str("ANTHROPIC_API_KEY") or "local-messages-api"
EXECUTION_LLM_BASE_URL = env_str("ANTHROPIC_BASE_URL") or (
    None
    if env_str("ANTHROPIC_API_KEY")
    else env_str("EXECUTION_LOCAL_LLM_URL", "http://127.0.0.1:8765")
)
EXECUTION_LLM_TIMEOUT = env_int("EXECUTION_LLM_TIMEOUT", 120, minimum=1)
EXECUTION_RETRY_ATTEMPTS = env_int("EXECUTION_RETRY_ATTEMPTS", 4, minimum=1)
EXECUTION_RETRY_BASE_MS = env_int("EXECUTION_RETRY_BASE_MS", 250, minimum=0)
EXECUTION_RETRY_CAP_MS = env_int("EXECUTION_RETRY_CAP_MS", 10_000, minimum=0)
# How long a call waits for a rate limit token before the agent gets a rate_limited error.
EXECUTION_RATE_LIMIT_MAX_WAIT_MS = env_int("EXECUTION_RATE_LIMIT_MAX_WAIT_MS", 10_000, minimum=0)
EXECUTION_TOOL_MAX_RESPONSE_BYTES = 256 * 1024
# Tools never reach loopback, private, link-local, CGNAT, multicast or metadata addresses
# unless their networks are listed here ("10.20.0.0/16, fd00:1::/64"); the platform's own
# listeners on this host never (execution/tools/egress.py).
EGRESS_ALLOW_PRIVATE_NETWORKS = env_cidrs("EGRESS_ALLOW_PRIVATE_NETWORKS")
# The web server's port, as the Procfile binds gunicorn: one of the platform's listeners.
WEB_PORT = env_int("FLIGHTDECK_PORT", 8000, minimum=1)
# Fernet keys for the credential vault, comma-separated, newest first (rotation). Unset:
# derived from SECRET_KEY.
EXECUTION_VAULT_KEYS = env_str("EXECUTION_VAULT_KEYS", "")
# Billing's reserve/settle seam: a dotted path to a class with admit(), reserve() and
# settle() (execution/budget.py); set it empty to run without budgets.
EXECUTION_BUDGET_HOOK = env_str("EXECUTION_BUDGET_HOOK", "billing.hook.BudgetHook")
# The playground (replay/playground.py): LLM calls a minute per tenant (a token bucket,
# burst a tenth of it), and the largest request it sends, in bytes of JSON.
PLAYGROUND_LLM_PER_MINUTE = env_int("PLAYGROUND_LLM_PER_MINUTE", 60, minimum=1)
PLAYGROUND_MAX_REQUEST_BYTES = env_int("PLAYGROUND_MAX_REQUEST_BYTES", 1_000_000, minimum=1024)
# Where budget windows keep their spend: "database" (a conditional UPDATE, the default)
# or "redis" (a Lua script; needs REDIS_URL).
BILLING_BUDGET_STORE = env_str("BILLING_BUDGET_STORE", "database")
if BILLING_BUDGET_STORE not in ("database", "redis") or (
    BILLING_BUDGET_STORE == "redis" and not REDIS_URL
):
    raise ImproperlyConfigured(
        "BILLING_BUDGET_STORE must be 'database' or 'redis' (with REDIS_URL set)"
    )
# Cost every stored span (a task queued after ingest commits, like search indexing).
BILLING_COST_ON_INGEST = env_bool("BILLING_COST_ON_INGEST", True)
BILLING_QUEUE = env_str("BILLING_QUEUE") or None  # None: Celery's default queue
CELERY_BEAT_SCHEDULE["tracing.refresh_dictionaries_due"] = {
    "task": "tracing.refresh_dictionaries_due",
    "schedule": 6 * 3600.0,  # a tenant is refreshed once its dictionaries are a week old
}
# Alerts (alerts/README.md): detection on ingest, delivery retries, the stuck-run beat.
ALERTS_QUEUE = env_str("ALERTS_QUEUE") or None  # None: Celery's default queue
ALERTS_DETECT_ON_INGEST = env_bool("ALERTS_DETECT_ON_INGEST", True)
ALERTS_RETRY_BUDGET = env_int("ALERTS_RETRY_BUDGET", 3, minimum=0)
ALERTS_ERROR_WINDOW_MINUTES = env_int("ALERTS_ERROR_WINDOW_MINUTES", 5, minimum=1)
ALERTS_ERROR_MIN_CALLS = env_int("ALERTS_ERROR_MIN_CALLS", 10, minimum=1)
ALERTS_COST_SAMPLE = env_int("ALERTS_COST_SAMPLE", 20, minimum=1)
ALERTS_COST_MIN_SAMPLES = env_int("ALERTS_COST_MIN_SAMPLES", 5, minimum=1)
ALERTS_WEBHOOK_TIMEOUT = env_int("ALERTS_WEBHOOK_TIMEOUT", 10, minimum=1)
# Detection state past its use is pruned hourly: trace watches idle this long, error
# windows older than this (at least the window itself).
ALERTS_WATCH_IDLE_HOURS = env_int("ALERTS_WATCH_IDLE_HOURS", 24, minimum=1)
ALERTS_ERROR_KEEP_MINUTES = max(
    env_int("ALERTS_ERROR_KEEP_MINUTES", 120, minimum=1), ALERTS_ERROR_WINDOW_MINUTES
)
CELERY_BEAT_SCHEDULE["alerts.stuck_runs"] = {"task": "alerts.stuck_runs", "schedule": 30.0}
CELERY_BEAT_SCHEDULE["alerts.prune_state"] = {"task": "alerts.prune_state", "schedule": 3600.0}
CELERY_BEAT_SCHEDULE["execution.requeue_lost_runs"] = {
    "task": "execution.requeue_lost_runs",
    # Each run is re-enqueued at most once a lease period (recorded on the run), so
    # looking this often costs one indexed query and never multiplies messages.
    "schedule": float(EXECUTION_LEASE_SECONDS),
}
# Retention (tracing/retention/README.md): each plan's days per tier; a tenant's policy
# (GET/PUT /api/v1/retention) overrides them. A trace is hot for hot_days, warm until
# hot_days + warm_days, cold until the three summed, then deleted; an alerted or
# user-marked trace is kept at least extended_days.
RETENTION_PLANS = {
    "standard": {"hot_days": 7, "warm_days": 23, "cold_days": 60, "extended_days": 365},
    "free": {"hot_days": 3, "warm_days": 4, "cold_days": 0, "extended_days": 30},
    "enterprise": {"hot_days": 30, "warm_days": 60, "cold_days": 640, "extended_days": 2555},
}
RETENTION_DEFAULT_PLAN = env_str("RETENTION_DEFAULT_PLAN", "standard")
if RETENTION_DEFAULT_PLAN not in RETENTION_PLANS:
    raise ImproperlyConfigured(f"RETENTION_DEFAULT_PLAN must be one of {sorted(RETENTION_PLANS)}")
# Traces moved per transaction; a run goes on batch after batch until nothing is due.
RETENTION_BATCH = env_int("RETENTION_BATCH", 50, minimum=1)
# The S3 storage class of cold bundles: GLACIER_IR (read in milliseconds) or STANDARD_IA.
RETENTION_COLD_STORAGE_CLASS = env_str("RETENTION_COLD_STORAGE_CLASS", "GLACIER_IR")
if RETENTION_COLD_STORAGE_CLASS not in ("GLACIER_IR", "STANDARD_IA"):
    raise ImproperlyConfigured("RETENTION_COLD_STORAGE_CLASS must be GLACIER_IR or STANDARD_IA")
CELERY_BEAT_SCHEDULE["tracing.apply_retention"] = {
    "task": "tracing.apply_retention",
    "schedule": 3600.0,  # each run does what is due; most hours nothing is
}
# Coding agents' metric points (tracing/codingagents/README.md) are kept this many days,
# whatever the tenant's trace retention (older points are refused on arrival); hourly,
# beat makes the next days' PostgreSQL partitions and drops the older ones.
METRICS_RETENTION_DAYS = env_int("METRICS_RETENTION_DAYS", 400, minimum=1)
CELERY_BEAT_SCHEDULE["tracing.metric_partitions"] = {
    "task": "tracing.metric_partitions",
    "schedule": 3600.0,
}

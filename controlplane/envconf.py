"""Typed readers for settings that come from the environment.

Each reader raises ImproperlyConfigured naming the variable, so a bad value stops the
process at start-up with one clear line instead of failing later inside a request.
"""

import ipaddress
import os
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = os.environ.get(name)
    if value is None or value == "":
        if required:
            raise ImproperlyConfigured(f"{name} must be set")
        return default
    return value


def env_bool(name: str, default: bool = False) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    lowered = raw.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no)")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_cidrs(name: str) -> list[str]:
    """Comma-separated networks in CIDR notation ("10.0.0.0/8, fd00::/8"), normalised;
    host bits set (10.0.0.1/8) is a mistake, not a network."""
    networks = []
    for part in (os.environ.get(name) or "").split(","):
        if not part.strip():
            continue
        try:
            networks.append(str(ipaddress.ip_network(part.strip())))
        except ValueError as exc:
            raise ImproperlyConfigured(f"{name}: {part.strip()!r} is not a CIDR ({exc})") from None
    return networks


def database_from_url(url: str) -> dict:
    """DATABASE_URL to a Django DATABASES entry: postgres:// (psycopg 3, pooled) or sqlite://."""
    import dj_database_url

    scheme = urlsplit(url).scheme
    if scheme in ("postgres", "postgresql", "pgsql"):
        config = dj_database_url.parse(url, conn_max_age=0)
        if not config.get("NAME"):
            raise ImproperlyConfigured(f"DATABASE_URL={url!r} names no database")
        # psycopg 3's pool replaces persistent connections (they cannot be combined).
        config["OPTIONS"] = {"pool": {"min_size": 1, "max_size": 8, "timeout": 10}}
        return config
    if scheme == "sqlite":
        # Keep connections: opening one runs the PRAGMAs below on every request.
        config = dj_database_url.parse(url, conn_max_age=600)
        config["OPTIONS"] = sqlite_options()
        return config
    raise ImproperlyConfigured(
        f"DATABASE_URL scheme {scheme!r} is not supported (use postgres://... or sqlite:///path)"
    )


def sqlite_options() -> dict:
    # WAL lets the web server, the worker and beat read while one of them writes;
    # IMMEDIATE takes the write lock up front so concurrent writers queue instead of
    # failing half-way with "database is locked".
    return {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }


def blob_store_from_url(url: str) -> dict:
    """BLOB_STORE_URL to blob store options: file:///folder or s3://bucket?endpoint_url=..."""
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    if parts.scheme == "file":
        if not parts.path:
            raise ImproperlyConfigured(f"BLOB_STORE_URL={url!r} names no folder")
        return {"backend": "file", "root": parts.path}
    if parts.scheme == "s3":
        if not parts.netloc:
            raise ImproperlyConfigured(f"BLOB_STORE_URL={url!r} names no bucket")
        unknown = set(query) - {"endpoint_url", "region", "prefix"}
        if unknown:
            raise ImproperlyConfigured(
                f"BLOB_STORE_URL has unknown options {sorted(unknown)} "
                "(known: endpoint_url, region, prefix)"
            )
        return {
            "backend": "s3",
            "bucket": parts.netloc,
            "endpoint_url": query.get("endpoint_url"),
            "region": query.get("region", "us-east-1"),
            "prefix": query.get("prefix", "").strip("/"),
        }
    raise ImproperlyConfigured(
        f"BLOB_STORE_URL scheme {parts.scheme!r} is not supported "
        "(use file:///folder or s3://bucket?endpoint_url=...)"
    )


def broker_url_checked(url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("filesystem", "redis", "rediss", "amqp", "amqps", "pyamqp", "memory"):
        raise ImproperlyConfigured(
            f"CELERY_BROKER_URL scheme {scheme!r} is not supported "
            "(use redis://, amqp:// or filesystem://)"
        )
    return url

"""Trace list filters: one parser for the REST API and the web UI, so a search is the
same URL query in both and a bad value is reported by the name the caller used."""

import base64
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.utils import timezone
from django.utils.dateparse import parse_datetime

MAX_LIMIT = 200
DEFAULT_LIMIT = 50
_RELATIVE = re.compile(r"^(\d+)(m|h|d)$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}

# name -> what it takes; the API documents these and refuses any other name.
TRACE_FILTERS = {
    "q": "full text over messages, tool arguments and results, and error messages",
    "since": "start time from: ISO 8601, or relative like 15m, 24h, 7d",
    "until": "start time before: ISO 8601, or relative like 15m, 24h, 7d",
    "service": "service name (exact)",
    "agent": "agent name (exact)",
    "status": "error or ok (ok: no span failed)",
    "model": "model a span requested or answered with (exact)",
    "min_duration_ms": "minimum duration in milliseconds",
    "session_id": "session or conversation id (exact)",
    "user": "the user the trace acted for: user.id, enduser.id, langfuse.user.id (exact)",
    "attr": "key=value a span or its resource carried; repeat to require several",
}
PAGING = ("cursor", "limit")


class FilterError(ValueError):
    """A filter value that cannot be used; `name` is the parameter's name."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


@dataclass
class TraceFilters:
    q: str = ""
    since: datetime | None = None
    until: datetime | None = None
    service: str = ""
    agent: str = ""
    status: str = ""
    model: str = ""
    min_duration_ms: float | None = None
    session_id: str = ""
    user: str = ""
    attrs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return self == TraceFilters()


def _time(name: str, raw: str, now: datetime) -> datetime:
    relative = _RELATIVE.match(raw)
    if relative:
        amount, unit = relative.groups()
        try:
            return now - timedelta(**{_UNITS[unit]: int(amount)})
        except OverflowError:
            raise FilterError(name, f"{raw!r} reaches back before year 1") from None
    return parse_time(name, raw)


def parse_time(name: str, raw: str) -> datetime:
    """An ISO 8601 time in UTC. In UTC because the database refuses offsets past ±15:59
    and a time near year 1 or 9999 can leave the calendar once moved to UTC."""
    try:
        value = parse_datetime(raw)
        if value is not None:
            value = value.replace(tzinfo=UTC) if timezone.is_naive(value) else value
            value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        value = None
    if value is None:
        raise FilterError(name, f"{raw!r} is not a time (use ISO 8601 or 15m, 24h, 7d)")
    return value


def _text(name: str, value: str) -> str:
    # The database refuses NUL in text; refused here it is the caller's 400, not a 500.
    if "\x00" in value:
        raise FilterError(name, "must not contain NUL characters")
    return value


def _single(params, name: str) -> str:
    values = [v for v in params.getlist(name) if v.strip()]
    if len(values) > 1:
        raise FilterError(name, "give it once")
    return _text(name, values[0].strip()) if values else ""


def parse_whole(raw: str, name: str, *, maximum: int = 2**63 - 1) -> int:
    """A whole number from 0 to `maximum` in ASCII digits (str.isdigit also takes '²')."""
    digits = raw.isascii() and raw.isdigit() and len(raw) <= len(str(maximum))
    if not digits or int(raw) > maximum:
        raise FilterError(name, f"must be a whole number from 0 to {maximum}")
    return int(raw)


def parse_trace_filters(params, *, strict: bool = True, now: datetime | None = None):
    """TraceFilters from a QueryDict (request.GET); raises FilterError naming the bad parameter.

    `strict` refuses unknown names (the API, where a typo should not silently widen a
    search); the UI passes strict=False because forms carry their own fields.
    """
    now = now or timezone.now()
    if strict:
        for name in params:
            if name not in TRACE_FILTERS and name not in PAGING:
                known = ", ".join([*TRACE_FILTERS, *PAGING])
                raise FilterError(name, f"unknown filter (known: {known})")
    f = TraceFilters()
    f.q = _single(params, "q")[:500]
    for name in ("service", "agent", "model", "session_id", "user"):
        value = _single(params, name)
        if len(value) > 255:
            raise FilterError(name, "is longer than 255 characters")
        setattr(f, name, value)
    for name in ("since", "until"):
        raw = _single(params, name)
        if raw:
            setattr(f, name, _time(name, raw, now))
    if f.since and f.until and f.since >= f.until:
        raise FilterError("until", "must be after since")
    status = _single(params, "status").lower()
    if status and status not in ("error", "ok"):
        raise FilterError("status", f"{status!r} is not error or ok")
    f.status = status
    raw = _single(params, "min_duration_ms")
    if raw:
        try:
            f.min_duration_ms = float(raw)
        except ValueError:
            raise FilterError("min_duration_ms", f"{raw!r} is not a number") from None
        if not (0 <= f.min_duration_ms < 1e12):
            raise FilterError("min_duration_ms", "must be zero or more")
    for raw in params.getlist("attr"):
        if not raw.strip():
            continue
        key, sep, value = _text("attr", raw).partition("=")
        if not sep or not key.strip():
            raise FilterError("attr", f"{raw!r} is not key=value")
        f.attrs.append((key.strip()[:255], value.strip()[:255]))
    if len(f.attrs) > 10:
        raise FilterError("attr", "at most 10 key=value pairs")
    return f


def parse_limit(params) -> int:
    raw = _single(params, "limit")
    if not raw:
        return DEFAULT_LIMIT
    try:
        limit = parse_whole(raw, "limit", maximum=MAX_LIMIT)
    except FilterError:
        limit = 0
    if limit < 1:
        raise FilterError("limit", f"must be a whole number from 1 to {MAX_LIMIT}")
    return limit


# --- cursors ---------------------------------------------------------------------------
# Opaque to callers: base64 of the last row's sort key. Keyset pagination stays fast on
# any page and does not skip or repeat rows when new traces arrive meanwhile.


def encode_cursor(*parts) -> str:
    text = "|".join(str(p) for p in parts)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(raw: str, count: int) -> list[str]:
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
    except (ValueError, UnicodeDecodeError):
        raise FilterError("cursor", "is not a cursor this API gave out") from None
    parts = text.split("|", count - 1)
    if len(parts) != count or "\x00" in text:
        raise FilterError("cursor", "is not a cursor this API gave out")
    return parts


def cursor_time(raw: str) -> datetime:
    try:
        return parse_time("cursor", raw)
    except FilterError:
        raise FilterError("cursor", "is not a cursor this API gave out") from None


def cursor_id(raw: str) -> int:
    try:
        return parse_whole(raw, "cursor")
    except FilterError:
        raise FilterError("cursor", "is not a cursor this API gave out") from None


def parse_trace_id(raw: str, name: str = "trace_id") -> uuid.UUID:
    text = raw.strip().replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise FilterError(name, f"{raw!r} is not a trace id (32 hex characters)")
    return uuid.UUID(hex=text)


def parse_span_id(raw: str, name: str = "span_id") -> int:
    text = raw.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{16}", text):
        raise FilterError(name, f"{raw!r} is not a span id (16 hex characters)")
    # Stored as a signed 64-bit integer, as the span path writes it.
    return int.from_bytes(bytes.fromhex(text), "big", signed=True)


def span_hex(span_id: int | None) -> str | None:
    if span_id is None:
        return None
    return (span_id & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "big").hex()

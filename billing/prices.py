"""The price book as the cost path reads it: which price a (provider, model) has on a
day, for a tenant, and what a call costs at that price.

Models are matched by name through their aliases and dated ids: "claude-sonnet-4",
"claude-sonnet-4-20250514", "claude-sonnet-4-0" and Bedrock's
"anthropic.claude-sonnet-4-20250514-v1:0" all find the claude-sonnet-4 entry. The
newest book and each tenant's overrides are cached for a few seconds per process
(`PriceCache`), so costing a batch or reserving a call costs no query most of the time;
a process that writes prices clears its cache at once, others within `TTL`.
"""

import re
import time
from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal

from controlplane.tenantcache import TenantCache

MTOK_TO_NANO = Decimal(1000)  # USD per million tokens x tokens x 1e9 / 1e6
NANO = Decimal("1e-9")
TTL = 10.0  # seconds a process may keep using prices another process replaced

_DATED = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")
_VERSIONED = re.compile(r"-v\d+(:\d+)?$")


@dataclass(frozen=True, slots=True)
class Price:
    provider: str
    model: str  # the entry's canonical name
    input: Decimal  # USD per million tokens
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal
    input_includes_cache: bool
    version: int | None  # the book's version; None for a tenant override
    override: bool = False

    def cost_nusd(
        self, *, input_tokens: int, output_tokens: int, cache_read: int = 0, cache_write: int = 0
    ) -> int:
        """Nano-dollars of one call, rounded once at the end."""
        fresh = input_tokens
        if self.input_includes_cache:
            fresh = max(0, input_tokens - cache_read - cache_write)
        usd_e6 = (
            fresh * self.input
            + output_tokens * self.output
            + cache_read * self.cache_read
            + cache_write * self.cache_write
        )
        return int((usd_e6 * MTOK_TO_NANO).to_integral_value(rounding=ROUND_HALF_UP))


def usd(nusd: int | None) -> str | None:
    """Nano-dollars as the API shows money: a decimal string of USD."""
    if nusd is None:
        return None
    return plain(Decimal(nusd) * NANO)


def plain(amount: Decimal) -> str:
    """A decimal without trailing zeros or an exponent: "20", "0.0015"."""
    return format(amount.normalize(), "f") if amount else "0"


def to_nusd(amount) -> int:
    return int((Decimal(str(amount)) / NANO).to_integral_value(rounding=ROUND_HALF_UP))


def model_keys(model: str) -> list[str]:
    """The names a model may be listed under, most specific first."""
    name = model.strip().lower()
    keys = [name]
    if "." in name and not name.startswith(("gpt-", "o1", "o3", "o4")):
        name = name.split(".", 1)[1]  # a cloud's vendor prefix: "anthropic.claude-..."
        keys.append(name)
    for pattern in (_VERSIONED, _DATED):
        stripped = pattern.sub("", name)
        if stripped != name:
            name = stripped
            keys.append(name)
    return keys


@dataclass(slots=True)
class _Book:
    version: int | None
    platform: dict  # models.PLATFORM_FIELDS -> Decimal
    by_name: dict  # model key -> [(effective_from, Price)] newest first


def _price_of(row, version, override=False) -> Price:
    return Price(
        provider=row.provider,
        model=row.model,
        input=row.input_usd_per_mtok,
        output=row.output_usd_per_mtok,
        cache_read=row.cache_read_usd_per_mtok,
        cache_write=row.cache_write_usd_per_mtok,
        input_includes_cache=getattr(row, "input_includes_cache", False),
        version=version,
        override=override,
    )


def _load_book() -> _Book:
    from billing.models import PLATFORM_FIELDS, PriceBook

    book = PriceBook.objects.order_by("-version").first()
    if book is None:
        return _Book(None, {}, {})
    by_name: dict[str, list] = {}
    for entry in book.entries.order_by("-effective_from"):
        price = _price_of(entry, book.version)
        for name in {entry.model.lower(), *(a.lower() for a in entry.aliases)}:
            by_name.setdefault(name, []).append((entry.effective_from, price))
    platform = {name: getattr(book, name) for name in PLATFORM_FIELDS}
    return _Book(book.version, platform, by_name)


def _load_overrides(tenant_id: int) -> dict:
    from billing.models import PriceOverride

    rows = PriceOverride.objects.unscoped().filter(tenant_id=tenant_id)
    return {row.model.lower(): _price_of(row, None, override=True) for row in rows}


def _load_storage_overrides(tenant_id: int) -> dict:
    from billing.models import StoragePriceOverride

    rows = StoragePriceOverride.objects.unscoped().filter(tenant_id=tenant_id)
    return {row.place: row.gb_month_usd for row in rows}


class PriceCache:
    """The newest book and each tenant's overrides (of models' prices, of storage
    prices), each used for up to TTL seconds; kept in controlplane.tenantcache (bounded,
    reset with the others). The book is the platform's: it is held under tenant id 0."""

    def __init__(self):
        self._books = TenantCache("price book", size=1, after_commit=False)
        self._overrides = TenantCache("price overrides", size=2000, after_commit=False)
        self._storage = TenantCache("storage price overrides", size=2000, after_commit=False)

    def clear(self) -> None:
        self._books.clear()
        self._overrides.clear()
        self._storage.clear()

    def _fresh(self, store: TenantCache, tenant_id: int, load):
        now = time.monotonic()
        held = store.get(tenant_id, "v")
        if held is None or now - held[0] > TTL:
            held = (now, load())
            store.put(tenant_id, {"v": held})
        return held[1]

    def book(self) -> _Book:
        return self._fresh(self._books, 0, _load_book)

    def overrides(self, tenant_id: int) -> dict:
        return self._fresh(self._overrides, tenant_id, lambda: _load_overrides(tenant_id))

    def storage_overrides(self, tenant_id: int) -> dict:
        return self._fresh(self._storage, tenant_id, lambda: _load_storage_overrides(tenant_id))


cache = PriceCache()


def price_for(*, tenant_id: int, provider: str, model: str, day: date) -> Price | None:
    """The tenant's price of the model on that day, or None when nothing lists it."""
    if not model:
        return None
    keys = model_keys(model)
    overrides = cache.overrides(tenant_id)
    book = cache.book()
    for key in keys:
        if key in overrides:
            return overrides[key]
        dated = book.by_name.get(key)
        if dated:
            mine = [d for d in dated if d[1].provider == provider] or dated
            # The newest entry in force that day; a span older than every entry gets
            # the oldest one.
            in_force = [p for effective, p in mine if effective <= day]
            price = in_force[0] if in_force else mine[-1][1]
            # An override may name the entry's canonical model instead of the alias used.
            return overrides.get(price.model.lower(), price)
    return None


def platform_price(name: str) -> Decimal:
    """One of the book's platform prices in USD (0 without a book)."""
    return cache.book().platform.get(name, Decimal(0))


def storage_prices(*, tenant_id: int) -> dict[str, Decimal]:
    """USD per GB-month of each place bytes sit (models.STORAGE_PRICE_FIELDS' keys):
    the tenant's own price where it has one, else the book's (0 without a book)."""
    from billing.models import STORAGE_PRICE_FIELDS

    own = cache.storage_overrides(tenant_id)
    platform = cache.book().platform
    return {
        place: own.get(place, platform.get(field, Decimal(0)))
        for place, field in STORAGE_PRICE_FIELDS.items()
    }

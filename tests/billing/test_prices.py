import json
from datetime import date
from decimal import Decimal

import pytest
from django.core.management import call_command

from billing import services
from billing.models import PriceBook
from billing.prices import cache, model_keys, price_for, usd
from controlplane.services import Actor
from controlplane.tenancy import tenant_scope

pytestmark = pytest.mark.django_db


def test_it_prices_a_call_with_cache_tokens_from_the_seed_book(acme):
    price = price_for(
        tenant_id=acme.id,
        provider="anthropic",
        model="claude-sonnet-4-20250514",
        day=date(2025, 10, 1),
    )
    newest = PriceBook.objects.order_by("-version").first().version
    assert price.model == "claude-sonnet-4" and price.version == newest
    # 253 x $3 + 67 x $15 + 1000 cache reads x $0.30 + 200 cache writes x $3.75, per million.
    cost = price.cost_nusd(input_tokens=253, output_tokens=67, cache_read=1000, cache_write=200)
    assert usd(cost) == "0.002814"


def test_it_takes_cached_tokens_out_of_openais_prompt_tokens(acme):
    price = price_for(
        tenant_id=acme.id, provider="openai", model="gpt-4o-2024-08-06", day=date(2025, 10, 1)
    )
    # 1000 prompt tokens of which 400 cached: 600 x $2.50 + 400 x $1.25 + 100 x $10.
    cost = price.cost_nusd(input_tokens=1000, output_tokens=100, cache_read=400)
    assert usd(cost) == "0.003"


def test_it_maps_aliases_dated_and_cloud_ids_to_one_entry(acme):
    assert model_keys("anthropic.claude-sonnet-4-20250514-v1:0")[-1] == "claude-sonnet-4"
    names = [
        "claude-sonnet-4",
        "claude-sonnet-4-0",
        "claude-sonnet-4-20250514",
        "anthropic.claude-sonnet-4-20250514-v1:0",
        "Claude-Sonnet-4",
    ]
    found = {
        price_for(tenant_id=acme.id, provider="", model=n, day=date(2025, 10, 1)).model
        for n in names
    }
    assert found == {"claude-sonnet-4"}
    assert (
        price_for(tenant_id=acme.id, provider="x", model="no-such-model", day=date.today()) is None
    )


def test_a_tenant_override_wins_for_that_tenant_only(acme, globex):
    with tenant_scope(acme):
        services.price_overrides_set(
            tenant=acme,
            actor=Actor.system(),
            entries=[
                {
                    "provider": "anthropic",
                    "model": "claude-sonnet-4",
                    "input_usd_per_mtok": "1.5",
                    "output_usd_per_mtok": "7.5",
                    "cache_read_usd_per_mtok": "0.15",
                    "cache_write_usd_per_mtok": "2",
                }
            ],
        )
    cache.clear()
    day = date(2025, 10, 1)
    mine = price_for(
        tenant_id=acme.id, provider="anthropic", model="claude-sonnet-4-20250514", day=day
    )
    theirs = price_for(
        tenant_id=globex.id, provider="anthropic", model="claude-sonnet-4-20250514", day=day
    )
    assert mine.override and mine.input == Decimal("1.5")
    assert (
        usd(
            mine.cost_nusd(input_tokens=1000, output_tokens=1000, cache_read=1000, cache_write=1000)
        )
        == "0.01115"
    )
    assert not theirs.override and theirs.input == Decimal(3)


def test_load_prices_adds_a_version_and_the_newest_entry_in_force_wins(tmp_path, acme):
    book = {
        "source": "test",
        "platform": {"tool_call_usd": "0.001"},
        "models": [
            {
                "provider": "acme-ai",
                "model": "m1",
                "aliases": ["m1-latest"],
                "effective_from": "2026-01-01",
                "input_usd_per_mtok": "1",
                "output_usd_per_mtok": "2",
            },
            {
                "provider": "acme-ai",
                "model": "m1",
                "aliases": ["m1-latest"],
                "effective_from": "2026-06-01",
                "input_usd_per_mtok": "0.5",
                "output_usd_per_mtok": "1",
            },
        ],
    }
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(book))
    before = PriceBook.objects.order_by("-version").first().version
    call_command("load_prices", str(path))
    cache.clear()
    assert PriceBook.objects.order_by("-version").first().version == before + 1
    early = price_for(
        tenant_id=acme.id, provider="acme-ai", model="m1-latest", day=date(2026, 3, 1)
    )
    late = price_for(tenant_id=acme.id, provider="acme-ai", model="m1", day=date(2026, 7, 1))
    assert (early.input, late.input, late.version) == (Decimal(1), Decimal("0.5"), before + 1)


def test_the_prices_api_shows_the_book_and_sets_overrides_for_admins(
    api, acme, acme_viewer, make_key
):
    admin, reader = make_key(acme, "admin", "read"), make_key(acme, "read")
    body = api.get("/api/v1/prices", key=reader).json()
    newest = PriceBook.objects.order_by("-version").first().version
    assert body["version"] == newest and "anthropic.com" in body["source"]
    entry = next(e for e in body["entries"] if e["model"] == "claude-haiku-4-5")
    assert entry == {
        "provider": "anthropic",
        "model": "claude-haiku-4-5",
        "input_usd_per_mtok": "1",
        "output_usd_per_mtok": "5",
        "cache_read_usd_per_mtok": "0.1",
        "cache_write_usd_per_mtok": "1.25",
    }
    override = {**entry, "input_usd_per_mtok": "0.8"}
    assert (
        api.request("PUT", "/api/v1/prices", key=reader, json={"entries": [override]}).status_code
        == 403
    )
    resp = api.request("PUT", "/api/v1/prices", key=admin, json={"entries": [override]})
    assert resp.status_code == 200
    assert resp.json()["overrides"] == [override]
    assert override in resp.json()["entries"]


@pytest.mark.parametrize(
    ("entries", "field"),
    [
        (
            [
                {
                    "provider": "anthropic",
                    "model": "",
                    "input_usd_per_mtok": "1",
                    "output_usd_per_mtok": "1",
                }
            ],
            "entries[0].model",
        ),
        (
            [
                {
                    "provider": "anthropic",
                    "model": "m",
                    "input_usd_per_mtok": "-1",
                    "output_usd_per_mtok": "1",
                }
            ],
            "entries[0].input_usd_per_mtok",
        ),
        (
            [{"provider": "anthropic", "model": "m", "input_usd_per_mtok": "1"}],
            "entries[0].output_usd_per_mtok",
        ),
        ("nope", "entries"),
    ],
)
def test_a_bad_override_is_a_400_naming_the_field(api, acme, make_key, entries, field):
    resp = api.request(
        "PUT", "/api/v1/prices", key=make_key(acme, "admin"), json={"entries": entries}
    )
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid" and field in resp.json()["detail"]


def test_the_seed_book_prices_every_model_the_platform_itself_uses(acme, settings):
    """The default model (`make run`'s local Messages API answers as it) and the example
    agents' models are priced: their calls are never cost_unknown."""
    import tomllib
    from pathlib import Path

    examples = Path(settings.BASE_DIR) / "examples"
    models = {settings.EXECUTION_DEFAULT_MODEL} | {
        tomllib.loads(m.read_text())["model"] for m in examples.glob("*/flightdeck.toml")
    }
    assert "claude-sonnet-5" in models
    for model in models:
        price = price_for(tenant_id=acme.id, provider="anthropic", model=model, day=date.today())
        assert price is not None, model
    sonnet5 = price_for(
        tenant_id=acme.id, provider="anthropic", model="claude-sonnet-5", day=date(2026, 12, 1)
    )
    assert (sonnet5.input, sonnet5.output, sonnet5.cache_read, sonnet5.cache_write) == (
        2,
        10,
        Decimal("0.2"),
        Decimal("2.5"),
    )


@pytest.mark.parametrize(
    "model, prices",
    [
        ("claude-opus-4-6", ("5", "25", "0.50", "6.25")),
        ("claude-opus-4-8", ("5", "25", "0.50", "6.25")),
        ("claude-opus-5", ("5", "25", "0.50", "6.25")),
        ("claude-sonnet-4-6", ("3", "15", "0.30", "3.75")),
        ("claude-fable-5", ("10", "50", "1", "12.50")),
        ("claude-fable-5-1", ("10", "50", "0.25", "12.50")),
    ],
)
def test_the_newest_book_prices_the_models_released_since_the_last(acme, model, prices):
    """Anthropic's pricing page as read on 2026-12-03 (billing/prices/2026-12-03.json);
    until this book their calls were cost_unknown."""
    price = price_for(tenant_id=acme.id, provider="anthropic", model=model, day=date(2026, 12, 3))
    assert price is not None and price.model == model
    assert (price.input, price.output, price.cache_read, price.cache_write) == tuple(
        map(Decimal, prices)
    )
    assert price.version == PriceBook.objects.order_by("-version").first().version

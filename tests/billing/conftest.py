import pytest

# Managed runs here use the local Messages API and this test run's queues, as in
# tests/execution.
from tests.execution.conftest import _execution_settings  # noqa: F401


@pytest.fixture(autouse=True)
def price_book(db):
    """The seed price book. Migration 0002 loads it, but a transactional test's flush
    empties the table, so a later test loads it again here."""
    from billing import services
    from billing.models import PriceBook
    from billing.prices import cache

    if not PriceBook.objects.exists():
        services.price_book_load_file(path=services.seed_path())
    cache.clear()
    yield
    cache.clear()

# The seed price book (storage is priced per GB-month), reloaded after a transactional
# test's flush emptied it, as in tests/billing.
from tests.billing.conftest import price_book  # noqa: F401

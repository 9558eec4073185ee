import pytest

from alerts.models import AlertRule


@pytest.fixture
def rule(acme):
    def make(detector, **fields):
        return AlertRule.all_tenants.create(tenant=acme, detector=detector, **fields)

    return make


@pytest.fixture(autouse=True)
def detection_in_this_process(settings):
    # The tests run detection themselves, over what the span path announced; the
    # receiver's queued copy would wait on a queue nobody reads.
    settings.ALERTS_DETECT_ON_INGEST = False

import pytest

from controlplane.models import Role
from tests.factories import MembershipFactory, UserFactory


@pytest.fixture
def acme_member(acme):
    """dave, who may run agents in acme but not change its settings."""
    dave = UserFactory(username="dave@acme.test")
    MembershipFactory(tenant=acme, user=dave, role=Role.MEMBER)
    return dave


@pytest.fixture
def acme_admin(acme):
    """erin, an admin of acme (settings, but not owners)."""
    erin = UserFactory(username="erin@acme.test")
    MembershipFactory(tenant=acme, user=erin, role=Role.ADMIN)
    return erin

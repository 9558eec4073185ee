from types import SimpleNamespace

import pytest

from controlplane import services, tenantcache
from controlplane.models import Role
from tests.factories import MembershipFactory, TenantFactory, UserFactory
from tests.workers import celery_worker, messages_api  # noqa: F401 - one of each per run

# The real instrumentations' fixtures, for the tracing and the browser tests.
pytest_plugins = ["tests.tracing.instrumented"]

PASSWORD = "correct horse battery staple"


def _tenant(slug: str, owner_email: str):
    tenant = TenantFactory(slug=slug, name=slug.title())
    owner = UserFactory(username=owner_email)
    MembershipFactory(tenant=tenant, user=owner, role=Role.OWNER)
    tenant.owner = owner
    return tenant


@pytest.fixture(autouse=True)
def _fresh_process_caches():
    """The span path caches per tenant id (controlplane.tenantcache). SQLite hands out a
    rolled-back test's ids again, so a test must not inherit the previous test's entries
    for what is, to it, a different tenant."""
    tenantcache.reset()
    services.api_key_cache_clear()
    yield


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Failed-auth buckets outlive a test in Redis (the database's roll back with it), and
    every test client is 127.0.0.1: one test's failures must not lock out the next."""
    yield
    from django.conf import settings

    if settings.REDIS_URL:
        import redis

        from controlplane.throttle import PREFIX

        client = redis.Redis.from_url(settings.REDIS_URL)
        keys = list(client.scan_iter(f"{settings.REDIS_PREFIX}rl:{PREFIX}*"))
        if keys:
            client.delete(*keys)


@pytest.fixture
def acme(db):
    """Tenant acme, owned by alice."""
    return _tenant("acme", "alice@acme.test")


@pytest.fixture
def acme_viewer(acme):
    """bob, who may only read acme."""
    bob = UserFactory(username="bob@acme.test")
    MembershipFactory(tenant=acme, user=bob, role=Role.VIEWER)
    return bob


@pytest.fixture
def globex(db):
    """Tenant globex, owned by charlie, a stranger to acme."""
    return _tenant("globex", "charlie@globex.test")


@pytest.fixture
def make_key():
    """make_key(tenant, *scopes) -> raw key string."""

    def make(tenant, *scopes):
        _, raw = services.api_key_create(tenant=tenant, name="test", scopes=list(scopes))
        return raw

    return make


@pytest.fixture
def api(live_server):
    """A real HTTP client against a live server: api.get(path, key=...)."""
    import httpx

    def call(method, path, key=None, **kwargs):
        headers = kwargs.pop("headers", {})
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return httpx.request(method, live_server.url + path, headers=headers, timeout=30, **kwargs)

    return SimpleNamespace(
        url=live_server.url,
        get=lambda path, **kw: call("GET", path, **kw),
        post=lambda path, **kw: call("POST", path, **kw),
        delete=lambda path, **kw: call("DELETE", path, **kw),
        request=call,
    )


@pytest.fixture
def grpc_address():
    """An OTLP/gRPC server on a free port, in this process."""
    from tracing.grpc_server import make_server

    server, port = make_server("127.0.0.1:0", workers=2)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def pytest_terminal_summary(terminalreporter):
    from tests import suites

    lines = suites.summary()
    if lines:
        terminalreporter.section("generated suites")
        for line in lines:
            terminalreporter.write_line(line)

"""Failed sign-ins and unknown API keys are throttled per client address and per
account (username, key prefix); the right password or key waits out the lockout too."""

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from tests.conftest import PASSWORD


@pytest.fixture(autouse=True)
def _slow_refill(settings):
    settings.AUTH_FAILURE_REFILL_SECONDS = 3600  # nothing refills during a test


def login(client, username, password, address="10.0.0.1"):
    return client.post("/login/", {"username": username, "password": password}, REMOTE_ADDR=address)


def test_it_refuses_the_right_password_after_ten_wrong_ones(client, acme):
    user = acme.owner
    user.set_password(PASSWORD)
    user.save()
    for _ in range(10):
        assert login(client, user.username, "wrong").status_code in (200, 429)
    response = login(client, user.username, PASSWORD)
    assert response.status_code == 429 and int(response["Retry-After"]) > 0
    assert "Too many failed attempts" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # Another account from another address is not held up by this one.
    other = acme.owner.__class__.objects.create_user("eve@acme.test", password=PASSWORD)
    assert login(client, other.username, PASSWORD, address="10.0.0.2").status_code == 302


def test_it_throttles_one_address_trying_many_accounts(client, acme, settings):
    settings.AUTH_FAILURES_PER_ADDRESS = 8
    for i in range(8):
        assert login(client, f"guess{i}@acme.test", "wrong").status_code == 200
    assert login(client, "guess9@acme.test", "wrong").status_code == 429


def api_get(client, key, address="10.0.0.1"):
    return client.get("/api/v1/tenant", HTTP_AUTHORIZATION=f"Bearer {key}", REMOTE_ADDR=address)


def test_it_answers_429_to_an_address_sending_unknown_keys(client, acme, make_key):
    statuses = [api_get(client, f"fd_{i:07d}bogus").status_code for i in range(300)]
    assert statuses[:20] == [401] * 20
    assert set(statuses[20:]) == {429}
    throttled = api_get(client, make_key(acme, "read"))
    assert throttled.status_code == 429 and int(throttled["Retry-After"]) > 0
    assert throttled.json()["error"] == "throttled"
    assert api_get(client, make_key(acme, "read"), address="10.0.0.9").status_code == 200


def test_it_throttles_guesses_at_one_key_prefix_from_many_addresses(client, acme, make_key):
    good = make_key(acme, "read")
    for i in range(5):
        wrong = good[:10] + "x" * (len(good) - 10)
        assert api_get(client, wrong, address=f"10.0.1.{i}").status_code == 401
    assert api_get(client, good, address="10.0.2.1").status_code == 429


def test_a_key_accepted_within_the_cache_period_is_not_throttled(client, acme, make_key):
    good = make_key(acme, "read")
    assert api_get(client, good).status_code == 200
    for i in range(5):
        wrong = good[:10] + "x" * (len(good) - 10)
        assert api_get(client, wrong, address=f"10.0.1.{i}").status_code == 401
    # Proven within API_KEY_CACHE_SECONDS, so not a guess: the lockout leaves it working.
    assert api_get(client, good, address="10.0.2.1").status_code == 200


# The gRPC server answers from its own threads and connections: on SQLite an open test
# transaction would hold the table locks they need.
@pytest.mark.django_db(transaction=True)
def test_it_throttles_unknown_keys_on_otlp_http_and_grpc(client, grpc_address, acme, settings):
    settings.AUTH_FAILURES_PER_ADDRESS = 3
    bogus = {
        "HTTP_AUTHORIZATION": "Bearer fd_nope",
        "content_type": "application/x-protobuf",
        "REMOTE_ADDR": "10.0.0.5",
    }
    statuses = [client.post("/v1/traces", b"", **bogus).status_code for _ in range(4)]
    assert statuses == [401, 401, 401, 429]
    stub = trace_service_pb2_grpc.TraceServiceStub(grpc.insecure_channel(grpc_address))
    codes = []
    for i in range(4):
        with pytest.raises(grpc.RpcError) as refused:
            stub.Export(
                trace_service_pb2.ExportTraceServiceRequest(),
                metadata=(("authorization", f"Bearer fd_grpc{i:05d}"),),
            )
        codes.append(refused.value.code())
    assert codes[:3] == [grpc.StatusCode.UNAUTHENTICATED] * 3
    assert codes[3] == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert dict(refused.value.trailing_metadata())["retry-after"]

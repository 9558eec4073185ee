import pytest


@pytest.fixture
def grpc_address():
    """An OTLP/gRPC server on a free port, in this process."""
    from tracing.grpc_server import make_server

    server, port = make_server("127.0.0.1:0", workers=2)
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)

import pytest

from controlplane.blobstore import get_blob_store


@pytest.mark.django_db
def test_it_reports_every_service(client):
    resp = client.get("/api/v1/health")
    assert resp.status_code == 200, resp.json()
    body = resp.json()
    assert body["status"] == "ok"
    assert set(body["checks"]) == {"database", "broker", "blob_store"}
    assert all(c["ok"] for c in body["checks"].values())


@pytest.mark.django_db
def test_it_answers_503_when_the_blob_store_is_down(client, settings):
    settings.BLOB_STORE = {
        "backend": "s3",
        "bucket": "nowhere",
        "endpoint_url": "http://127.0.0.1:9",
        "region": "us-east-1",
        "prefix": "",
    }
    get_blob_store.cache_clear()
    try:
        resp = client.get("/api/v1/health")
    finally:
        get_blob_store.cache_clear()
    assert resp.status_code == 503
    checks = resp.json()["checks"]
    assert checks["blob_store"]["ok"] is False and checks["blob_store"]["error"]
    assert checks["database"]["ok"] is True


@pytest.mark.django_db
def test_it_answers_503_when_the_broker_is_down(client, settings):
    settings.CELERY_BROKER_URL = "redis://127.0.0.1:9/0"
    resp = client.get("/api/v1/health")
    assert resp.status_code == 503
    assert resp.json()["checks"]["broker"]["ok"] is False

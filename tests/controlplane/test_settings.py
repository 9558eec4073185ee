import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from controlplane import envconf

ROOT = Path(__file__).resolve().parents[2]


def start(tmp_path, **env):
    full = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY")}
    full.update({"FLIGHTDECK_VAR_DIR": str(tmp_path), "DEBUG": "1"}, **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=full,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://root@localhost/x"}, "DATABASE_URL scheme 'mysql'"),
        ({"BLOB_STORE_URL": "ftp://host/x"}, "BLOB_STORE_URL scheme 'ftp'"),
        ({"BLOB_STORE_URL": "s3://b?endpoint=x"}, "unknown options ['endpoint']"),
        ({"CELERY_BROKER_URL": "sqs://"}, "CELERY_BROKER_URL scheme 'sqs'"),
        ({"DEBUG": "maybe"}, "DEBUG='maybe' is not a boolean"),
        (
            {"EGRESS_ALLOW_PRIVATE_NETWORKS": "10.0.0.0/8, 10.0.0.1/33"},
            "EGRESS_ALLOW_PRIVATE_NETWORKS: '10.0.0.1/33' is not a CIDR",
        ),
        (
            {"DEBUG": "0", "DATABASE_URL": "postgres://flightdeck@127.0.0.1:1/flightdeck"},
            "SECRET_KEY must be set when DEBUG is off and DATABASE_URL is set",
        ),
    ],
)
def test_it_stops_with_one_clear_line_on_a_bad_setting(tmp_path, env, message):
    result = start(tmp_path, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("debug", ["1", "0"])
def test_it_generates_the_secret_key_once_for_the_embedded_default(tmp_path, debug):
    """With DEBUG off too: `make run` serves that way, and manage.py commands run in the
    same checkout without any variable."""
    first = start(tmp_path, DEBUG=debug)
    assert first.returncode == 0, first.stderr
    key = (tmp_path / "secret_key").read_text()
    assert len(key) > 40
    assert start(tmp_path, DEBUG=debug).returncode == 0
    assert (tmp_path / "secret_key").read_text() == key


def test_it_reads_typed_values(monkeypatch):
    monkeypatch.setenv("X_INT", "12")
    monkeypatch.setenv("X_BOOL", "yes")
    assert envconf.env_int("X_INT", 1) == 12
    assert envconf.env_bool("X_BOOL") is True
    monkeypatch.setenv("X_INT", "twelve")
    with pytest.raises(ImproperlyConfigured, match="X_INT='twelve' is not an integer"):
        envconf.env_int("X_INT", 1)
    with pytest.raises(ImproperlyConfigured, match="at least 20"):
        monkeypatch.setenv("X_INT", "3")
        envconf.env_int("X_INT", 1, minimum=20)


def test_it_parses_the_service_urls():
    pg = envconf.database_from_url("postgres://u@db.internal:5432/fd")
    assert pg["ENGINE"] == "django.db.backends.postgresql"
    assert pg["OPTIONS"]["pool"]
    s3 = envconf.blob_store_from_url("s3://bucket?endpoint_url=http://127.0.0.1:9000&prefix=p/")
    assert s3 == {
        "backend": "s3",
        "bucket": "bucket",
        "endpoint_url": "http://127.0.0.1:9000",
        "region": "us-east-1",
        "prefix": "p",
    }
    assert envconf.blob_store_from_url("file:///tmp/blobs") == {
        "backend": "file",
        "root": "/tmp/blobs",
    }

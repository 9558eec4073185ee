"""Shared set-up for benchmarks: a fresh platform instance on the embedded default or on
PostgreSQL + S3, served by gunicorn on a free loopback port."""

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def manage(env: dict, *args: str) -> str:
    out = subprocess.run(
        [PY, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stderr[-2000:]}")
    return out.stdout


class Platform:
    """One configuration of the platform: env, a tenant with an API key, a web server."""

    def __init__(self, kind: str):
        self.kind = kind
        self.var = Path(tempfile.mkdtemp(prefix=f"fd-bench-{kind}-"))
        self.env = {
            **os.environ,
            "FLIGHTDECK_VAR_DIR": str(self.var),
            "SECRET_KEY": "bench-only-secret",
            "DEBUG": "0",
            "LOG_LEVEL": "WARNING",
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
        }
        for name in ("DATABASE_URL", "BLOB_STORE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
            self.env.pop(name, None)
        (self.var / "static").mkdir()
        self.procs: list[subprocess.Popen] = []
        if kind == "postgres+s3":
            self._postgres_and_s3()
        manage(self.env, "migrate", "--noinput", "-v0")
        self.key = manage(self.env, "create_tenant", "bench").strip().splitlines()[-1]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _postgres_and_s3(self) -> None:
        import boto3
        import psycopg

        name = "flightdeck_bench"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as c:
            c.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            c.execute(f"CREATE DATABASE {name}")
        s3_port = free_port()
        self.procs.append(
            subprocess.Popen(
                [PY, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
        wait_for_port(s3_port)
        endpoint = f"http://127.0.0.1:{s3_port}"
        self.s3 = boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
        )
        self.s3.create_bucket(Bucket="bench")
        self.env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{name}"
        self.env["BLOB_STORE_URL"] = f"s3://bench?endpoint_url={endpoint}"

    def serve(
        self, workers: int = int(os.environ.get("BENCH_WORKERS", 2)), threads: int = 2
    ) -> None:
        self.procs.append(
            subprocess.Popen(
                [
                    str(Path(PY).parent / "gunicorn"),
                    "controlplane.wsgi",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(workers),
                    "--threads",
                    str(threads),
                    "--preload",
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=self.env,
                start_new_session=True,
            )
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM) if proc.pid == os.getpgid(
                    proc.pid
                ) else proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(self.var, ignore_errors=True)

    # --- measuring ----------------------------------------------------------------------

    def sql(self, query: str):
        """Run one query against this platform's database, from this process."""
        if self.kind == "postgres+s3":
            import psycopg

            with psycopg.connect(
                self.env["DATABASE_URL"].replace("postgres://", "postgresql://")
            ) as c:
                return c.execute(query).fetchall()
        import sqlite3

        with sqlite3.connect(self.var / "flightdeck.sqlite3") as c:
            return c.execute(query).fetchall()

    def database_bytes(self) -> int:
        if self.kind == "postgres+s3":
            rows = self.sql(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname LIKE 'tracing_%'"
            )
            return int(rows[0][0])
        rows = self.sql("PRAGMA page_count")
        free = self.sql("PRAGMA freelist_count")
        size = self.sql("PRAGMA page_size")
        return (rows[0][0] - free[0][0]) * size[0][0]

    def blob_bytes(self) -> int:
        if self.kind == "postgres+s3":
            total = 0
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket="bench"):
                total += sum(item["Size"] for item in page.get("Contents", []))
            return total
        folder = self.var / "blobs"
        return (
            sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
            if folder.exists()
            else 0
        )

"""Shared set-up for benchmarks: a fresh platform instance on the embedded default or on
PostgreSQL + S3, served by gunicorn on a free loopback port."""

import contextlib
import hashlib
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
        self.embedded = kind == "embedded"
        if self.embedded:
            # As `make run` sets it for every process of the embedded default.
            self.env.update({"MALLOC_ARENA_MAX": "2", "EXECUTION_TOOL_THREADS": "2"})
        if kind == "postgres+s3":
            self._postgres_and_s3()
        manage(self.env, "migrate", "--noinput", "-v0")
        self.key = self.create_tenant("bench")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"

    def _postgres_and_s3(self) -> None:
        import boto3
        import psycopg

        # One database per checkout, so benchmarks in two work trees do not collide.
        name = "flightdeck_bench_" + hashlib.blake2b(str(ROOT).encode(), digest_size=4).hexdigest()
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

    def create_tenant(self, slug: str) -> str:
        """A new tenant; returns its API key (scopes ingest and read)."""
        return manage(self.env, "create_tenant", slug).strip().splitlines()[-1]

    def worker(self) -> None:
        """A Celery worker as `make run` starts one (Procfile `worker`: threads, on the
        embedded default) or as platform/ deploys one: it builds the search index from
        the tasks ingest queues."""
        pool = ["--pool", "threads", "--concurrency", "4"] if self.embedded else ["-c", "2"]
        self.procs.append(
            subprocess.Popen(
                [PY, "-m", "celery", "-A", "controlplane", "worker", "--loglevel", "WARNING"]
                + pool
                + ["--without-gossip", "--without-mingle"],
                cwd=ROOT,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def serve(self) -> None:
        """gunicorn as `make run` starts it on the embedded default (one worker with
        threads, OTLP/gRPC inside), or with two workers as platform/ deploys it."""
        if self.embedded:
            self.env["FLIGHTDECK_PORT"] = str(self.port)
            self.env["OTLP_GRPC_ADDRESS"] = f"127.0.0.1:{free_port()}"
            layout = [
                "--config",
                "python:controlplane.gunicorn_embedded",
                "--access-logfile",
                "/dev/null",
            ]
        else:
            layout = ["--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--threads", "2"]
        self.procs.append(
            subprocess.Popen(
                [str(Path(PY).parent / "gunicorn"), "controlplane.wsgi", *layout]
                + ["--log-level", "warning"],
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

    def stored_by_table(self) -> dict[str, int]:
        """Bytes on disk by table (its indexes, and FTS5's shadow tables, included), plus
        free pages and what the WAL still holds after a checkpoint: a user's disk holds
        all of it."""
        if self.kind == "postgres+s3":
            rows = self.sql(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind = 'r'"
            )
            return {name: int(size) for name, size in rows}
        import sqlite3

        path = self.var / "flightdeck.sqlite3"
        with sqlite3.connect(path, timeout=30) as c:
            for _ in range(50):  # busy while a writer holds the database; try again
                if c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0:
                    break
                time.sleep(0.1)
            owner = dict(c.execute("SELECT name, tbl_name FROM sqlite_master"))
            sizes: dict[str, int] = {}
            for name, size in c.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name"):
                table = owner.get(name, name)  # sqlite_schema itself has no row
                sizes[table] = sizes.get(table, 0) + size
            page = c.execute("PRAGMA page_size").fetchone()[0]
            sizes["(free pages)"] = c.execute("PRAGMA freelist_count").fetchone()[0] * page
        wal = path.with_name(path.name + "-wal")
        sizes["(wal)"] = wal.stat().st_size if wal.exists() else 0
        return sizes

    def database_bytes(self) -> int:
        return sum(self.stored_by_table().values())

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

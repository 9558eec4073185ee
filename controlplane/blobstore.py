"""The blob store: S3 through boto3 in production, a local folder by default.

Keys are plain strings ("t/{tenant_id}/blobs/ab/abcd….zst"); callers build them with
`tenant_key` so every tenant's objects live under its own prefix.
"""

import os
import tempfile
from functools import lru_cache
from pathlib import Path

from django.conf import settings


class BlobNotFound(KeyError):
    pass


class BlobStoreUnavailable(RuntimeError):
    """The store could not be reached; the caller should answer 503 and retry later."""


def tenant_key(tenant_id: int, *parts: str) -> str:
    return "/".join([f"t/{int(tenant_id)}", *parts])


class FileBlobStore:
    def __init__(self, root: str):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise ValueError(f"blob key {key!r} leaves the store")
        return path

    def put(self, key: str, data: bytes, *, storage_class: str | None = None) -> None:
        # A folder has no storage classes: retention records the class on its row.
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a blob.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def copy(self, source: str, target: str, *, storage_class: str | None = None) -> None:
        self.put(target, self.get(source))

    def storage_class(self, key: str) -> str | None:
        return None

    def sizes(self, prefix: str):
        """(key, bytes) of every object under the prefix."""
        for key in self.list(prefix):
            yield key, self._path(key).stat().st_size

    def list(self, prefix: str):
        base = self.root
        start = self._path(prefix) if prefix else base
        if start.is_file():
            yield prefix
            return
        if not start.exists():
            return
        for path in sorted(start.rglob("*")):
            if path.is_file() and not path.name.startswith(".tmp-"):
                yield path.relative_to(base).as_posix()

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise BlobStoreUnavailable(f"blob folder {self.root} is not writable")


class S3BlobStore:
    def __init__(self, *, bucket: str, endpoint_url: str | None, region: str, prefix: str = ""):
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.prefix = f"{prefix}/" if prefix else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=3,
                read_timeout=10,
                max_pool_connections=32,
            ),
        )

    def _call(self, method, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "404", "NotFound"):
                raise BlobNotFound(kwargs.get("Key", "")) from None
            if (
                code in ("NoSuchBucket",)
                or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) >= 500
            ):
                raise BlobStoreUnavailable(str(exc)) from exc
            raise
        except BotoCoreError as exc:
            raise BlobStoreUnavailable(str(exc)) from exc

    def put(self, key: str, data: bytes, *, storage_class: str | None = None) -> None:
        extra = {"StorageClass": storage_class} if storage_class else {}
        self._call("put_object", Key=self.prefix + key, Body=data, **extra)

    def copy(self, source: str, target: str, *, storage_class: str | None = None) -> None:
        """A server-side copy (up to 5 GB), into another storage class if given."""
        extra = {"StorageClass": storage_class} if storage_class else {}
        self._call(
            "copy_object",
            Key=self.prefix + target,
            CopySource={"Bucket": self.bucket, "Key": self.prefix + source},
            **extra,
        )

    def storage_class(self, key: str) -> str:
        # S3 leaves the header out for STANDARD.
        head = self._call("head_object", Key=self.prefix + key)
        return head.get("StorageClass") or "STANDARD"

    def sizes(self, prefix: str):
        """(key, bytes) of every object under the prefix."""
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :], item["Size"]

    def get(self, key: str) -> bytes:
        return self._call("get_object", Key=self.prefix + key)["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._call("head_object", Key=self.prefix + key)
        except BlobNotFound:
            return False
        return True

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            self._call(
                "delete_objects",
                Delete={"Objects": [{"Key": self.prefix + k} for k in chunk], "Quiet": True},
            )

    def list(self, prefix: str):
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix) :]

    def check(self) -> None:
        self._call("head_bucket")


def blob_store_from_config(config: dict):
    if config["backend"] == "file":
        return FileBlobStore(config["root"])
    return S3BlobStore(
        bucket=config["bucket"],
        endpoint_url=config["endpoint_url"],
        region=config["region"],
        prefix=config["prefix"],
    )


@lru_cache(maxsize=1)
def get_blob_store():
    return blob_store_from_config(settings.BLOB_STORE)

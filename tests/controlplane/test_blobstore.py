import os

import pytest

from controlplane.blobstore import BlobNotFound, FileBlobStore, S3BlobStore, tenant_key


def _exercise(store):
    key = tenant_key(7, "blobs", "ab", "abcdef.zst")
    assert key == "t/7/blobs/ab/abcdef.zst"
    assert not store.exists(key)
    with pytest.raises(BlobNotFound):
        store.get(key)
    store.put(key, b"\x00payload")
    store.put(tenant_key(8, "blobs", "cd", "cdef.zst"), b"other tenant")
    assert store.exists(key)
    assert store.get(key) == b"\x00payload"
    assert list(store.list("t/7/")) == [key]
    store.delete([key])
    assert not store.exists(key)
    store.check()


def test_it_stores_blobs_in_a_folder(tmp_path):
    store = FileBlobStore(str(tmp_path))
    _exercise(store)
    with pytest.raises(ValueError, match="leaves the store"):
        store.put("../escape", b"x")


def test_it_stores_blobs_in_s3():
    endpoint = os.environ.get("S3_TEST_ENDPOINT")
    if not endpoint:
        pytest.skip("no S3 test server")
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="blobstore-test"
    )
    _exercise(
        S3BlobStore(bucket="blobstore-test", endpoint_url=endpoint, region="us-east-1", prefix="x")
    )

"""The launcher of the S3 tests' server (tests/support/seaweedfs.py): it behaves as AWS where the
tests rely on it, and a stop leaves no process, folder or socket behind."""

from __future__ import annotations

import os
from pathlib import Path

import boto3
import pytest
from botocore.exceptions import ClientError
from support import seaweedfs
from support.prerequisites import missing


@pytest.fixture(autouse=True)
def _weed() -> None:
    if seaweedfs.find_weed() is None:  # skips, or fails with CI set, as conftest's s3_server
        missing("SeaweedFS (`weed`) for the S3 tests", seaweedfs.INSTALL)


def _client(endpoint: str, key: str, secret: str):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def _code(call) -> str:
    with pytest.raises(ClientError) as err:
        call()
    return err.value.response["Error"]["Code"]


def test_only_its_identities_and_only_existing_buckets_then_a_clean_stop():
    server = seaweedfs.start({"launcher-key": "launcher-secret"})
    try:
        ok = _client(server.endpoint, "launcher-key", "launcher-secret")
        ok.create_bucket(Bucket="launcher")
        ok.put_object(Bucket="launcher", Key="a", Body=b"a")
        # a PUT into a missing bucket fails as on AWS (weed's default would create the bucket)
        assert _code(lambda: ok.put_object(Bucket="no-such", Key="a", Body=b"a")) == "NoSuchBucket"
        assert _code(lambda: ok.delete_bucket(Bucket="launcher")) == "BucketNotEmpty"
        unknown = _client(server.endpoint, "other-key", "launcher-secret")
        assert _code(lambda: unknown.list_objects_v2(Bucket="launcher")) == "InvalidAccessKeyId"
        forged = _client(server.endpoint, "launcher-key", "wrong")
        assert _code(lambda: forged.list_objects_v2(Bucket="launcher")) == "SignatureDoesNotMatch"
        assert len(server.grpc_ports) == 5
    finally:
        server.stop()
    assert server.proc.poll() is not None and not server.root.exists()
    left = [p for port in server.grpc_ports for p in Path("/tmp").glob(f"seaweedfs-*-{port}.sock")]
    assert not left
    assert not os.path.exists(f"/proc/{server.proc.pid}/cmdline")

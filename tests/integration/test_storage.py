"""Object storage as the system of record: verified transfers, commit markers, leases.

Every test runs against a local folder and against a real S3 server (SeaweedFS).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest
from support.seaweedfs import S3_CREDENTIALS

from irv2_core.errors import Irv2Error
from irv2_core.storage import open_store
from irv2_core.storage.lease import LeaseHeld, StoreLease
from irv2_core.storage.publish import (
    COMMIT_MARKER,
    fetch_committed,
    folder_files,
    publish_files,
    read_commit,
)
from irv2_core.storage.store import join_key


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    if request.param == "local":
        return open_store(str(tmp_path / "store"))
    endpoint = request.getfixturevalue("s3_server")
    client = request.getfixturevalue("s3_client")
    bucket = f"store-{os.getpid()}-{time.monotonic_ns()}"
    client.create_bucket(Bucket=bucket)
    return open_store(f"s3://{bucket}/runs", endpoint_url=endpoint)


def _files(tmp_path):
    folder = tmp_path / "out"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "final.ckpt").write_bytes(os.urandom(300_000))
    (folder / "checkpoints" / "irv2-e1-s4.ckpt").write_bytes(os.urandom(1000))
    (folder / "metrics.jsonl").write_text('{"step": 1}\n')
    (folder / ".hidden").write_text("not published")
    return folder


def test_published_files_come_back_verified(store, tmp_path):
    folder = _files(tmp_path)
    files = folder_files(folder)
    assert ".hidden" not in files and "checkpoints/irv2-e1-s4.ckpt" in files
    marker = publish_files(store, "r1", files, meta={"run": "r1"})
    assert read_commit(store, "r1")["files"] == marker["files"]
    got = fetch_committed(store, "r1", tmp_path / "back")
    for rel in files:
        assert (tmp_path / "back" / rel).read_bytes() == (folder / rel).read_bytes()
    assert got["meta"] == {"run": "r1"}


def test_a_prefix_without_its_commit_marker_is_not_complete(store, tmp_path):
    folder = _files(tmp_path)
    publish_files(store, "r2", folder_files(folder))
    store.delete(join_key("r2", COMMIT_MARKER))  # as if the worker died before committing
    assert read_commit(store, "r2") is None
    with pytest.raises(Irv2Error, match="not a completely published output"):
        fetch_committed(store, "r2", tmp_path / "back")


def test_a_damaged_object_fails_its_sha256_check(store, tmp_path):
    folder = _files(tmp_path)
    publish_files(store, "r3", folder_files(folder))
    store.put_bytes(b"garbage", join_key("r3", "final.ckpt"))
    with pytest.raises(Irv2Error, match="does not match its recorded sha256"):
        fetch_committed(store, "r3", tmp_path / "back", only=["final.ckpt"])
    assert not (tmp_path / "back" / "final.ckpt").exists()  # nothing half-written left


def test_create_writes_only_if_absent_or_at_the_known_version(store):
    first = store.create(b"a", "lease.json")
    assert first is not None
    assert store.create(b"b", "lease.json") is None
    assert store.get_bytes("lease.json") == b"a"
    assert store.create(b"c", "lease.json", replace=store.head("lease.json").version)
    assert store.create(b"d", "lease.json", replace=first.version) is None  # stale version
    assert store.get_bytes("lease.json") == b"c"
    assert store.create(b"e", "gone.json", replace=first.version) is None  # key deleted meanwhile
    assert store.head("gone.json") is None


def test_if_match_on_a_deleted_key_loses_as_on_aws(moto_s3_server):
    """AWS answers If-Match on a missing key with 404 NoSuchKey (SeaweedFS with 412, covered
    above): moto answers as AWS does, which is the point of using the mock here."""
    import boto3

    bucket = f"gone-{time.monotonic_ns()}"
    boto3.client("s3", endpoint_url=moto_s3_server, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    store = open_store(f"s3://{bucket}/runs", endpoint_url=moto_s3_server)
    first = store.create(b"a", "lease.json")
    store.delete("lease.json")
    assert store.create(b"b", "lease.json", replace=first.version) is None
    assert store.head("lease.json") is None


def test_a_second_writer_fails_fast_naming_the_holder(store):
    second = StoreLease(store, "r4/lease.json", holder="node-b:202")
    with (
        StoreLease(store, "r4/lease.json", ttl_s=30, holder="node-a:101"),
        pytest.raises(LeaseHeld, match=r"node-a:101"),
    ):
        second.acquire()
    # released: the next writer gets it at once
    StoreLease(store, "r4/lease.json", holder="node-b:202").acquire().release()


def test_a_dead_workers_lease_expires_and_the_next_run_proceeds(store):
    record = {"holder": "dead-node:9", "expires_at": time.time() - 1}
    store.put_bytes(json.dumps(record).encode(), "r5/lease.json")  # a SIGKILLed holder's lease
    lease = StoreLease(store, "r5/lease.json", ttl_s=30, holder="node-c:3").acquire()
    assert json.loads(store.get_bytes("r5/lease.json"))["holder"] == "node-c:3"
    lease.release()
    assert store.head("r5/lease.json") is None


def test_a_retry_on_the_machine_whose_writer_died_takes_its_lease_at_once(store):
    """A killed training's lease on this machine (same pid namespace and boot, pid gone) is taken
    over without waiting out its expiry; a live holder's, or one from another pid namespace (a
    pod sharing the host's name), is not."""
    from irv2_core.storage.lease import _origin

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    host, origin = socket.gethostname(), _origin()
    try:
        for pid, where, held in (
            (live.pid, origin, True),
            (dead.pid, {**origin, "pidns": "pid:[1]"}, True),
            (dead.pid, origin, False),
        ):
            record = {"holder": f"{host}:{pid}", "expires_at": time.time() + 600, "origin": where}
            store.put_bytes(json.dumps(record).encode(), "r7/lease.json")
            lease = StoreLease(store, "r7/lease.json", ttl_s=30)
            if held:
                with pytest.raises(LeaseHeld, match=f"{host}:{pid}"):
                    lease.acquire()
            else:
                lease.acquire().release()
                assert store.head("r7/lease.json") is None
    finally:
        live.kill()
        live.wait()


def test_the_heartbeat_keeps_a_live_lease(store):
    lease = StoreLease(store, "r6/lease.json", ttl_s=1.5, holder="node-d:4").acquire()
    try:
        time.sleep(2.5)  # longer than the ttl: only renewals keep it
        with pytest.raises(LeaseHeld, match="node-d:4"):
            StoreLease(store, "r6/lease.json", holder="node-e:5").acquire()
    finally:
        lease.release()


def test_preflight_names_a_missing_bucket(s3_server):
    missing = open_store("s3://no-such-bucket-here/x", endpoint_url=s3_server)
    with pytest.raises(Irv2Error, match="no-such-bucket-here.*does not exist"):
        missing.check_writable()


@pytest.mark.parametrize("key_id", ["AKIAWRONGKEYID000000", S3_CREDENTIALS["AWS_ACCESS_KEY_ID"]])
def test_preflight_names_bad_credentials_without_the_secret(
    s3_server, s3_client, key_id, monkeypatch
):
    """An unknown key, and a known key with the wrong secret: the server checks signatures."""
    bucket = f"creds-{time.monotonic_ns()}"
    s3_client.create_bucket(Bucket=bucket)  # exists: only the credentials can be wrong
    secret = "wrong-secret-value-1234"
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with pytest.raises(Irv2Error) as err:
        open_store(f"s3://{bucket}/x", endpoint_url=s3_server).check_writable()
    text = str(err.value)
    assert "rejected the credentials" in text and f"s3://{bucket}/x" in text
    assert secret not in text


def test_preflight_names_an_unwritable_local_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    (folder / ".irv2-preflight").write_text("a file where a folder must go")
    with pytest.raises(Irv2Error, match="cannot be written"):
        open_store(str(folder)).check_writable()

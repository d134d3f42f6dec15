"""A run that survives its machine: checkpoints mirrored to S3 as they are written, a fresh worker
resuming from the store, and one writer per run (store lease, local folder lock).

"Machines" are separate processes with separate run folders; they share only the S3 bucket.
"""

from __future__ import annotations

import os
import time

import pytest
from support.training import run_cli, smoke_args

from irv2_core.runtime.dirlock import folder_lock
from irv2_core.runtime.io import read_json
from irv2_core.storage import open_store
from irv2_core.storage.lease import StoreLease

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data(smoke_mindrecord):
    return smoke_mindrecord


@pytest.fixture
def run_uri(s3_server, s3_client):
    bucket = f"runs-{os.getpid()}-{time.monotonic_ns()}"
    s3_client.create_bucket(Bucket=bucket)
    return f"s3://{bucket}/irv2/runs/r1"


def _train(data, out, uri, endpoint, *extra):
    args = ["train", "--data", str(data), "--out", str(out), *smoke_args()]
    return run_cli(*args, "--mirror-uri", uri, "--endpoint-url", endpoint, *extra)


def test_a_fresh_worker_resumes_from_the_store(data, tmp_path, run_uri, s3_server):
    first = _train(data, tmp_path / "m1" / "run", run_uri, s3_server, "--stop-after-steps", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    store = open_store(run_uri, endpoint_url=s3_server)
    keys = {o.key for o in store.list("")}
    assert {"checkpoints/irv2-e1-s2.ckpt", "checkpoints/irv2-e1-s2.ckpt.sha256"} <= keys
    assert "lease.json" not in keys  # released when the process ended

    # machine 2: an empty run folder; only the bucket is shared
    second = _train(data, tmp_path / "m2" / "run", run_uri, s3_server, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "resume: fetched irv2-e1-s2.ckpt" in second.stdout
    assert "resume: restored step 2/4" in second.stdout and "step 4/4" in second.stdout
    summary = read_json(tmp_path / "m2" / "run" / "train_summary.json")
    assert summary["resumed_from_step"] == 2 and summary["global_step"] == 4
    keys = {o.key for o in store.list("checkpoints/")}
    # keep_checkpoint_max=1: the rotation is mirrored too
    assert keys == {"checkpoints/irv2-e2-s4.ckpt", "checkpoints/irv2-e2-s4.ckpt.sha256"}


def test_a_second_writer_fails_fast_naming_the_holder(data, tmp_path, run_uri, s3_server):
    store = open_store(run_uri, endpoint_url=s3_server)
    with StoreLease(store, "lease.json", ttl_s=120, holder="node-a:4242"):
        started = time.monotonic()
        done = _train(data, tmp_path / "other" / "run", run_uri, s3_server, "--resume")
    assert done.returncode == 2, done.stderr[-2000:]
    assert "node-a:4242" in done.stderr and "training run" in done.stderr
    assert time.monotonic() - started < 120  # failed at once, not after training
    assert not (tmp_path / "other" / "run" / "checkpoints").exists()


def test_the_local_run_folder_takes_one_writer(data, tmp_path):
    run = tmp_path / "run"
    with folder_lock(run, "training"):
        done = run_cli("train", "--data", str(data), "--out", str(run), *smoke_args())
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"pid {os.getpid()}" in done.stderr and "another training" in done.stderr

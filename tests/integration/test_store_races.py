"""The store's guarantees tested the way they break: several processes at the same instant, many
trials, on a folder store and on the S3 server; and a writer whose lease was taken stops.

Each race starts its worker processes once; a barrier releases them together for every trial.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from irv2_core.errors import Irv2Error
from irv2_core.lineage import ServiceRecord
from irv2_core.promotion import promote, read_current
from irv2_core.records import EvalRecord
from irv2_core.storage import open_store
from irv2_core.storage.lease import LeaseHeld, LeaseLost, StoreLease
from irv2_core.storage.mirror import Mirror

TRIALS, WORKERS = 20, 4


def _in_service(run_id: str) -> ServiceRecord:
    evaluation = EvalRecord(top1=0.5, top5=1.0, loss=1.0, count=4, protocol="zoo",
                            checkpoint="final.ckpt", image_size=75)  # fmt: skip
    return ServiceRecord(run_id=run_id, run_uri=f"runs/{run_id}", eval=evaluation)


@pytest.fixture(params=["folder", "s3"])
def store_uri(request, tmp_path) -> tuple[str, str | None]:
    """(uri, endpoint) of an empty store: a folder, or a fresh bucket on the S3 server."""
    if request.param == "folder":
        return str(tmp_path / "store"), None
    endpoint = request.getfixturevalue("s3_server")
    bucket = f"races-{os.getpid()}-{time.monotonic_ns()}"
    request.getfixturevalue("s3_client").create_bucket(Bucket=bucket)
    return f"s3://{bucket}/irv2", endpoint


def _take_stale_lease(store, trial: int, me: str, seen: list) -> bool:
    try:  # held, not released: the parent reads who the store says won
        StoreLease(store, f"t{trial}/lease.json", ttl_s=600, holder=me).acquire()
    except LeaseHeld:
        return False
    return True


def _promote(store, trial: int, me: str, seen: list) -> bool:
    """Promote over the current model every worker saw before the start (a later reader that
    finds the winner's record and promotes over it is no race: each has its own gate)."""
    return promote(store, f"t{trial}", _in_service(me), seen[trial]) is not None


def _racer(uri, endpoint, what, me, seen, barrier, results) -> None:
    store = open_store(uri, endpoint)
    attempt = {"lease": _take_stale_lease, "promote": _promote}[what]
    for trial in range(TRIALS):
        barrier.wait(timeout=60)
        results.put((trial, me, attempt(store, trial, me, seen)))


def _race(uri: str, endpoint: str | None, what: str, seen: list) -> dict[int, list[str]]:
    """Run WORKERS processes through TRIALS trials of *what*; return each trial's winners."""
    ctx = mp.get_context("spawn")  # a fresh interpreter: nothing inherited from pytest's threads
    barrier, results = ctx.Barrier(WORKERS), ctx.Queue()
    args = [(uri, endpoint, what, f"w{i}", seen, barrier, results) for i in range(WORKERS)]
    procs = [ctx.Process(target=_racer, args=a, daemon=True) for a in args]
    for p in procs:
        p.start()
    rows = [results.get(timeout=120) for _ in range(TRIALS * WORKERS)]
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    winners: dict[int, list[str]] = {t: [] for t in range(TRIALS)}
    for trial, me, won in rows:
        if won:
            winners[trial].append(me)
    return winners


def test_of_workers_taking_over_one_stale_lease_exactly_one_wins(store_uri):
    uri, endpoint = store_uri
    store = open_store(uri, endpoint)
    stale = {"holder": "dead-node:1", "expires_at": time.time() - 5}
    for trial in range(TRIALS):
        store.put_bytes(json.dumps(stale).encode(), f"t{trial}/lease.json")
    winners = _race(uri, endpoint, "lease", [])
    assert all(len(w) == 1 for w in winners.values()), winners
    for trial, (winner,) in winners.items():
        record = json.loads(store.get_bytes(f"t{trial}/lease.json"))
        assert record["holder"] == winner  # the one that won is the one the store holds


def test_of_concurrent_promotions_exactly_one_wins(store_uri):
    uri, endpoint = store_uri
    store = open_store(uri, endpoint)
    seen = [promote(store, f"t{t}", _in_service("old"), None).version for t in range(TRIALS)]
    winners = _race(uri, endpoint, "promote", seen)
    assert all(len(w) == 1 for w in winners.values()), winners
    for trial, (winner,) in winners.items():
        in_service = read_current(store, f"t{trial}")[0]
        assert in_service.run_id == winner and in_service.history[0].run_id == "old"


def test_a_folder_keys_versions_never_repeat(tmp_path):
    """Rewrites faster than the clock ticks, and after a delete, never give an old version back:
    a holder of an old version can never overwrite a newer object."""
    store = open_store(str(tmp_path / "store"))
    seen = [store.put_bytes(b"same size", "k").version for _ in range(50)]
    store.delete("k")
    seen.append(store.create(b"same size", "k").version)
    assert len(set(seen)) == len(seen)
    for old in seen[:-1]:
        assert store.create(b"late", "k", replace=old) is None
    assert store.get_bytes("k") == b"same size"


def test_a_writer_whose_lease_was_taken_over_stops_and_names_the_holder(store_uri):
    uri, endpoint = store_uri
    store = open_store(uri, endpoint)
    lease = StoreLease(store, "lease.json", ttl_s=1.5, holder="node-a:1").acquire()
    try:
        lease.confirm()  # held: no false alarm, before a renewal and after one
        time.sleep(0.8)
        lease.confirm()
        # node-a stalled past its TTL; node-b took the lease over (a conditional write)
        taken = {"holder": "node-b:2", "expires_at": time.time() + 60}
        current = store.head("lease.json").version
        assert store.create(json.dumps(taken).encode(), "lease.json", replace=current)
        with pytest.raises(LeaseLost, match="node-b:2"):
            lease.confirm()  # before a publish: read afresh, at once
        with pytest.raises(LeaseLost, match="node-b:2"):
            lease.check()  # ...and from then on the cheap check says so too
    finally:
        lease.release()
    assert json.loads(store.get_bytes("lease.json"))["holder"] == "node-b:2"  # left alone


def test_the_heartbeat_finds_a_lost_lease_without_being_asked(tmp_path):
    store = open_store(str(tmp_path / "store"))
    lease = StoreLease(store, "lease.json", ttl_s=0.9, holder="node-a:1").acquire()
    taken = {"holder": "node-b:2", "expires_at": time.time() + 60}
    store.create(json.dumps(taken).encode(), "lease.json", replace=store.head("lease.json").version)
    deadline = time.monotonic() + 10
    while lease._lost is None and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(LeaseLost, match="node-b:2"):
        lease.check()
    lease.release()
    assert store.head("lease.json") is not None


def test_a_fenced_off_mirror_writes_nothing(tmp_path):
    store = open_store(str(tmp_path / "store"))
    errors: list[str] = []

    def fence() -> None:
        raise LeaseLost("lost its lease; now held by node-b:2")

    ckpt = tmp_path / "irv2-e1-s2.ckpt"
    ckpt.write_bytes(os.urandom(1000))
    Path(f"{ckpt}.sha256").write_text("x\n")
    mirror = Mirror(store, "runs/r", errors.append, fence)
    mirror.upload(ckpt, "checkpoints/irv2-e1-s2.ckpt")
    mirror.close()
    assert store.list("") == []
    assert errors and "node-b:2" in errors[0]


@pytest.mark.slow
def test_a_training_whose_lease_is_taken_over_stops_writing(smoke_mindrecord, tmp_path):
    """The real trainer: once another worker holds the run's lease, nothing more of this one
    reaches the store, no summary marks its run complete, and it fails naming the holder."""
    from support.training import smoke_args

    data, store_dir, run = smoke_mindrecord, tmp_path / "store", tmp_path / "run"
    cmd = [sys.executable, "-m", "irv2_core", "train", "--data", str(data), "--out", str(run),
           *smoke_args(), "--mirror-uri", str(store_dir)]  # fmt: skip
    env = {**os.environ, "IRV2_LEASE_TTL_S": "3"}  # renewals every second
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    store = open_store(str(store_dir))
    deadline = time.monotonic() + 120
    while (held := store.head("lease.json")) is None and proc.poll() is None:
        assert time.monotonic() < deadline, "the training never took its lease"
        time.sleep(0.05)
    assert held is not None, proc.communicate()[1][-3000:]
    taken = {"holder": "node-b:77", "expires_at": time.time() + 600}
    assert store.create(json.dumps(taken).encode(), "lease.json", replace=held.version)
    before = {o.key: o.version for o in store.list("")}
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, err[-3000:]
    assert "node-b:77" in err and "lost its lease" in err
    assert {o.key: o.version for o in store.list("")} == before  # not one write after the takeover
    assert not (run / "train_summary.json").exists()
    assert json.loads(store.get_bytes("lease.json"))["holder"] == "node-b:77"


def test_preflight_refuses_a_folder_whose_locks_stay_on_one_host(tmp_path, monkeypatch):
    """An NFS mount with ``nolock`` would let two hosts both win: refused before any stage.
    (No NFS server here: the mount table entry is the injected fault.)"""
    from irv2_core.storage import folder_cas

    monkeypatch.setattr(folder_cas, "_mount_of", lambda _: ("nfs", "rw,relatime,vers=3,nolock"))
    with pytest.raises(Irv2Error, match=r"NFS mounted with nolock.*s3://"):
        open_store(str(tmp_path / "store")).check_writable()
    monkeypatch.setattr(folder_cas, "_mount_of", lambda _: ("nfs4", "rw,vers=4.2,hard"))
    open_store(str(tmp_path / "store")).check_writable()  # NFSv4's locks are the server's


def test_the_mount_table_is_read_for_the_folders_own_mount(tmp_path):
    from irv2_core.storage.folder_cas import _mount_of

    fstype, options = _mount_of(tmp_path)
    assert fstype and "r" in options  # e.g. ("ext4", "rw,relatime,rw,...")
    assert _mount_of(Path("/proc/self"))[0] == "proc"


def test_preflight_refuses_an_s3_store_that_ignores_conditional_writes(
    s3_server, s3_client, monkeypatch
):
    """The JuiceFS S3 gateway accepts If-None-Match and overwrites anyway: refused, saying why.
    (The real server honours it; dropping the condition on the way is the injected fault.)"""
    from irv2_core.storage.s3store import S3Store

    s3_client.create_bucket(Bucket="ignores-conditions")
    store = open_store("s3://ignores-conditions/irv2", endpoint_url=s3_server)
    store.check_writable()
    real_put = S3Store._put
    monkeypatch.setattr(
        S3Store, "_put", lambda self, data, key, _cond: real_put(self, data, key, {})
    )
    with pytest.raises(Irv2Error, match="ignores conditional writes"):
        store.check_writable()

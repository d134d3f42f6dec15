"""The store's guarantees tested the way they break: several processes at the same instant, many
trials, on a folder store and on the S3 server; and a writer whose lease was taken stops.

Each race starts its worker processes once; a barrier releases them together for every trial.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import time
from pathlib import Path

import pytest

from irv2_core.promotion import promote, read_current
from irv2_core.storage import open_store
from irv2_core.storage.lease import LeaseHeld, LeaseLost, StoreLease
from irv2_core.storage.mirror import Mirror

TRIALS, WORKERS = 20, 4


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
    return promote(store, f"t{trial}", {"run_id": me}, seen[trial]) is not None


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
    seen = [promote(store, f"t{t}", {"run_id": "old"}, None).version for t in range(TRIALS)]
    winners = _race(uri, endpoint, "promote", seen)
    assert all(len(w) == 1 for w in winners.values()), winners
    for trial, (winner,) in winners.items():
        assert read_current(store, f"t{trial}")[0]["run_id"] == winner


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

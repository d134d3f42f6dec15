"""One writer per run in the object store: a live holder's lease is waited out only when asked
(``--wait-for-lock``), on the real local-folder store."""

from __future__ import annotations

import json
import socket
import time

import pytest

from irv2_core.cli import main as cli_main
from irv2_core.errors import EXIT_BAD_INPUT
from irv2_core.storage.lease import LeaseHeld, StoreLease
from irv2_core.storage.store import LocalStore

# a worker in another pod: its pid means nothing here, so only its expiry can free the lease
OTHER_POD = "train-pod-7:4194999"
ELSEWHERE = {"host": socket.gethostname(), "pidns": "pid:[4026530000]", "boot": "another-boot"}


def _held_elsewhere(store: LocalStore, key: str, for_s: float) -> None:
    """The lease record of a worker in another pid namespace that stopped renewing it."""
    record = {"holder": OTHER_POD, "expires_at": time.time() + for_s, "origin": ELSEWHERE}
    store.put_bytes(json.dumps(record).encode(), key)


def _holder(store: LocalStore, key: str) -> str:
    return json.loads(store.get_bytes(key))["holder"]


def test_a_lease_from_another_pod_fails_fast_unless_waited_out(tmp_path):
    """Without waiting, the second worker fails naming the holder; asked to wait longer than
    the lease has left, it takes the lease over once the holder's expiry passes."""
    store = LocalStore(tmp_path / "bucket")
    _held_elsewhere(store, "runs/r1/lease.json", for_s=1.5)
    lease = StoreLease(store, "runs/r1/lease.json", what="training run", ttl_s=30)
    with pytest.raises(LeaseHeld, match=OTHER_POD):
        lease.acquire(wait_s=0)
    assert _holder(store, "runs/r1/lease.json") == OTHER_POD
    lease.acquire(wait_s=20, poll_s=0.1)
    try:
        assert _holder(store, "runs/r1/lease.json") == lease.holder != OTHER_POD
    finally:
        lease.release()
    assert store.head("runs/r1/lease.json") is None


def test_wait_for_lock_reaches_the_runs_lease(tmp_path, capsys):
    """``irv2 train --wait-for-lock`` waits out another pod's lease on the run in the store: with
    0 it fails naming the holder; with enough seconds it gets past the lease to the next check
    (here the data folder, which is empty, so nothing is trained) and releases the lease."""
    store = LocalStore(tmp_path / "bucket")
    (tmp_path / "data").mkdir()
    argv = ["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "run")]
    argv += ["--mirror-uri", str(tmp_path / "bucket")]
    _held_elsewhere(store, "lease.json", for_s=600)
    assert cli_main([*argv, "--wait-for-lock", "0"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert OTHER_POD in err and "training run" in err

    _held_elsewhere(store, "lease.json", for_s=1.5)
    assert cli_main([*argv, "--wait-for-lock", "20"]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert OTHER_POD not in err and "neither classes.json" in err  # past the lease
    assert store.head("lease.json") is None


def test_the_train_task_waits_out_a_dead_workers_lease(tmp_path):
    """With a store, the train task's command waits longer than a lease lives, so a retry after
    a worker died proceeds once its lease expires instead of failing on it."""
    from irv2_core.cli import build_parser
    from irv2_core.storage.lease import DEFAULT_TTL_S
    from irv2_core.training.command import train_command

    run = tmp_path / "runs" / "run-1"
    command, _ = train_command("mr", run, run / "c.yaml", {}, {"uri": str(tmp_path / "bucket")})
    assert command[1:3] == ["-m", "irv2_core"]
    args = build_parser("train").parse_args(command[3:])
    assert args.wait_for_lock > DEFAULT_TTL_S
    local, _ = train_command("mr", run, run / "c.yaml", {}, None)  # no store: no lease to wait on
    assert build_parser("train").parse_args(local[3:]).wait_for_lock == 0

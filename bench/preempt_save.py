"""What a preempted pod needs its grace period for: saving the full-size IRv2 train cell
(weights, BN statistics, optimizer moments: the recovery checkpoint SIGTERM writes) and uploading
it to an S3 server through the run's mirror, as ``training.preempt`` does.

Builds the zoo recipe's network (1000 classes) on this machine's CPU, then times, best of N
rounds: ``CheckpointStore.save`` (write, rename, sha256) and the mirror's upload (verified PUT
and sidecar) to a local SeaweedFS server (tests/support/seaweedfs.py) or ``--endpoint-url``.
Prints a table. Set ``terminationGracePeriodSeconds`` (the Kubernetes job variable
``termination_grace_period_seconds``) above save + upload on your own storage, with room.

    AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s python bench/preempt_save.py --rounds 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import boto3
from data_throughput import start_s3

from irv2_core.config import load_config
from irv2_core.storage import open_store
from irv2_core.storage.mirror import Mirror
from irv2_core.training.checkpoints import CheckpointStore
from irv2_core.training.distributed import DistInfo
from irv2_core.training.recipe import lr_schedule
from irv2_core.training.train import _build


def _rounds(cfg, cell, endpoint: str, rounds: int) -> list[tuple[float, float, int]]:
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="bench-preempt"
    )
    store = open_store("s3://bench-preempt/runs/run-bench", endpoint_url=endpoint)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        mirror = Mirror(store, "", print, None)
        checkpoints = CheckpointStore(Path(tmp), cfg, DistInfo(), mirror)
        for r in range(rounds):
            t0 = time.perf_counter()
            mirror_upload, checkpoints.mirror = checkpoints.mirror, None  # time the save alone
            path = checkpoints.save(cell, 1, 10 + r, recovery=True)
            saved = time.perf_counter() - t0
            checkpoints.mirror = mirror_upload
            t0 = time.perf_counter()
            mirror.upload(path, path.relative_to(Path(tmp)).as_posix())
            checkpoints.flush()
            out.append((saved, time.perf_counter() - t0, path.stat().st_size))
        checkpoints.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--endpoint-url", help="an S3 endpoint (default: a local SeaweedFS)")
    args = ap.parse_args()
    cfg = load_config("zoo-ascend-8p", overrides={"device_target": "CPU", "amp_level": "O0"})
    _, _, cell = _build(cfg, lr_schedule(cfg, 100))
    server = None if args.endpoint_url else start_s3()
    try:
        rows = _rounds(cfg, cell, args.endpoint_url or server.endpoint, args.rounds)
    finally:
        if server is not None:
            server.stop()
    size = rows[0][2] / 2**20
    print(f"\nrecovery checkpoint: {size:.0f} MiB (train cell: weights, BN, optimizer moments)")
    print(f"{'round':>5} | {'save s':>7} | {'upload s':>8} | {'MiB/s up':>8}")
    for i, (saved, uploaded, nbytes) in enumerate(rows):
        print(f"{i:>5} | {saved:7.2f} | {uploaded:8.2f} | {nbytes / 2**20 / uploaded:8.0f}")
    best_save, best_up = min(r[0] for r in rows), min(r[1] for r in rows)
    print(f" best | {best_save:7.2f} | {best_up:8.2f} | save + upload {best_save + best_up:.1f} s")


if __name__ == "__main__":
    main()

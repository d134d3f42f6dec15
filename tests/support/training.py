"""A tiny real MindRecord folder (via ``irv2 convert``) and the smoke config the train/evaluate
tests share, so that every test compiles the same few graphs (cached across processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from irv2_core.config import Config, load_config
from support.images import CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, make_mindrecord

__all__ = [  # make_mindrecord and the set's sizes are support.images', re-exported
    "CLASSES",
    "SMOKE",
    "TRAIN_PER_CLASS",
    "VAL_PER_CLASS",
    "assert_ranks_hold_equal_weights",
    "assert_two_ranks_trained_one_model",
    "first_batches",
    "make_mindrecord",
    "run_cli",
    "smoke_args",
    "smoke_config",
]

# 2 epochs x 2 steps of 4 images, no dropout (bit-exact resume), eval batches 4+4+1 (padded).
SMOKE = dict(
    batch_size=4,
    epoch_size=2,
    max_steps_per_epoch=2,
    drop_rate=0.0,
    keep_checkpoint_max=1,
    eval_batch_size=4,
    work_nums=2,
)


# The flow tests' recipe: 3 epochs x 2 steps of 4 images; a checkpoint every epoch; evaluation
# only at the end.
FLOW_SMOKE = dict(
    batch_size=4,
    epoch_size=3,
    max_steps_per_epoch=2,
    drop_rate=0.0,
    keep_checkpoint_max=1,
    eval_batch_size=4,
    eval_every_epochs=0,
    work_nums=2,
)


def smoke_args() -> list[str]:
    """The same settings as ``irv2`` command-line options."""
    sets = [f"{k}={v}" for k, v in SMOKE.items()]
    return ["--preset", "cpu-smoke", *[a for s in sets for a in ("--set", s)]]


def run_cli(*args: str, timeout: int = 600, env: dict[str, str] | None = None):
    """``python -m irv2_core ARGS`` in a fresh process (as the Prefect task runs it), with *env*
    added to this process's environment."""
    cmd = [sys.executable, "-m", "irv2_core", *args]
    full = {**os.environ, **env} if env else None
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full)


def smoke_config(**overrides) -> Config:
    """The cpu-smoke preset with the shared test settings (plus *overrides*)."""
    return load_config("cpu-smoke", overrides={**SMOKE, **overrides})


def epoch_batch_digests(run: Path, data_dir: Path, epoch: int) -> list[str]:
    """sha256 of each batch's images of *epoch* (1-based) as one process trains that epoch from
    its start, with the run's config: the stream a resumed run must continue exactly."""
    import hashlib

    from irv2_core.training.distributed import DistInfo
    from irv2_core.training.train import epoch_batches

    cfg = load_config(path=run / "config.yaml")
    batches = epoch_batches(cfg, data_dir, DistInfo(), epoch - cfg.start_epoch, 0)
    return [hashlib.sha256(images.asnumpy().tobytes()).hexdigest() for images, _ in batches]


def first_batches(run: Path, rank: int) -> list[dict]:
    """Rows of ``first_batches/rank{rank}.jsonl``: what that rank trained on first per epoch."""
    lines = (run / "first_batches" / f"rank{rank}.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_two_ranks_trained_one_model(run: Path, ckpt: str = "irv2-e1-s2.ckpt") -> None:
    """Two data-parallel ranks, one epoch: each trained on its own data (their first batches
    differ), yet their checkpoints *ckpt* hold the same trainable weights (averaged gradients).
    ``is_save_on_master`` is False (the zoo's value), so rank 1 keeps its own checkpoints."""
    seen = [first_batches(run, rank) for rank in (0, 1)]
    where = [[(r["epoch"], r["step"], r["rank"], r["rank_size"]) for r in rows] for rows in seen]
    assert where == [[(1, 1, 0, 2)], [(1, 1, 1, 2)]]  # epoch 1 from step 1, on both ranks
    assert seen[0][0]["images_sha256"] != seen[1][0]["images_sha256"], "both ranks read one shard"
    assert_ranks_hold_equal_weights(run, ckpt)


def assert_ranks_hold_equal_weights(run: Path, ckpt: str, rank1_run: Path | None = None) -> None:
    """Rank 0's and rank 1's checkpoints *ckpt* hold the same trainable weights (rank 1's in
    *rank1_run* when its node kept a run folder of its own)."""
    import numpy as np

    from irv2_core.models.ckpt_io import read_checkpoint  # counts reclaimable page cache

    rank0 = read_checkpoint(run / "checkpoints" / ckpt)
    rank1 = read_checkpoint((rank1_run or run) / "checkpoints" / "rank1" / ckpt)
    trainable = [k for k in rank0 if k.endswith((".weight", ".gamma", ".beta", ".bias"))]
    trainable = [k for k in trainable if not k.startswith(("moment.", "mean_square."))]
    assert len(trainable) == 694
    for name in trainable:
        np.testing.assert_array_equal(rank0[name].asnumpy(), rank1[name].asnumpy(), err_msg=name)

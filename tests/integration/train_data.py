"""A tiny real MindRecord folder (via ``irv2 convert``) and the smoke config the train/evaluate
tests share, so that every test compiles the same few graphs (cached across processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import write_image_tree

from irv2_core.config import Config, load_config
from irv2_core.data.convert import convert

TRAIN_PER_CLASS, VAL_PER_CLASS, CLASSES = 8, 3, 3

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


def make_mindrecord(root: Path) -> Path:
    """``root/mr``: train (3 classes x 8) and val (3 x 3) MindRecord + classes.json."""
    write_image_tree(root / "images", CLASSES, TRAIN_PER_CLASS, seed=0, split="train")
    write_image_tree(root / "images", CLASSES, VAL_PER_CLASS, seed=1, split="val")
    convert(root / "images", root / "mr")
    return root / "mr"


def smoke_args() -> list[str]:
    """The same settings as ``irv2`` command-line options."""
    sets = [f"{k}={v}" for k, v in SMOKE.items()]
    return ["--preset", "cpu-smoke", *[a for s in sets for a in ("--set", s)]]


def run_cli(*args: str, timeout: int = 600):
    """``python -m irv2_core ARGS`` in a fresh process (as the Prefect task runs it)."""
    cmd = [sys.executable, "-m", "irv2_core", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def smoke_config(**overrides) -> Config:
    """The cpu-smoke preset with the shared test settings (plus *overrides*)."""
    return load_config("cpu-smoke", overrides={**SMOKE, **overrides})

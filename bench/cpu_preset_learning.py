"""Does the ``cpu`` preset learn from scratch on a small real set? Top-1 after every epoch.

The set: the first 40 images of each of the digit classes 0-4 from ``make_digits_dataset``
(scikit-learn's bundled handwritten digits rendered as 80 px RGB JPEGs; nothing is downloaded),
200 images, split by ``irv2 convert``'s default 20 % per class into 160 train / 40 val. Every
configuration trains in a fresh ``irv2 train`` process (the real CLI, GRAPH mode, fp32), evaluates
on the val split after each epoch (``eval_every_epochs=1``) and reports the loss of the first and
last logged steps and top-1 per epoch. Issue 11's goal for the preset: >= 85 % top-1 within 5
epochs. Timings are reported for orientation only (a shared machine makes them noisy).

    python bench/cpu_preset_learning.py                         # the cpu preset, seeds 1 2 3
    python bench/cpu_preset_learning.py --seeds 1 --set lr_max=0.004 --set batch_size=16
    python bench/cpu_preset_learning.py --preset cpu-smoke --classes 10 --per-class 180
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_data(root: Path, classes: int, per_class: int) -> Path:
    """Digit classes ``0..classes-1``, *per_class* each, converted to MindRecord under *root*."""
    from irv2_core.data.convert import convert
    from irv2_core.data.digits import make_digits_dataset

    digits = make_digits_dataset(root / "digits", per_class=per_class)
    images = root / "images"
    for c in digits["classes"][:classes]:
        shutil.copytree(root / "digits" / c, images / c)
    convert(images, root / "mr")
    return root / "mr"


def train_once(data: Path, out: Path, preset: str, sets: list[str], seed: int) -> dict:
    """One ``irv2 train`` process; returns its losses, per-epoch top-1 and wall time."""
    args = ["--set", f"seed={seed}", "--set", "eval_every_epochs=1"]
    for item in sets:
        args += ["--set", item]
    cmd = [sys.executable, "-m", "irv2_core", "train", "--data", str(data), "--out", str(out)]
    env = {**os.environ, "MS_COMPILER_CACHE_ENABLE": "0", "GLOG_v": "3"}
    start = time.perf_counter()
    done = subprocess.run(
        [*cmd, "--preset", preset, *args], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["?"], "wall_s": wall}
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    config = (out / "config.yaml").read_text()
    return {
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "top1": [r["top1"] for r in evals],
        "steps": rows[-1]["step"] if rows else 0,
        "wall_s": wall,
        "config": config,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--classes", type=int, default=5)
    p.add_argument("--per-class", type=int, default=40)
    p.add_argument("--keep", help="keep the data and runs in this folder")
    args = p.parse_args()

    root = Path(args.keep or tempfile.mkdtemp(prefix="irv2-cpu-preset-"))
    data = make_data(root, args.classes, args.per_class)
    classes = json.loads((data / "classes.json").read_text())
    print(f"data: {len(classes)} digit classes x {args.per_class} images, {data}", flush=True)
    print(f"preset {args.preset}, --set {' '.join(args.set) or '(none)'}", flush=True)
    print("| seed | steps | loss first → last | top-1 per epoch (%) | best | wall (s) |")
    print("|---|---|---|---|---|---|")
    for seed in args.seeds:
        r = train_once(data, root / f"run-seed{seed}", args.preset, args.set, seed)
        if "error" in r:
            print(f"| {seed} | failed: {r['error'][0]} | | | | {r['wall_s']:.0f} |", flush=True)
            continue
        per_epoch = " / ".join(f"{t * 100:.1f}" for t in r["top1"])
        best = max(r["top1"]) * 100 if r["top1"] else float("nan")
        print(
            f"| {seed} | {r['steps']} | {r['loss_first']:.3f} → {r['loss_last']:.3f} | "
            f"{per_epoch} | {best:.1f} | {r['wall_s']:.0f} |",
            flush=True,
        )
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time to the first training step on a cold, a fresh and a warm worker (issue 24's goal: a fresh
worker within 1.2x a warm one).

- cold: nothing cached anywhere (an empty store and an empty local compile cache): compiles, then
  publishes its scoped compile cache to the store after the first step;
- fresh: a new worker (empty cache folder, empty run folder) on the same store: what a retry on
  another node sees; fetches the compile cache before compiling;
- warm: the cold worker again (its own cache folder).

Each is ``irv2 train ... --stop-after-steps 1 --compile-cache-uri`` in its own process against a
local SeaweedFS server (tests/support/seaweedfs.py), as the train task starts it. Printed: seconds
from the process start to its first step (``first_step`` row of metrics.jsonl), the same counted
from the training's setup (imports excluded) and the cache's state. fresh and warm alternate in
order each round; compare only numbers from one run.

    AWS_ACCESS_KEY_ID=k AWS_SECRET_ACCESS_KEY=s python bench/first_step.py --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
from data_throughput import start_s3

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.images import make_mindrecord  # noqa: E402

SETTINGS = ["--set", "batch_size=4", "--set", "max_steps_per_epoch=2", "--set", "work_nums=2"]


def _train(data: Path, out: Path, cache: Path, store_uri: str, endpoint: str, preset: str):
    env = {**os.environ, "MS_COMPILER_CACHE_ENABLE": "1", "IRV2_COMPILER_CACHE_ENABLE": "1",
           "MS_COMPILER_CACHE_PATH": str(cache)}  # fmt: skip
    cmd = [sys.executable, "-m", "irv2_core", "train", "--data", str(data), "--out", str(out),
           "--preset", preset, *SETTINGS, "--stop-after-steps", "1", "--compile-cache-uri",
           store_uri, "--endpoint-url", endpoint]  # fmt: skip
    began = time.time()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"irv2 train failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    (row,) = [r for r in rows if r.get("kind") == "first_step"]
    return row["time"] - began, row["s"], row["compile_cache"]


def _round(i: int, data: Path, tmp: Path, endpoint: str, preset: str) -> list[tuple]:
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=f"first-step-{i}")
    store, rows = f"s3://first-step-{i}/irv2", []
    machine = {k: tmp / f"r{i}-{k}" for k in ("cold", "fresh")}
    rows.append(("cold", i, *_train(data, machine["cold"] / "run", machine["cold"] / "cache",
                                    store, endpoint, preset)))  # fmt: skip
    order = ["fresh", "warm"] if i % 2 == 0 else ["warm", "fresh"]
    for kind in order:
        home = machine["fresh" if kind == "fresh" else "cold"]
        rows.append((kind, i, *_train(data, home / f"run-{kind}", home / "cache", store,
                                      endpoint, preset)))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--preset", default="cpu-smoke", help="cpu-smoke: 75 px; cpu: 299 px")
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = start_s3()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            data = make_mindrecord(Path(tmp) / "mr")
            rows = [r for i in range(args.rounds)
                    for r in _round(i, data, Path(tmp), server.endpoint, args.preset)]  # fmt: skip
    finally:
        server.stop()
    print("\n| worker | round | to first step, from process start (s) | from setup (s) | cache |")
    print("|---|---|---|---|---|")
    for kind, i, wall, inner, state in rows:
        print(f"| {kind} | {i} | {wall:.1f} | {inner:.1f} | {state} |")
    med = {k: statistics.median(r[2] for r in rows if r[0] == k) for k in ("cold", "fresh", "warm")}
    print(f"\nmedian from process start: cold {med['cold']:.1f} s, fresh {med['fresh']:.1f} s, "
          f"warm {med['warm']:.1f} s; fresh/warm {med['fresh'] / med['warm']:.2f}x "
          "(goal <= 1.2x)")  # fmt: skip


if __name__ == "__main__":
    main()

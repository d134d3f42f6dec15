"""Publishing to object storage, beside the AWS CLI on the same endpoint; and what mirroring
checkpoints costs a training run.

1. A checkpoint set (default 3 files, 600 MB) published with ``irv2_core.storage.publish``
   (verified: server-checked SHA-256, commit marker last) against ``aws s3 cp --recursive`` (and
   ``rclone copy`` where rclone is installed) of the same folder, alternating, best of N rounds
   each, to a local SeaweedFS server in its own process (tests/support/seaweedfs.py; or
   ``--endpoint-url``). Prints MB/s and the ratios (goal: >= 1.0x the CLI).
2. ``--train DATA_DIR``: ``irv2 train`` on a MindRecord folder without and with ``--mirror-uri``
   (alternating), steady img/s from ``train_summary.json``; goal: mirroring <= 3 % slower.
   ``--server-cpus 1 --train-cpus 0`` pins the S3 server and the training to separate cores
   (users' stores run on other machines; on one box the server's CPU would otherwise be counted
   as the mirror's cost).

No timing is asserted anywhere; on a shared machine compare only numbers from one run.
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

import boto3
from data_throughput import rclone_env, start_s3

from irv2_core.storage import open_store
from irv2_core.storage.publish import folder_files, publish_files


def make_set(root: Path, files: int, mb: int) -> int:
    """*files* random files of *mb* MB under *root*; total bytes."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        with open(root / f"irv2-e{i}-s{i}.ckpt", "wb") as fh:
            for _ in range(mb):
                fh.write(os.urandom(1 << 20))
    return files * mb << 20


def bench_publish(endpoint: str, folder: Path, total: int, rounds: int) -> list[tuple]:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket="bench-store")
    store = open_store("s3://bench-store/irv2", endpoint_url=endpoint)
    files = folder_files(folder)
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    cli = ["aws", "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", endpoint]
    results: dict[str, list[float]] = {"irv2 publish (verified)": [], "aws s3 cp --recursive": []}
    results["rclone copy"] = []
    for r in range(rounds):
        t0 = time.perf_counter()
        publish_files(store, f"runs/r{r}", files)
        results["irv2 publish (verified)"].append(time.perf_counter() - t0)
        if shutil.which("aws"):
            t0 = time.perf_counter()
            subprocess.run([*cli, str(folder), f"s3://bench-store/cli/r{r}"], check=True, env=env)
            results["aws s3 cp --recursive"].append(time.perf_counter() - t0)
        if shutil.which("rclone"):
            t0 = time.perf_counter()
            cmd = ["rclone", "copy", str(folder), f"bench:bench-store/rclone/r{r}"]
            subprocess.run(cmd, check=True, env=rclone_env(endpoint))
            results["rclone copy"].append(time.perf_counter() - t0)
    rows = [(name, total / min(t) / 1e6) for name, t in results.items() if t]
    return rows


def pin_process(pid: int, cpus: set[int]) -> None:
    """Pin every thread of process *pid* (threads it starts later inherit it) to *cpus*."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(tid), cpus)


def bench_train(
    data: Path, work: Path, endpoint: str, rounds: int, sets: list[str], cpus: set[int] | None
) -> list[tuple]:
    """``irv2 train`` (the cpu preset, plus *sets*; on *cpus* if given) without and with
    mirroring, alternating and swapping the order each round; best steady img/s and best wall
    time of each, and every round's img/s."""
    base = [sys.executable, "-m", "irv2_core", "train", "--data", str(data), "--preset", "cpu"]
    base += [a for s in sets for a in ("--set", s)]
    runs: dict[str, list[tuple[float, float]]] = {"no mirror": [], "mirror to S3": []}
    for r in range(rounds):
        variants = [
            ("no mirror", []),
            ("mirror to S3", ["--mirror-uri", f"s3://bench-store/train/r{r}",
                              "--endpoint-url", endpoint]),
        ]  # fmt: skip
        for name, extra in variants if r % 2 == 0 else variants[::-1]:
            out = work / f"{name.replace(' ', '-')}-{r}"
            began = time.perf_counter()
            pin = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
            subprocess.run([*base, "--out", str(out), *extra], check=True,
                           stdout=subprocess.DEVNULL, preexec_fn=pin)  # fmt: skip
            wall = time.perf_counter() - began
            speed = json.loads((out / "train_summary.json").read_text())["img_per_s"]
            runs[name].append((speed, wall))
            shutil.rmtree(out)
    return [(name, max(s for s, _ in v), min(w for _, w in v), v) for name, v in runs.items()]


def _cpus(text: str) -> set[int]:
    return {int(c) for c in text.split(",")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=3)
    p.add_argument("--mb", type=int, default=200, help="size of each file in MB")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (else a local SeaweedFS)")
    p.add_argument("--train", type=Path, default=None, help="MindRecord folder: also bench train")
    p.add_argument(
        "--train-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for the training runs (e.g. save_checkpoint_epochs=1)",
    )
    p.add_argument("--server-cpus", type=_cpus, default=None, help="pin the S3 server, e.g. 1")
    p.add_argument("--train-cpus", type=_cpus, default=None, help="pin the training, e.g. 0")
    args = p.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")  # before start_s3: its identity
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = None if args.endpoint_url else start_s3()
    endpoint = args.endpoint_url or server.endpoint
    if server is not None and args.server_cpus:
        pin_process(server.proc.pid, args.server_cpus)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            total = make_set(Path(tmp) / "set", args.files, args.mb)
            rows = bench_publish(endpoint, Path(tmp) / "set", total, args.rounds)
            print(f"\npublishing {total / 1e6:.0f} MB ({args.files} files), best of {args.rounds}")
            print("| method | MB/s |\n|---|---|")
            for name, mbs in rows:
                print(f"| {name} | {mbs:.1f} |")
            for name, mbs in rows[1:]:
                print(f"ratio irv2 / {name}: {rows[0][1] / mbs:.2f}x (goal >= 1.0x the aws cli)")
            if args.train:
                train = bench_train(args.train, Path(tmp), endpoint, args.rounds,
                                    args.train_set, args.train_cpus)  # fmt: skip
                print(f"\ntraining on CPUs {args.train_cpus or 'all'}, "
                      f"S3 server on CPUs {args.server_cpus or 'all'}")  # fmt: skip
                print("| training | steady img/s (best) | wall s (best) | img/s per round |")
                print("|---|---|---|---|")
                for name, speed, wall, each in train:
                    rounds = ", ".join(f"{s:.2f}" for s, _ in each)
                    print(f"| {name} | {speed:.2f} | {wall:.1f} | {rounds} |")
                slower = 1 - train[1][1] / train[0][1]
                longer = train[1][2] / train[0][2] - 1
                print(f"mirroring costs {slower * 100:.1f} % of steady img/s and "
                      f"{longer * 100:.1f} % of wall time (goal <= 3 %)")  # fmt: skip
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

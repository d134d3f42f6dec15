"""What mirroring one checkpoint costs the training node's CPU, and the S3 server's.

``bench/store_throughput.py --train`` measures mirroring as lost img/s of a real training run;
on a 2-core machine that also runs the S3 server, one run to the next differs by more than the
effect (issue 24: -0.1 % and 13.2 % in two runs of the same day). This measures the cost
itself: CPU seconds of this process (the uploader's threads) and of the server per mirrored
checkpoint, for a checkpoint-sized file (default 600 MB: IRv2's weights and optimizer
moments) and its ``.sha256`` sidecar, with nothing else running in the process:

- ``Mirror`` as training uses it (the sidecar's sha256 travels with the upload);
- the same upload hashing the file again first (what the mirror did before 2026-12-06).

Variants alternate; medians of N rounds. Divide the client's CPU seconds by (cores x seconds
between checkpoints) for its share of a training node.

    python bench/mirror_cpu.py [--mb 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import boto3
from data_throughput import start_s3

from irv2_core.runtime.io import sha256_file
from irv2_core.storage import open_store
from irv2_core.storage.mirror import Mirror


def server_cpu_s(pid: int) -> float:
    """utime + stime of process *pid* in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_checkpoint(folder: Path, mb: int) -> Path:
    ckpt = folder / "irv2-e1-s1.ckpt"
    with open(ckpt, "wb") as fh:
        for _ in range(mb):
            fh.write(os.urandom(1 << 20))
    ckpt.with_name(ckpt.name + ".sha256").write_text(sha256_file(ckpt) + "\n")
    return ckpt


def upload_mirror(store, ckpt: Path, rel: str) -> None:
    mirror = Mirror(store, "bench", on_error=print)
    mirror.upload(ckpt, rel)
    mirror.close()


def upload_hashing_again(store, ckpt: Path, rel: str) -> None:
    sidecar = ckpt.with_name(ckpt.name + ".sha256")
    store.put_file(ckpt, f"bench/{rel}")  # no digest given: put_file hashes the file
    store.put_file(sidecar, f"bench/{rel}.sha256")


def measure(fn, store, ckpt: Path, rel: str, server_pid: int) -> tuple[float, float, float]:
    cpu0, srv0, wall0 = time.process_time(), server_cpu_s(server_pid), time.perf_counter()
    fn(store, ckpt, rel)
    return (time.process_time() - cpu0, server_cpu_s(server_pid) - srv0,
            time.perf_counter() - wall0)  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=600)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    server = start_s3()
    variants = {"Mirror (sidecar sha256)": upload_mirror, "hashing again": upload_hashing_again}
    rows: dict[str, list[tuple]] = {name: [] for name in variants}
    try:
        boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1").create_bucket(
            Bucket="bench-mirror"
        )
        store = open_store("s3://bench-mirror/irv2", endpoint_url=server.endpoint)
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = make_checkpoint(Path(tmp), args.mb)
            for r in range(args.rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    rows[name].append(measure(variants[name], store, ckpt, f"r{r}/{name[:4]}",
                                              server.proc.pid))  # fmt: skip
    finally:
        server.stop()
    print(f"\none {args.mb} MB checkpoint mirrored, medians of {args.rounds} alternating rounds")
    print("| variant | client CPU s | server CPU s | wall s |\n|---|---|---|---|")
    for name, got in rows.items():
        cpu, srv, wall = (statistics.median(col) for col in zip(*got, strict=True))
        print(f"| {name} | {cpu:.2f} | {srv:.2f} | {wall:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

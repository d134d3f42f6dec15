"""Data-stage throughput: staging vs. baselines, conversion and the train input pipeline.

Builds ImageNet-like photos (~500x375 JPEG, q90, from scikit-learn's two sample photos with random
crops, flips and colour jitter), puts them in S3 (a local SeaweedFS server from
tests/support/seaweedfs.py unless --endpoint-url names another, e.g. MinIO), then measures and
prints one table:

- staging: ``irv2_core.data.stage.stage`` (verified, parallel) against a plain sequential boto3 loop
  (no verification), ``aws s3 sync`` when the AWS CLI is installed and ``rclone copy`` when
  rclone is (``apt-get install rclone``), on the same objects;
- conversion: ``irv2_core.data.convert.convert`` with one checking thread, default and
  --full-decode;
- the train pipeline: MindDataset -> decode -> random-resized-crop 299 -> flip -> colour jitter
  -> CHW uint8 -> batch 32 (``irv2_core.data.datasets.create_dataset``; the network normalises)
  with one worker, alternated with the same pipeline plus the float32 ``Normalize`` it had before
  issue 12, so the two are compared under the same load.

"per core" is images per CPU-second of the whole process (all threads), so it does not depend on
how many cores the machine has. Targets (issue 4): staging >= baseline; conversion >= 1000
img/s per core; train pipeline >= 500 img/s per core.

    python bench/data_throughput.py [--images 600] [--workers 8] [--endpoint-url URL]
                                    [--skip-pipeline]
    python bench/data_throughput.py --only-pipeline [--epochs 4] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

import irv2_core  # noqa: F401  (sets the oneDNN ISA before MindSpore runs an op)

BUCKET = "irv2-bench"
PREFIX = "imagenet-like/"


def make_photos(root: Path, n: int, classes: int = 10, seed: int = 0) -> int:
    """Write *n* ~500x375 JPEGs into ``root/class_k/``; return the total bytes."""
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(a) for a in load_sample_images().images]
    rng = np.random.default_rng(seed)
    total = 0
    for i in range(n):
        src = photos[i % len(photos)]
        w, h = src.size
        scale = rng.uniform(0.5, 1.0)
        cw, ch = int(w * scale), int(h * scale)
        x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
        img = src.crop((x, y, x + cw, y + ch)).resize((500, 375) if i % 4 else (375, 500))
        if rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.7, 1.3))
        # Sensor-like noise brings the files to ImageNet's ~110 KB (clean crops compress to ~50).
        noisy = np.asarray(img, np.float32) + rng.normal(0, 12, (img.height, img.width, 3))
        img = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
        path = root / f"class_{i % classes}" / f"img_{i:05d}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, "JPEG", quality=90)
        total += path.stat().st_size
    return total


def start_s3():
    """A SeaweedFS S3 server (``weed``, a separate process: it does not share our GIL) whose only
    identity is this process's credentials; returns it (``.endpoint``, ``.stop()``)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from support import seaweedfs

    env = os.environ
    return seaweedfs.start({env["AWS_ACCESS_KEY_ID"]: env["AWS_SECRET_ACCESS_KEY"]})


def rclone_env(endpoint: str) -> dict[str, str]:
    """The environment that gives ``rclone`` (Debian's package) a remote ``bench:`` on *endpoint*
    with this process's credentials; no config file."""
    env = os.environ
    # rclone's AWS SDK refuses AWS_CA_BUNDLE with its own HTTP transport ("unable to load
    # custom CA bundle"), and the bench endpoint is plain HTTP anyway
    return {
        **{k: v for k, v in env.items() if k != "AWS_CA_BUNDLE"},
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": env["AWS_ACCESS_KEY_ID"],
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": env["AWS_SECRET_ACCESS_KEY"],
        "RCLONE_CONFIG_BENCH_REGION": env.get("AWS_DEFAULT_REGION", "us-east-1"),
    }


def upload(client, root: Path) -> None:
    import contextlib

    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=BUCKET)
    files = [p for p in sorted(root.rglob("*")) if p.is_file()]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda p: client.put_object(
                    Bucket=BUCKET,
                    Key=PREFIX + p.relative_to(root).as_posix(),
                    Body=p.read_bytes(),
                ),
                files,
            )
        )


def timed(fn) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``fn()``."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def boto3_loop(client, dest: Path) -> None:
    """The baseline: list, then get and write each object in turn; no verification."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=PREFIX)
    for page in pages:
        for obj in page.get("Contents", []):
            path = dest / obj["Key"][len(PREFIX) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read())


def bench_stage(
    endpoint: str, work: Path, n: int, mb: float, workers: int, rounds: int = 1
) -> list[tuple]:
    """The baselines and ``stage`` on the same objects; ``aws s3 sync`` and ``stage`` alternate
    *rounds* times so that both see the same machine load."""
    import boto3

    from irv2_core.data.stage import stage

    client = boto3.client("s3", endpoint_url=endpoint)
    rows = []
    wall, cpu = timed(lambda: boto3_loop(client, work / "loop"))
    rows.append(("stage baseline: boto3 loop, sequential, unverified", n, wall, mb, cpu))
    aws = shutil.which("aws")
    src = f"s3://{BUCKET}/{PREFIX}"
    for r in range(rounds):
        tag = f" [round {r + 1}]" if rounds > 1 else ""
        if aws:
            cmd = [aws, "s3", "sync", src, str(work / f"sync-{r}"), "--only-show-errors"]
            cmd += ["--endpoint-url", endpoint]
            wall, _ = timed(lambda cmd=cmd: subprocess.run(cmd, check=True))
            label = "stage baseline: aws s3 sync (10 threads, unverified)"
            rows.append((label + tag, n, wall, mb, None))  # its CPU is in the child
        if shutil.which("rclone"):
            cmd = ["rclone", "copy", f"bench:{BUCKET}/{PREFIX}", str(work / f"rclone-{r}")]
            cmd += ["--transfers", str(workers), "--checkers", str(2 * workers)]
            wall, _ = timed(
                lambda cmd=cmd: subprocess.run(cmd, check=True, env=rclone_env(endpoint))
            )
            label = f"stage baseline: rclone copy ({workers} transfers, MD5 checked)"
            rows.append((label + tag, n, wall, mb, None))
        dest = work / ("staged" if r == 0 else f"staged-{r}")
        wall, cpu = timed(lambda d=dest: stage(src, d, endpoint_url=endpoint, workers=workers))
        rows.append((f"irv2 stage, {workers} workers, MD5+sha256 verified{tag}", n, wall, mb, cpu))
    wall, cpu = timed(lambda: stage(src, work / "staged", endpoint_url=endpoint, workers=workers))
    rows.append(("irv2 stage again (incremental: nothing to fetch)", n, wall, None, cpu))
    return rows


def bench_convert(data: Path, work: Path, n: int) -> list[tuple]:
    import mindspore.mindrecord  # noqa: F401  (its ~2 s import is not conversion time)

    from irv2_core.data.convert import convert

    rows = []
    for label, kw in [
        ("convert, 1 checking thread", dict(workers=1)),
        ("convert, default threads", dict()),
        ("convert --full-decode, 1 checking thread", dict(workers=1, full_decode=True)),
    ]:
        out = work / f"mr-{len(rows)}"
        wall, cpu = timed(lambda out=out, kw=kw: convert(data, out, **kw))
        rows.append((label, n, wall, None, cpu))
    return rows


def bench_pipeline(mr: Path, epochs: int, rounds: int = 2) -> list[tuple]:
    """The real train pipeline (uint8 out, the network normalises), the same with the float32
    ``Normalize`` it ran before issue 12, and without colour jitter (the costliest op);
    alternated *rounds* times so that each variant sees the same machine load."""
    import mindspore as ms
    import mindspore.dataset as ds
    from mindspore.dataset import transforms, vision

    from irv2_core.config import load_config
    from irv2_core.data.datasets import create_dataset
    from irv2_core.data.transforms import train_transforms
    from irv2_core.models.metadata import EVAL_PROTOCOLS

    cfg = load_config("cpu-smoke", overrides={"image_size": 299, "work_nums": 1, "batch_size": 32})
    p = EVAL_PROTOCOLS[cfg.eval_protocol]
    normalize = vision.Normalize([m * 255.0 for m in p.mean], [x * 255.0 for x in p.std])

    def manual(ops):
        data = ds.MindDataset(str(mr / "train.mindrecord0"), columns_list=["image", "label"])
        data = data.map(operations=ops, input_columns="image", num_parallel_workers=1)
        return data.map(operations=transforms.TypeCast(ms.int32), input_columns="label").batch(32)

    ops = train_transforms(299)
    variants = [
        ("train pipeline, uint8 CHW out (datasets.create_dataset), 1 worker", None),
        ("same + float32 Normalize in the pipeline (before issue 12), 1 worker",
         [*ops[:-1], normalize, ops[-1]]),
        ("uint8, without RandomColorAdjust, 1 worker",
         [op for op in ops if not isinstance(op, vision.RandomColorAdjust)]),
    ]  # fmt: skip
    results: dict[str, list[tuple[int, float, float]]] = {label: [] for label, _ in variants}
    for _round in range(rounds):
        for label, variant_ops in variants:
            ds.config.set_seed(0)
            if variant_ops is None:
                data = create_dataset(mr, "train", cfg, training=True)
            else:
                data = manual(variant_ops)
            count = 0

            def run(data=data):
                nonlocal count
                batches = data.create_tuple_iterator(output_numpy=True, num_epochs=epochs)
                for _epoch in range(epochs):  # each pass over the iterator is one epoch
                    for images, _ in batches:
                        assert images.shape[1:] == (3, 299, 299)
                        count += images.shape[0]

            wall, cpu = timed(run)
            results[label].append((count, wall, cpu))
    rows = []
    for label, runs in results.items():
        for i, (count, wall, cpu) in enumerate(runs):
            rows.append((f"{label} [round {i + 1}]", count, wall, None, cpu))
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=600, help="ImageNet-like JPEGs to generate")
    p.add_argument("--workers", type=int, default=8, help="stage workers")
    p.add_argument("--endpoint-url", default=None, help="S3 endpoint (else a local SeaweedFS)")
    p.add_argument("--epochs", type=int, default=4, help="passes of the train pipeline")
    p.add_argument(
        "--rounds", type=int, default=2, help="alternations (aws s3 sync / stage; pipelines)"
    )
    p.add_argument(
        "--only-pipeline",
        action="store_true",
        help="skip staging and S3: convert once, then measure the train pipeline",
    )
    p.add_argument(
        "--skip-pipeline",
        action="store_true",
        help="staging and conversion only (no train pipeline rounds)",
    )
    args = p.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench-key")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    work = Path(tempfile.mkdtemp(prefix="irv2-bench-"))
    server = None
    try:
        total = make_photos(work / "src", args.images)
        mb = total / 1e6
        load = "/".join(f"{x:.1f}" for x in os.getloadavg())
        if args.only_pipeline:
            from irv2_core.data.convert import convert

            convert(work / "src", work / "mr-0", workers=1)
            rows = bench_pipeline(work / "mr-0", args.epochs, args.rounds)
            _print(rows, args.images, mb, total, "not used", load)
            return 0
        endpoint = args.endpoint_url
        if endpoint is None:
            server = start_s3()
            endpoint = server.endpoint
        import boto3

        upload(boto3.client("s3", endpoint_url=endpoint), work / "src")
        rows = bench_stage(endpoint, work, args.images, mb, args.workers, args.rounds)
        rows += bench_convert(work / "staged", work, args.images)
        if not args.skip_pipeline:
            rows += bench_pipeline(work / "mr-0", args.epochs, args.rounds)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    _print(rows, args.images, mb, total, "SeaweedFS (local process)" if server else endpoint, load)
    return 0


def _print(rows, images: int, mb: float, total: int, s3: str, load: str) -> None:
    now = "/".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"\n{images} JPEGs, {mb:.1f} MB ({total / images / 1e3:.0f} KB avg), "
        f"{os.cpu_count()} CPUs, S3: {s3}, load average {load} at start, {now} at the end\n"
    )
    print("| measurement | images | wall s | CPU s | MB/s | files/s | img/s per core |")
    print("|---|---|---|---|---|---|---|")
    for label, n, wall, mbytes, cpu in rows:
        mbps = f"{mbytes / wall:.1f}" if mbytes else "-"
        cpu_s = f"{cpu:.2f}" if cpu else "-"
        per_core = f"{n / cpu:.0f}" if cpu else "-"
        print(f"| {label} | {n} | {wall:.2f} | {cpu_s} | {mbps} | {n / wall:.0f} | {per_core} |")


if __name__ == "__main__":
    raise SystemExit(main())

"""Cost as the data grows: staging and conversion of N small JPEGs over 1,000 classes.

Starts a local SeaweedFS S3 server (tests/support/seaweedfs.py), uploads, for each size N, N train
images ``train/<class>/`` plus N/10 val images ``val/<class>/`` (tiny 32x32 JPEGs, a few distinct
ones encoded once and put under many keys) over 1,000 class prefixes, then measures, each in a
fresh subprocess so that peak RSS is per size and per step:

- staging: ``irv2_core.data.stage.stage`` from ``s3://bucket/nN/`` to a local folder;
- conversion: ``irv2_core.data.convert.convert`` of that folder to MindRecord;
- once: ``irv2_core.report.build_report`` of a synthetic run with a 1,000-class evaluation.

Peak RSS is the child's own ``ru_maxrss`` (imports included; "imports" is its RSS before the
work). Goals (issue 24): staging files/s at the largest size within 20 % of the smallest; peak
RSS <= 500 MB.

    python bench/scale.py [--sizes 1000 10000 100000] [--classes 1000] [--workers 8]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

BUCKET = "irv2-scale"
RSS_GOAL_MB = 500.0
SPEED_GOAL = 0.8  # files/s at the largest size over files/s at the smallest


def _rss_now_mb() -> float:
    """Resident set size of this process now, in MB."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 1e6


def _peak_rss_mb() -> float:
    """This process's peak RSS in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e6


def tiny_jpegs(count: int = 16, seed: int = 0) -> list[bytes]:
    """*count* distinct 32x32 noise JPEGs (~1 KB each)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        buf = io.BytesIO()
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def keys_for(n: int, classes: int) -> list[str]:
    """N train keys and N/10 val keys, spread evenly over *classes* class prefixes."""
    train = [f"train/c{i % classes:04d}/img_{i:07d}.jpg" for i in range(n)]
    val = [f"val/c{i % classes:04d}/img_{i:07d}.jpg" for i in range(n // 10)]
    return train + val


def upload(client, prefix: str, keys: list[str], blobs: list[bytes], threads: int = 16) -> float:
    """Put every key under *prefix* (thread pool of boto3 puts); return the seconds taken."""

    def put(i: int) -> None:
        client.put_object(Bucket=BUCKET, Key=prefix + keys[i], Body=blobs[i % len(blobs)])

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for start in range(0, len(keys), 4096):  # bounded: not one future per key at once
            list(pool.map(put, range(start, min(start + 4096, len(keys)))))
    return time.perf_counter() - t0


# ----- children: one step each, in a fresh process ------------------------------------------
def child_stage(src: str, dest: str, endpoint: str, workers: int) -> dict:
    from irv2_core.data.stage import stage

    base = _rss_now_mb()
    t0 = time.perf_counter()
    record = stage(src, dest, endpoint_url=endpoint, workers=workers)
    wall = time.perf_counter() - t0
    return {"wall": wall, "count": record.objects, "base": base, "peak": _peak_rss_mb()}


def child_convert(data: str, out: str) -> dict:
    import mindspore.mindrecord  # noqa: F401  (its import is not conversion time)

    from irv2_core.data.convert import convert

    base = _rss_now_mb()
    t0 = time.perf_counter()
    record = convert(data, out)
    wall = time.perf_counter() - t0
    count = sum(record.totals.values())
    return {"wall": wall, "count": count, "base": base, "peak": _peak_rss_mb()}


def _eval_json(classes: int, per_class: int = 50) -> dict:
    """A synthetic evaluation: *classes* classes, 80 % right, the rest one class over."""
    names = [f"n{i:08d}" for i in range(classes)]
    right = per_class * 4 // 5
    confusion = [[0] * classes for _ in range(classes)]
    for i in range(classes):
        confusion[i][i] = right
        confusion[i][(i + 1) % classes] = per_class - right
    count = classes * per_class
    return {
        "top1": right / per_class,
        "top5": 0.95,
        "loss": 1.0,
        "count": count,
        "protocol": "zoo",
        "checkpoint": "/runs/synthetic/final.ckpt",
        "image_size": 299,
        "classes": names,
        "confusion": confusion,
    }


def child_report(folder: str, classes: int) -> dict:
    """Build the report of a synthetic run folder (metrics, classes.json, eval) in *folder*."""
    from irv2_core.report import build_report

    run = Path(folder)
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text("batch_size: 32\nimage_size: 299\n")
    rows = [{"kind": "train", "step": s, "epoch": 1 + s // 100, "loss": 7.0 - s / 100,
             "lr": 0.01, "img_per_s": 100.0} for s in range(1, 501)]  # fmt: skip
    rows += [{"kind": "eval", "step": s, "epoch": s // 100, "top1": s / 600, "top5": s / 550,
              "loss": 3.0} for s in (100, 200, 300, 400, 500)]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = {"global_step": 500, "total_steps": 500, "wall_s": 600.0, "img_per_s": 100.0}
    (run / "train_summary.json").write_text(json.dumps(summary))
    ev = _eval_json(classes)
    (run / "classes.json").write_text(json.dumps({n: i for i, n in enumerate(ev["classes"])}))
    base = _rss_now_mb()
    t0 = time.perf_counter()
    build_report(run, extra={"evaluation": ev})
    wall = time.perf_counter() - t0
    return {"wall": wall, "count": classes, "base": base, "peak": _peak_rss_mb()}


def run_child(*args: str) -> dict:
    """Run ``scale.py --child ARGS`` in a fresh Python; return the JSON it prints last."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:1])} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child_main(argv: list[str]) -> int:
    kind, *rest = argv
    if kind == "stage":
        out = child_stage(rest[0], rest[1], rest[2], int(rest[3]))
    elif kind == "convert":
        out = child_convert(rest[0], rest[1])
    else:
        out = child_report(rest[0], int(rest[1]))
    print(json.dumps(out))
    return 0


# ----- the parent ---------------------------------------------------------------------------
def measure(n: int, work: Path, endpoint: str, workers: int) -> dict:
    """Stage then convert the size-*n* prefix, each in its own process; drop the files after."""
    dest, out = work / f"staged-{n}", work / f"mr-{n}"
    st = run_child("stage", f"s3://{BUCKET}/n{n}/", str(dest), endpoint, str(workers))
    cv = run_child("convert", str(dest), str(out))
    shutil.rmtree(dest, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return {"n": n, "stage": st, "convert": cv}


def print_table(results: list[dict], uploads: dict[int, float], classes: int) -> None:
    print(f"\n{classes} classes; N train + N/10 val JPEGs of 32x32 (~1 KB); {os.cpu_count()} CPUs")
    print("| N train | objects | upload s | stage s | stage files/s | stage peak RSS MB "
          "(imports) | convert s | convert img/s | convert peak RSS MB (imports) |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        st, cv = r["stage"], r["convert"]
        print(
            f"| {r['n']} | {st['count']} | {uploads[r['n']]:.1f} | {st['wall']:.1f} | "
            f"{st['count'] / st['wall']:.0f} | {st['peak']:.0f} ({st['base']:.0f}) | "
            f"{cv['wall']:.1f} | {cv['count'] / cv['wall']:.0f} | "
            f"{cv['peak']:.0f} ({cv['base']:.0f}) |"
        )


def print_goals(results: list[dict]) -> None:
    first, last = results[0]["stage"], results[-1]["stage"]
    ratio = (last["count"] / last["wall"]) / (first["count"] / first["wall"])
    ok = "met" if ratio >= SPEED_GOAL else "NOT met"
    print(f"\nstaging files/s at N={results[-1]['n']} / at N={results[0]['n']}: {ratio:.2f} "
          f"(goal >= {SPEED_GOAL:.2f}, within 20 %): {ok}")  # fmt: skip
    peak = max(max(r["stage"]["peak"], r["convert"]["peak"]) for r in results)
    ok = "met" if peak <= RSS_GOAL_MB else "NOT met"
    print(f"largest peak RSS: {peak:.0f} MB (goal <= {RSS_GOAL_MB:.0f} MB): {ok}")


def run_all(args, work: Path, endpoint: str) -> None:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=endpoint, config=Config(max_pool_connections=32))
    client.create_bucket(Bucket=BUCKET)
    blobs = tiny_jpegs()
    results, uploads = [], {}
    for n in args.sizes:
        uploads[n] = upload(client, f"n{n}/", keys_for(n, args.classes), blobs)
        print(f"N={n}: uploaded {n + n // 10} objects in {uploads[n]:.1f} s", flush=True)
        results.append(measure(n, work, endpoint, args.workers))
        print(f"N={n}: {json.dumps(results[-1])}", flush=True)
    print_table(results, uploads, args.classes)
    print_goals(results)
    if not args.no_report:
        rep = run_child("report", str(work / "report-run"), str(args.classes))
        print(f"\nreport with {args.classes} classes (synthetic eval, 50 img/class): "
              f"{rep['wall']:.1f} s, peak RSS {rep['peak']:.0f} MB "
              f"(imports {rep['base']:.0f} MB)")  # fmt: skip


def main() -> int:
    if sys.argv[1:2] == ["--child"]:
        return child_main(sys.argv[2:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--workers", type=int, default=8, help="stage workers")
    p.add_argument("--no-report", action="store_true", help="skip the report timing")
    args = p.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench-key")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench-secret")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from data_throughput import start_s3

    server = start_s3()
    work = Path(tempfile.mkdtemp(prefix="irv2-scale-"))
    try:
        run_all(args, work, server.endpoint)
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Training throughput of the real ``irv2_core.training.train.train`` loop on this machine.

For each input size it trains a few steps in a fresh process (GRAPH mode, fp32, the zoo recipe,
a real MindRecord folder made here) and reports steady img/s (the first step, which includes
graph compilation, is excluded), peak RSS, and the fraction of the CPU's FP32 FLOP limit used,
counting ~79 GFLOP per trained image at 299 px (forward + backward, 3 x 26.3) scaled by area.

    python bench/train_throughput.py [--sizes 75 139 299] [--batch 8] [--steps 5]

Reference measured on the project's 2-core box: timm/PyTorch trains at 1.83 img/s (299 px,
batch 8) and 18.4 img/s (75 px).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GFLOP_PER_IMAGE_299 = 79.0
TIMM_REFERENCE = {299: 1.83, 75: 18.4}


def _make_data(root: Path, classes: int = 4, per_class: int = 12) -> Path:
    import numpy as np
    from PIL import Image

    from irv2_core.data.convert import convert

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = root / "images" / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            arr = rng.integers(0, 255, size=(340, 360, 3), dtype=np.uint8)
            arr[..., c % 3] = 200
            Image.fromarray(arr).save(d / f"{i}.jpg", quality=90)
    convert(root / "images", root / "mr", val_fraction=0.1)
    return root / "mr"


def _one(size: int, batch: int, steps: int, data: str, out: str) -> dict:
    from irv2_core.config import load_config
    from irv2_core.training.train import train

    cfg = load_config(
        "cpu-smoke",
        overrides=dict(image_size=size, batch_size=batch, max_steps_per_epoch=steps + 1),
    )
    summary = train(cfg, data, out, stop_after_steps=steps)
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"size": size, "batch": batch, "img_per_s": summary["img_per_s"], "peak_gib": peak_gib}


def cpu_peak_gflops() -> tuple[float, str]:
    """FP32 peak: cores x clock x 32 FLOP/cycle (two AVX2 FMA units), the ISA oneDNN is held to."""
    mhz = 0.0
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if m := re.match(r"cpu MHz\s*:\s*([\d.]+)", line):
            mhz = max(mhz, float(m.group(1)))
    cores = os.cpu_count() or 1
    return cores * mhz / 1000 * 32, f"{cores} cores x {mhz / 1000:.2f} GHz x 32 FLOP/cycle"


def sgemm_gflops(n: int = 2048) -> float:
    """Achieved numpy float32 matmul rate: a practical ceiling for this box."""
    import numpy as np

    a = np.random.rand(n, n).astype(np.float32)
    a @ a
    t0 = time.perf_counter()
    for _ in range(3):
        a @ a
    return 3 * 2 * n**3 / (time.perf_counter() - t0) / 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[75, 139, 299])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (plus 1 compile step)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        out = tempfile.mkdtemp(prefix="bench-run-")
        print(json.dumps(_one(args.one, args.batch, args.steps, args.data, out)))
        return 0
    import irv2_core  # noqa: F401  (AVX2 setting inherited by the children)

    peak, how = cpu_peak_gflops()
    gemm = sgemm_gflops()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = _make_data(Path(tmp))
        for size in args.sizes:
            cmd = [sys.executable, __file__, "--one", str(size), "--data", str(data)]
            cmd += ["--batch", str(args.batch), "--steps", str(args.steps)]
            done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"CPU FP32 peak {peak:.0f} GFLOP/s ({how}); numpy sgemm reaches {gemm:.0f} GFLOP/s")
    print(f"{'px':>4} {'batch':>5} {'img/s':>7} {'timm':>6} {'peak GiB':>8} {'GFLOP/s':>8} "
          f"{'%peak':>6} {'%sgemm':>6}")  # fmt: skip
    for r in rows:
        gflop = GFLOP_PER_IMAGE_299 * (r["size"] / 299) ** 2 * r["img_per_s"]
        ref = TIMM_REFERENCE.get(r["size"])
        print(
            f"{r['size']:>4} {r['batch']:>5} {r['img_per_s']:>7.2f} "
            f"{(f'{ref:.2f}' if ref else '-'):>6} {r['peak_gib']:>8.2f} {gflop:>8.1f} "
            f"{100 * gflop / peak:>5.1f}% {100 * gflop / gemm:>5.1f}%"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

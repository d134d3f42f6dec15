"""Where one training step spends its time: MindSpore's profiler (CPU op timing) on the project's
train cell, and torch.profiler on timm's, same recipe and synthetic batch as
bench/train_throughput.py. Prints the top ops by self time on each side and the share of the
optimizer update; the raw MindSpore profile stays in --out for a closer look.

    python bench/profile_step.py --side project [--size 75] [--batch 8] [--out DIR]
    /path/to/bench-venv/bin/python bench/profile_step.py --side timm [--size 75]

Extra MindSpore context for the project side (a lever to try) comes from IRV2_BENCH_CONTEXT, a JSON
object passed to ``mindspore.set_context`` (see train_throughput.py).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import _project_step_fn, _timm_step_fn  # noqa: E402

OPTIMIZER_OPS = ("ApplyRMSProp", "ApplyCenteredRMSProp", "ApplyMomentum", "AddN", "Assign")


def profile_timm(size: int, batch: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    step, info = _timm_step_fn(size, batch)
    step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        step()
        wall = time.perf_counter() - t0
    print(f"{info}; profiled step {wall:.2f} s (load {os.getloadavg()[0]:.1f})")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def _op_rows(out: Path) -> list[tuple[str, float, int]]:
    """(op type, total ms, calls) from the profiler's CPU op statistics, whatever it named them."""
    rows: dict[str, list[float]] = {}
    for path in sorted(out.rglob("*.csv")):
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.lower() for f in reader.fieldnames or []]
            if not any("op_type" in f or "op type" in f for f in fields):
                continue
            for rec in reader:
                low = {k.lower(): v for k, v in rec.items() if k}
                name = next((v for k, v in low.items() if "op_type" in k or "op type" in k), None)
                ms_ = next((v for k, v in low.items() if "total" in k and "time" in k), None)
                calls = next(
                    (
                        v
                        for k, v in low.items()
                        if "occurrences" in k or "count" in k or "calls" in k
                    ),
                    "0",
                )
                try:
                    rows.setdefault(name, [0.0, 0])[0] += float(ms_)
                    rows[name][1] += int(float(calls))
                except (TypeError, ValueError):
                    continue
        if rows:
            print(f"(op statistics from {path})")
            break
    return sorted(((k, v[0], int(v[1])) for k, v in rows.items()), key=lambda r: -r[1])


def profile_project(size: int, batch: int, out: Path) -> None:
    import mindspore as ms

    step, info = _project_step_fn(size, batch)
    step()  # compile outside the profile
    profiler = ms.Profiler(output_path=str(out))
    t0 = time.perf_counter()
    step()
    wall = time.perf_counter() - t0
    profiler.stop()
    profiler.analyse()
    print(f"{info}; profiled step {wall:.2f} s (load {os.getloadavg()[0]:.1f})")
    rows = _op_rows(out)
    if not rows:
        print(f"no op statistics CSV found under {out}; files:")
        for p in sorted(out.rglob("*"))[:40]:
            print("  ", p.relative_to(out))
        return
    total = sum(r[1] for r in rows) or 1.0
    print("| op type | ms | % | calls |\n|---|---|---|---|")
    for name, t, calls in rows[:15]:
        print(f"| {name} | {t:.1f} | {100 * t / total:.1f} | {calls} |")
    opt = sum(t for name, t, _ in rows if name and name.startswith(OPTIMIZER_OPS))
    print(f"optimizer-update ops ({', '.join(OPTIMIZER_OPS)}): {opt:.1f} ms of {total:.1f} ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", choices=["project", "timm"], required=True)
    parser.add_argument("--size", type=int, default=75)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.side == "timm":
        profile_timm(args.size, args.batch)
    else:
        out = args.out or Path(tempfile.mkdtemp(prefix="irv2-profile-"))
        profile_project(args.size, args.batch, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

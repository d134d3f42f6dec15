"""Which oneDNN kernels one training step runs, and how long they take: the project's MindSpore
train cell against timm/PyTorch, the latter both held to AVX2 (as MindSpore must be on this CPU)
and at its native ISA.

Both frameworks run their convolutions and batch norms through oneDNN. With ``ONEDNN_VERBOSE=1``
oneDNN prints one line per primitive execution with the implementation it picked, the memory
formats and the kernel's own time in ms, so the comparison is of kernels, not of framework
overhead. Each side is a separate process (same synthetic batch and recipe as
bench/train_throughput.py): it builds and warms up (compile, first step), then runs ``--steps``
steps between two markers; only the lines between the markers are counted, and divided by the
number of steps. Sides run one after another, ``--rounds`` times alternated, so machine noise hits
all of them; the table shows medians. docs/perf.md §3 explains what the table shows.

    python bench/onednn_kernels.py [--size 75] [--batch 8] [--steps 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from train_throughput import _project_step_fn, _timm_python, _timm_step_fn  # noqa: E402

MARK = "IRV2-MARK"
# (label, worker side, extra environment); MindSpore's oneDNN must stay at AVX2 (findings §0)
SIDES = (
    ("mindspore (AVX2)", "project", {"ONEDNN_MAX_CPU_ISA": "AVX2"}),
    ("torch (AVX2)", "timm", {"ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_WAIT_POLICY": "PASSIVE"}),
    ("torch (native ISA)", "timm", {"OMP_WAIT_POLICY": "PASSIVE"}),
)


def worker(side: str, size: int, batch: int, steps: int) -> int:
    """Warm up, then run *steps* steps between markers (oneDNN prints its lines to stdout)."""
    step, info = (_timm_step_fn if side == "timm" else _project_step_fn)(size, batch)
    step()
    step()  # the second step too: first executions of some primitives include JIT work
    sys.stdout.flush()
    os.write(1, f"{MARK} start {info}\n".encode())
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - t0) / steps
    sys.stdout.flush()
    os.write(1, f"{MARK} end {wall:.6f}\n".encode())
    return 0


def parse(text: str, steps: int) -> dict:
    """Per-step oneDNN time by (primitive, propagation), the implementations seen, step wall."""
    inside, times, impls, wall, info = False, defaultdict(float), defaultdict(set), None, ""
    for line in text.splitlines():
        if line.startswith(MARK):
            parts = line.split(" ", 2)
            inside = parts[1] == "start"
            info = parts[2] if inside else info
            wall = None if inside else float(parts[2])
            continue
        if not inside or not line.startswith("onednn_verbose") or ",exec," not in line:
            continue
        f = line.split(",")
        kind, impl, prop = f[5], f[6], f[7]
        times[(kind, prop)] += float(f[-1]) / steps / 1000.0  # ms -> s
        impls[kind].add(impl)
    return {"times": dict(times), "impls": dict(impls), "wall": wall, "info": info}


def run_side(python: str, side: str, env: dict, args) -> dict:
    """One worker process for *side*; its parsed kernel times."""
    full = dict(os.environ, ONEDNN_VERBOSE="1", GLOG_v="3", **env)
    if "ONEDNN_MAX_CPU_ISA" not in env:
        full.pop("ONEDNN_MAX_CPU_ISA", None)
    here = str(Path(__file__).resolve().parents[1])
    full["PYTHONPATH"] = os.pathsep.join(p for p in (here, full.get("PYTHONPATH")) if p)
    cmd = [python, __file__, "--worker", side, "--size", str(args.size), "--batch",
           str(args.batch), "--steps", str(args.steps)]  # fmt: skip
    with tempfile.TemporaryFile("w+") as out:  # megabytes of verbose lines: not a pipe
        subprocess.run(cmd, stdout=out, stderr=subprocess.DEVNULL, env=full, check=True)
        out.seek(0)
        return parse(out.read(), args.steps)


def _group(times: dict) -> dict[str, float]:
    conv = {p: t for (k, p), t in times.items() if k == "convolution"}
    bn = sum(t for (k, _), t in times.items() if k == "batch_normalization")
    rest = sum(t for (k, _), t in times.items() if k not in ("convolution", "batch_normalization"))
    return {
        "conv fwd": conv.get("forward_training", 0.0) + conv.get("forward_inference", 0.0),
        "conv bwd data": conv.get("backward_data", 0.0),
        "conv bwd weights": conv.get("backward_weights", 0.0),
        "batch norm": bn,
        "other oneDNN": rest,
        "all oneDNN": sum(times.values()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=75)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--timm-python", help="interpreter with torch + timm (default: probe)")
    parser.add_argument("--worker", choices=["project", "timm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.size, args.batch, args.steps)
    timm_py = _timm_python(args.timm_python)
    sides = [s for s in SIDES if s[1] == "project" or timm_py]
    if not timm_py:
        print("torch/timm not importable (pip install .[bench]): MindSpore side only")
    print(f"{os.cpu_count()} CPUs; {args.size} px, batch {args.batch}, {args.steps} steps x "
          f"{args.rounds} rounds per side; load {os.getloadavg()[0]:.1f}")  # fmt: skip
    results: dict[str, list[dict]] = defaultdict(list)
    for r in range(args.rounds):
        for label, side, env in sides:
            res = run_side(timm_py if side == "timm" else sys.executable, side, env, args)
            results[label].append(res)
            print(f"round {r + 1} {label:>18}: step {res['wall']:.2f} s, oneDNN "
                  f"{sum(res['times'].values()):.2f} s (load {os.getloadavg()[0]:.1f})",
                  flush=True)  # fmt: skip
    rows = list(_group({}).keys()) + ["step wall"]
    med = {}
    for label, runs in results.items():
        groups = [_group(x["times"]) | {"step wall": x["wall"]} for x in runs]
        med[label] = {k: statistics.median(g[k] for g in groups) for k in rows}
    labels = list(med)
    print("\nseconds per step (median of rounds)\n")
    print("| part | " + " | ".join(labels) + " |")
    print("|---" * (len(labels) + 1) + "|")
    for k in rows:
        print(f"| {k} | " + " | ".join(f"{med[lab][k]:.3f}" for lab in labels) + " |")
    print("\nimplementations (oneDNN's names)")
    for label, runs in results.items():
        print(f"- {label}: {runs[-1]['info']}")
        for kind, impls in sorted(runs[-1]["impls"].items()):
            print(f"    {kind}: {', '.join(sorted(impls))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput, side by side: this project's MindSpore train cell against timm/PyTorch.

Both sides train Inception-ResNet-v2 with the same recipe (TF-style RMSProp: decay 0.9,
momentum 0.9, eps 1.0, weight decay 4e-5 off BN/bias; label smoothing 0.1; dropout 0.2; fp32;
train mode) on synthetic batches, so only the train step is timed (the input pipeline has its own
benchmark, bench/data_throughput.py). Each side is one long-lived worker process that compiles
or warms up once; the driver then alternates them, ``--rounds`` times per input size, each round
timing ``--steps`` steps of one side while the other waits, so both see the same machine load.
It prints every round's img/s, then per size the median of each side and the ratio
project / timm, with the load average before and after.

The project side is ``recipe.build_train_cell`` in GRAPH mode, fed uint8 pixels (the network
normalises them as its first op, as in ``irv2 train``). The timm side is
``timm.create_model("inception_resnet_v2")`` + ``timm.optim.create_optimizer_v2("rmsproptf")``
+ ``CrossEntropyLoss(label_smoothing=0.1)`` fed normalised float32 (timm's contract), at its
native oneDNN ISA (the AVX2 cap is MindSpore's; ``--timm-isa AVX2`` caps torch too). When torch
and timm are not importable here, the timm worker runs under ``--timm-python`` (default: the
interpreter of /work/bench-venv or $IRV2_BENCH_PYTHON); install them with the ``bench`` extra
(``pip install .[bench]``, never in CI) or in a separate venv. Without either, only the project
side runs.

    python bench/train_throughput.py [--sizes 75 299] [--batch 8] [--steps 3] [--rounds 2]
        [--project-env KEY=VALUE ...]   # e.g. a runtime setting to try (docs/perf.md)

``--project-env IRV2_BENCH_CONTEXT='{"enable_graph_kernel": true}'`` passes a JSON object to
``mindspore.set_context`` in the project worker; ``IRV2_BENCH_MS_THREADS=N`` sets MindSpore's CPU
kernel threads (``device_context.cpu.op_tuning.threads_num``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLASSES = 1000
LR = 0.01
# Training FLOPs per image (forward + backward, convolutions and matmuls), counted on timm's
# inception_resnet_v2 with torch.utils.flop_counter.FlopCounterMode (docs/perf.md §1).
TRAIN_GFLOP_PER_IMAGE = {75: 2.607, 299: 78.90}
# FP32 FLOP per cycle per core: two 256-bit FMA pipes (8 lanes x 2 FLOP each). Zen 4 runs
# AVX-512 as two 256-bit halves, so its peak is the same with or without the AVX2 cap.
FLOP_PER_CYCLE = 32


# ---------------------------------------------------------------- workers (one process each)


def _import_torchvision_tolerantly():
    """Import torchvision even when its compiled ops cannot load (a CUDA build of torchvision
    next to a CPU torch: ``operator torchvision::nms does not exist``). timm only needs its
    Python parts; the missing ops' fake registrations are skipped."""
    import torch

    try:
        import torchvision  # noqa: F401

        return "torchvision"
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
    for name in [m for m in sys.modules if m.startswith("torchvision")]:
        del sys.modules[name]
    real = torch.library.register_fake

    def tolerant(op, *args, **kwargs):
        def decorate(fn):
            try:
                return real(op, *args, **kwargs)(fn)
            except RuntimeError:
                return fn

        return decorate

    torch.library.register_fake = tolerant
    try:
        import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = real
    return "torchvision (without its compiled ops)"


def _timm_step_fn(size: int, batch: int):
    import numpy as np
    import torch

    note = _import_torchvision_tolerantly()
    import timm
    from timm.optim import create_optimizer_v2

    torch.manual_seed(0)
    model = timm.create_model("inception_resnet_v2", num_classes=CLASSES, drop_rate=0.2)
    model.train()
    opt = create_optimizer_v2(
        model, "rmsproptf", lr=LR, weight_decay=4e-5, momentum=0.9, alpha=0.9, eps=1.0
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal((batch, 3, size, size)).astype(np.float32))
    y = torch.from_numpy(rng.integers(0, CLASSES, batch).astype(np.int64))

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return float(loss.detach())

    info = f"torch {torch.__version__} ({torch.get_num_threads()} threads), timm "
    return step, info + f"{timm.__version__}, {note}"


def _project_step_fn(size: int, batch: int):
    import mindspore as ms
    import numpy as np

    import irv2_core  # noqa: F401  (oneDNN ISA before any op)
    from irv2_core.config import load_config
    from irv2_core.models.factory import create_model
    from irv2_core.runtime.context import setup_context
    from irv2_core.training.recipe import build_train_cell, create_optimizer

    cfg = load_config(
        "cpu-smoke",
        overrides=dict(image_size=size, batch_size=batch, num_classes=CLASSES, drop_rate=0.2),
    )
    threads = os.environ.get("IRV2_BENCH_MS_THREADS")
    if threads:  # CPU kernel threads (default: MindSpore's own choice); before any op runs
        ms.device_context.cpu.op_tuning.threads_num(int(threads))
    setup_context(cfg, cache_scope=f"bench-train|{size}|{batch}")
    extra = json.loads(os.environ.get("IRV2_BENCH_CONTEXT") or "{}")
    if extra:  # a lever to try, e.g. {"enable_graph_kernel": true} (docs/perf.md)
        ms.set_context(**extra)
    ms.set_seed(0)
    net = create_model(
        cfg.model,
        num_classes=CLASSES,
        residual_bias=cfg.residual_bias,
        drop_rate=cfg.drop_rate,
        input_protocol=cfg.eval_protocol,
    )
    opt = create_optimizer(cfg, net, LR)
    cell = build_train_cell(cfg, net, opt)
    rng = np.random.default_rng(0)
    x = ms.Tensor(rng.integers(0, 256, (batch, 3, size, size), dtype=np.uint8))
    y = ms.Tensor(rng.integers(0, CLASSES, batch).astype(np.int32))

    def step() -> float:
        return float(cell(x, y).asnumpy())  # asnumpy waits for the step to finish

    mode = (
        f"{cfg.mode} mode, extra context {extra or 'none'}, kernel threads {threads or 'default'}"
    )
    return step, f"mindspore {ms.__version__}, {mode}, optim {cfg.optim}"


def worker(side: str, size: int, batch: int) -> int:
    """Build, warm up (first step: compile), then answer ``run N`` lines with JSON timings."""
    import resource

    t0 = time.perf_counter()
    step, info = (_timm_step_fn if side == "timm" else _project_step_fn)(size, batch)
    step()
    ready = {"ready": True, "info": info, "first_step_s": time.perf_counter() - t0}
    print(json.dumps(ready), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if not cmd or cmd[0] != "run":
            break
        times, loss = [], None
        for _ in range(int(cmd[1])):
            t = time.perf_counter()
            loss = step()
            times.append(time.perf_counter() - t)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps({"times": times, "loss": loss, "peak_gib": rss}), flush=True)
    return 0


# ---------------------------------------------------------------- driver


def _timm_python(explicit: str | None) -> str | None:
    """An interpreter that can import torch and timm, or None."""
    candidates = [explicit] if explicit else []
    candidates += [sys.executable, os.environ.get("IRV2_BENCH_PYTHON")]
    candidates.append("/work/bench-venv/bin/python")
    for py in candidates:
        if not py or not (Path(py).exists() or shutil.which(py)):
            continue
        probe = [py, "-c", "import importlib.util as u, sys; "
                 "sys.exit(0 if u.find_spec('torch') and u.find_spec('timm') else 1)"]  # fmt: skip
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return py
    return None


class Worker:
    def __init__(
        self, side: str, python: str, size: int, batch: int, env: dict[str, str], label: str = ""
    ):
        self.side = label or side
        cmd = [python, __file__, "--worker", side, "--sizes", str(size), "--batch", str(batch)]
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.side} worker died (exit {self.proc.wait()})")
        return json.loads(line)

    def run(self, steps: int) -> dict:
        self.proc.stdin.write(f"run {steps}\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def fp32_peak_gflops() -> float | None:
    """This machine's FP32 peak in GFLOP/s (cores x clock x FLOP_PER_CYCLE), or None."""
    try:
        mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
               if line.startswith("cpu MHz")]  # fmt: skip
    except OSError:
        return None
    return len(mhz) * (statistics.mean(mhz) / 1000.0) * FLOP_PER_CYCLE if mhz else None


def _peak_share(size: int, img_s: float | None, peak: float | None) -> str:
    if not img_s or not peak or size not in TRAIN_GFLOP_PER_IMAGE:
        return "-"
    return f"{100.0 * img_s * TRAIN_GFLOP_PER_IMAGE[size] / peak:.0f} %"


def _load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[75, 299])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2, help="alternations per side and size")
    parser.add_argument("--timm-python", help="interpreter with torch + timm (default: probe)")
    parser.add_argument("--no-timm", action="store_true", help="time the project side only")
    parser.add_argument("--timm-isa", help="cap timm's oneDNN ISA too, e.g. AVX2 (default: none)")
    parser.add_argument(
        "--project-env", nargs="*", default=[], metavar="KEY=VALUE", help="project worker env"
    )
    parser.add_argument(
        "--project-env-b",
        nargs="*",
        default=None,
        metavar="KEY=VALUE",
        help="also run a second project worker ('project-b') with this env, alternated: an A/B",
    )
    parser.add_argument("--worker", choices=["project", "timm"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker, args.sizes[0], args.batch)

    here = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA=os.environ.get("ONEDNN_MAX_CPU_ISA", "AVX2"))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    env.setdefault("GLOG_v", "3")
    project_env = dict(env, **dict(kv.split("=", 1) for kv in args.project_env))
    # OpenMP threads that spin while they wait make torch 10-20x slower on an oversubscribed
    # machine (75 px step: 34-45 s spinning, 1.9-3.8 s passive at load ~8 on 2 cores);
    # MindSpore's own thread pool is not OpenMP. Passive waiting keeps the comparison fair.
    timm_env = dict(env)
    timm_env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # The AVX2 cap is MindSpore's need (findings §0), not torch's: timm runs at the ISA its users
    # get unless --timm-isa says otherwise (bench/onednn_kernels.py compares both).
    timm_env.pop("ONEDNN_MAX_CPU_ISA", None)
    if args.timm_isa:
        timm_env["ONEDNN_MAX_CPU_ISA"] = args.timm_isa
    timm_py = None if args.no_timm else _timm_python(args.timm_python)
    if timm_py is None and not args.no_timm:
        print("torch/timm not importable (pip install .[bench]): project side only\n")
    print(f"{os.cpu_count()} CPUs, load average {_load()} (1/5/15 min) at start")
    if args.project_env:
        print(f"project worker env: {' '.join(args.project_env)}")
    if timm_py:
        isa = timm_env.get("ONEDNN_MAX_CPU_ISA", "native")
        print(f"timm worker: {timm_py}, OMP_WAIT_POLICY={timm_env['OMP_WAIT_POLICY']}, "
              f"oneDNN ISA {isa}")  # fmt: skip
    summary = []
    for size in args.sizes:
        workers = [Worker("project", sys.executable, size, args.batch, project_env)]
        if args.project_env_b is not None:
            env_b = dict(env, **dict(kv.split("=", 1) for kv in args.project_env_b))
            workers.append(Worker("project", sys.executable, size, args.batch, env_b, "project-b"))
        if timm_py:
            workers.append(Worker("timm", timm_py, size, args.batch, timm_env))
        for w in workers:
            print(f"[{size} px] {w.side}: {w.ready['info']}; "
                  f"build + first step {w.ready['first_step_s']:.1f} s")  # fmt: skip
        rates: dict[str, list[float]] = {w.side: [] for w in workers}
        rss: dict[str, float] = {}
        load_before = _load()
        try:
            for r in range(args.rounds):
                for w in workers:
                    out = w.run(args.steps)
                    ips = args.batch * len(out["times"]) / sum(out["times"])
                    rates[w.side].append(ips)
                    rss[w.side] = out["peak_gib"]
                    steps = " ".join(f"{t:.2f}" for t in out["times"])
                    print(f"[{size} px] round {r + 1} {w.side:>7}: {ips:6.2f} img/s "
                          f"(steps {steps} s, loss {out['loss']:.3f}, load {_load()})",
                          flush=True)  # fmt: skip
        finally:
            for w in workers:
                w.close()
        med = {k: statistics.median(v) for k, v in rates.items()}
        summary.append((size, med, rss, load_before, _load()))
    print(f"\nbatch {args.batch}, {args.rounds} rounds x {args.steps} steps per side, medians")
    if args.project_env_b is not None:
        print(f"project-b env: {' '.join(args.project_env_b)}")
    peak = fp32_peak_gflops()
    if peak:
        print(f"FP32 peak {peak:.0f} GFLOP/s ({os.cpu_count()} cores x clock x {FLOP_PER_CYCLE})")
    print("| px | project img/s | timm img/s | project/timm | project % FP32 peak "
          "| timm % FP32 peak | peak GiB (project/timm) | load |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for size, med, rss, before, after in summary:
        timm = med.get("timm")
        ratio = f"{med['project'] / timm:.2f}x" if timm else "-"
        mem = f"{rss.get('project', 0):.1f}/{rss.get('timm', 0):.1f}"
        t = f"{timm:.2f}" if timm else "-"
        shares = f"{_peak_share(size, med['project'], peak)} | {_peak_share(size, timm, peak)}"
        print(f"| {size} | {med['project']:.2f} | {t} | {ratio} | {shares} | {mem} "
              f"| {before} -> {after} |")  # fmt: skip
        if "project-b" in med:
            print(f"|   {size} project-b | {med['project-b']:.2f} | {t} | - | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Model-side speed: build, eval forward, export + verification, and exported-model inference.

Measures on this machine and prints one table:

- building the network (cells + Xavier init, no compile);
- eval forward of the checkpoint's network in PyNative and GRAPH mode (first call includes the
  graph compile; steady is the mean of the later calls), per image size and batch;
- ``export_model`` for MINDIR and ONNX (write + reload + compare), with the verified max diff;
- per-image inference of the exported files (GraphCell, onnxruntime) against the network.

The compile cache is disabled throughout so every "first call" is a real compile.
Rough expectations (2 shared cores): forward at 299 ~0.3 s/img, export ~10-20 s.

    python bench/model_speed.py [--sizes 75 299] [--batches 1 8] [--repeat 3] [--classes 1000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import irv2_core  # noqa: F401  (sets the oneDNN ISA before MindSpore runs an op)


def _timed(fn, repeat: int) -> tuple[float, float]:
    """(first call seconds, mean seconds of the next *repeat* calls)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, float(np.mean(times)) if times else float("nan")


def bench_forward(ckpt: Path, sizes, batches, repeat: int) -> list[tuple]:
    import mindspore as ms

    from irv2_core.models.weights import load_model

    rows = []
    for mode_name, mode in (("pynative", ms.PYNATIVE_MODE), ("graph", ms.GRAPH_MODE)):
        ms.set_context(mode=mode)
        for size in sizes:
            for batch in batches:
                net, _ = load_model(ckpt)  # a fresh cell: one compile per row in GRAPH mode
                x = ms.Tensor(np.random.default_rng(0).standard_normal((batch, 3, size, size)))
                x = x.astype(ms.float32)
                first, steady = _timed(lambda net=net, x=x: net(x).asnumpy(), repeat)
                rows.append(("forward", mode_name, size, batch, first, steady, batch / steady, ""))
    ms.set_context(mode=ms.PYNATIVE_MODE)
    return rows


def bench_export(ckpt: Path, size: int, repeat: int, out_dir: Path) -> list[tuple]:
    import mindspore as ms
    from mindspore import nn

    from irv2_core.export.exporter import export_model, verification_input

    rows = []
    x = verification_input(size, 1)
    for fmt in ("MINDIR", "ONNX"):
        t0 = time.perf_counter()
        res = export_model(ckpt, fmt, out_dir / f"m_{size}", image_size=size)
        took = time.perf_counter() - t0
        diff, mib = res["max_abs_diff"], res["bytes"] >> 20
        note = f"{res['verified_with']}, max diff {diff:.2g}, {mib} MiB"
        rows.append((f"export {fmt}", "-", size, 1, took, float("nan"), float("nan"), note))
        if fmt == "MINDIR":
            cell = nn.GraphCell(ms.load(res["path"]))
            first, steady = _timed(lambda cell=cell: cell(ms.Tensor(x)).asnumpy(), repeat)
            rows.append(("infer MINDIR", "GraphCell", size, 1, first, steady, 1 / steady, ""))
        else:
            import onnxruntime as ort

            sess = ort.InferenceSession(res["path"], providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            first, steady = _timed(lambda s=sess, n=name: s.run(None, {n: x}), repeat)
            rows.append(("infer ONNX", "onnxruntime", size, 1, first, steady, 1 / steady, ""))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[75, 299])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--export-size", type=int, default=299)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--classes", type=int, default=1000)
    args = parser.parse_args()

    import mindspore as ms

    from irv2_core.models.ckpt_io import save_checkpoint_atomic
    from irv2_core.models.factory import create_model
    from irv2_core.runtime.context import compile_cache_disabled

    with tempfile.TemporaryDirectory() as tmp, compile_cache_disabled():
        t0 = time.perf_counter()
        net = create_model(num_classes=args.classes)
        build = time.perf_counter() - t0
        ckpt = save_checkpoint_atomic(net, Path(tmp) / "net.ckpt")
        del net
        rows = [("build net", "-", "-", "-", build, float("nan"), float("nan"), "")]
        rows += bench_forward(ckpt, args.sizes, args.batches, args.repeat)
        rows += bench_export(ckpt, args.export_size, args.repeat, Path(tmp))
    print(f"\nmindspore {ms.__version__}, {args.classes} classes, eval mode, fp32, CPU")
    head = ("what", "mode", "size", "batch", "first s", "steady s", "img/s", "note")
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        cells = [str(v) if not isinstance(v, float) else ("-" if v != v else f"{v:.2f}") for v in r]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""``irv2 demo``: the whole train-eval-export flow on a small real image set, locally, on the CPU.

The image set is rendered from scikit-learn's bundled handwritten digits (``demo_data``) into
``WORKDIR/source``, which plays the object store. The flow function is called directly, so
Prefect's local engine runs it against an ephemeral API (no server to start). Rank 0's training
lines stream to the console through Prefect's logger. A second run finds every heavy stage in
Prefect's cache and finishes in seconds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from irv2_core.config import parse_overrides
from irv2_core.data.digits import DEMO_TRAIN_OVERRIDES, make_digits_dataset

__all__ = ["DEMO_OVERRIDES", "DEMO_PER_CLASS", "add_demo", "run_demo"]

DEFAULT_WORKDIR = "./irv2-demo"
# The training settings of the demo (cpu-smoke plus these; measured in demo_data).
DEMO_PER_CLASS: int | None = None  # all 1,797 digits
DEMO_OVERRIDES: dict[str, Any] = DEMO_TRAIN_OVERRIDES


def _prefect_local_engine() -> None:
    """Let a fresh machine run flows with no server and no profile: an ephemeral API."""
    if not os.environ.get("PREFECT_API_URL"):
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_ENABLED", "true")
        # the ephemeral server starts in a subprocess; on a busy 2-core box it needs > 20 s
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline-friendly


def run_demo(
    workdir: str | os.PathLike[str] = DEFAULT_WORKDIR,
    overrides: dict[str, Any] | None = None,
    per_class: int | None = DEMO_PER_CLASS,
) -> dict[str, Any]:
    """Make the digits image set under *workdir* and run the flow on it; return the flow summary.

    *overrides* replace the demo's training settings key by key (config keys of cpu-smoke).
    """
    _prefect_local_engine()
    # imported after the settings above: Prefect reads them when it is first imported
    from flows.train_eval_export import train_eval_export

    work = Path(workdir).expanduser().resolve()
    source = make_digits_dataset(work / "source", per_class=per_class)
    print(f"demo image set: {source['total']} digits in {source['dest']}", flush=True)
    return train_eval_export(
        source=source["dest"],
        workdir=str(work),
        preset="cpu-smoke",
        overrides={**DEMO_OVERRIDES, **(overrides or {})},
        device_target="CPU",
        export_formats=["MINDIR", "ONNX"],
    )


def _run_demo(args: argparse.Namespace) -> int:
    summary = run_demo(args.workdir, overrides=parse_overrides(args.set))
    print(f"top-1: {summary['top1'] * 100:.2f} %  (top-5: {summary['top5'] * 100:.2f} %)")
    print(f"report: {summary['report']}")
    print(f"exports: {', '.join(summary['exports'])}")
    print(f"run folder: {summary['run_dir']}")
    timings = summary["timings"].items()
    states = ", ".join(f"{k} {v['state']} {v['seconds']:.1f}s" for k, v in timings)
    print(f"stages: {states}")
    return 0


def add_demo(subparsers: Any) -> None:
    """Register ``irv2 demo [--workdir DIR] [--set key=value ...]``."""
    p = subparsers.add_parser(
        "demo", help="run the whole flow locally on a small real image set (digits)"
    )
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, help="where everything is written")
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override one of the demo's training settings (a config key)",
    )
    p.set_defaults(func=_run_demo)

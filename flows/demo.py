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
from irv2_core.data.digits import make_digits_dataset

__all__ = ["DEMO_PER_CLASS", "DEMO_PRESET", "add_demo", "format_summary", "run_demo"]

DEFAULT_WORKDIR = "./irv2-demo"
DEMO_PRESET = "cpu"  # the demo trains with the preset as it is: what it shows is what users get
# 80 of each digit: 640 train / 160 val images; the preset's 5 epochs see 3,200 training images
DEMO_PER_CLASS: int | None = 80


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

    *overrides* replace settings of the ``cpu`` preset key by key (config keys).
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
        preset=DEMO_PRESET,
        overrides=dict(overrides or {}),
        device_target="CPU",
        export_formats=["MINDIR", "ONNX"],
    )


def format_summary(summary: dict[str, Any]) -> str:
    """The demo's closing summary: a stage | state | seconds table, top-1/top-5, the exports
    with how each was verified, and where the report and run folder are."""
    timings = summary["timings"]
    width = max([len("stage"), *map(len, timings)])
    lines = [f"{'stage':<{width}} | {'state':<9} | seconds", f"{'-' * width}-|-{'-' * 9}-|--------"]
    for name, t in timings.items():
        lines.append(f"{name:<{width}} | {t['state']:<9} | {t['seconds']:7.1f}")
    total = sum(t["seconds"] for t in timings.values())
    lines.append(f"{'total':<{width}} | {'':<9} | {total:7.1f}")
    lines.append("")
    lines.append(f"top-1 {summary['top1'] * 100:.2f} %   top-5 {summary['top5'] * 100:.2f} %")
    checks = summary.get("export_checks") or [
        {"format": Path(p).suffix.lstrip(".").upper(), "path": p} for p in summary["exports"]
    ]
    lines.append("exports:")
    for e in checks:
        how = e.get("verified_with") or "not verified"
        if e.get("max_abs_diff") is not None:
            how += f", max |diff| {e['max_abs_diff']:.2g}"
        lines.append(f"  {e['format']:<6} {e['path']}  ({how})")
    lines.append(f"report: {summary['report']}")
    lines.append(f"run folder: {summary['run_dir']}")
    return "\n".join(lines)


def _run_demo(args: argparse.Namespace) -> int:
    summary = run_demo(args.workdir, overrides=parse_overrides(args.set), per_class=args.per_class)
    print(format_summary(summary), flush=True)
    return 0


def add_demo(subparsers: Any) -> None:
    """Register ``irv2 demo [--workdir DIR] [--per-class N] [--set key=value ...]``."""
    p = subparsers.add_parser(
        "demo", help="run the whole flow locally on a small real image set (digits)"
    )
    p.add_argument("--workdir", default=DEFAULT_WORKDIR, help="where everything is written")
    p.add_argument(
        "--per-class",
        type=int,
        default=DEMO_PER_CLASS,
        metavar="N",
        help=f"digits of each of the 10 classes in the image set (default {DEMO_PER_CLASS}); "
        "fewer make a quicker, less accurate demo",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="override a setting of the cpu preset (a config key)",
    )
    p.set_defaults(func=_run_demo)

"""``irv2 report``: the Markdown/HTML/CSV report of a run folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from irv2_core.errors import Irv2Error


def _run_report(args: argparse.Namespace) -> int:
    from irv2_core.report import build_report

    extra = None
    if args.extra:
        try:
            extra = json.loads(Path(args.extra).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise Irv2Error(f"--extra {args.extra}: cannot read a JSON object ({exc})") from None
    baseline = None
    if args.baseline:
        try:
            baseline = json.loads(Path(args.baseline).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise Irv2Error(
                f"--baseline {args.baseline}: cannot read its eval.json ({exc})"
            ) from None
    label = args.baseline_label or (args.baseline if baseline is not None else None)
    result = build_report(args.run_dir, args.out, extra, baseline, label)
    print(result.markdown)
    print(result.html)
    return 0


def add_report(subparsers: Any) -> None:
    """Register ``irv2 report RUN_DIR [--out DIR] [--extra FILE.json] [--baseline EVAL.json]``."""
    p = subparsers.add_parser("report", help="build the Markdown/HTML/CSV report of a run folder")
    p.add_argument("run_dir", help="the run folder written by `irv2 train`")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    p.add_argument(
        "--extra",
        default=None,
        help="JSON file with evaluation/exports/data_fingerprint/timings to include",
    )
    p.add_argument(
        "--baseline",
        default=None,
        help="eval.json of the previous accepted model, to compare with",
    )
    p.add_argument(
        "--baseline-label",
        default=None,
        help="what the baseline is, shown in the report (default: the --baseline path)",
    )
    p.set_defaults(func=_run_report)

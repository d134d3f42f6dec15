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
    result = build_report(args.run_dir, args.out, extra)
    print(result.markdown)
    print(result.html)
    return 0


def add_report(subparsers: Any) -> None:
    """Register ``irv2 report RUN_DIR [--out DIR] [--extra FILE.json]``."""
    p = subparsers.add_parser("report", help="build the Markdown/HTML/CSV report of a run folder")
    p.add_argument("run_dir", help="the run folder written by `irv2 train`")
    p.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    p.add_argument(
        "--extra",
        default=None,
        help="JSON file with evaluation/exports/data_fingerprint/timings to include",
    )
    p.set_defaults(func=_run_report)

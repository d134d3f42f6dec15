"""``irv2 pull``: fetch a published run from the object store."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _run_pull(args: argparse.Namespace) -> int:
    from irv2_core.storage import open_store
    from irv2_core.storage.pull import pull_run, split_run_uri

    root_uri, run_key = split_run_uri(args.uri)
    record = pull_run(open_store(root_uri, args.endpoint_url), run_key, Path(args.dest))
    shown = record.model_dump(mode="json", include={"run_id", "metrics", "checkpoint"})
    print(json.dumps(shown, indent=2))
    print(f"pulled into {args.dest}")
    return 0


def add_pull(subparsers) -> None:
    """Register ``irv2 pull RUN_URI DEST [--endpoint-url URL]``."""
    p = subparsers.add_parser(
        "pull",
        help="fetch a published run (weights, metrics, report, exports) from the object store",
        description="Download a run that a flow with output_uri published, verifying every file "
        "against its recorded sha256. DEST then works with irv2 evaluate/predict.",
    )
    p.add_argument("uri", metavar="RUN_URI", help="<output_uri>/runs/<run-id> (see run_uri)")
    p.add_argument("dest", metavar="DEST", help="local folder to fill")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, OBS)")
    p.set_defaults(func=_run_pull)

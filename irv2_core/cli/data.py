"""``irv2 stage`` and ``irv2 convert``: mirror a source, build MindRecord."""

from __future__ import annotations

import json


def _run_stage(args) -> int:
    from irv2_core.data.stage import stage

    result = stage(args.src, args.dest, endpoint_url=args.endpoint_url, workers=args.workers)
    for item in result.rejected:
        print(f"rejected {item.key!r}: {item.reason}")
    print(json.dumps(result.model_dump(mode="json", exclude={"rejected"}), indent=2))
    return 0


def add_stage(subparsers) -> None:
    """Register ``irv2 stage SRC DEST [--endpoint-url URL] [--workers N]``."""
    p = subparsers.add_parser(
        "stage",
        help="mirror s3://bucket/prefix or a local folder into a folder",
        description="Mirror every object under SRC into DEST (verified, incremental) and write "
        "DEST/manifest.json with the dataset fingerprint. Credentials come from the standard "
        "AWS chain (env, profile, instance role); they are never printed.",
    )
    p.add_argument("src", metavar="SRC", help="s3://bucket/prefix, file:///path or a folder")
    p.add_argument("dest", metavar="DEST", help="local folder to mirror into")
    p.add_argument(
        "--endpoint-url",
        default=None,
        help="S3-compatible endpoint (MinIO, OBS); default $AWS_ENDPOINT_URL or AWS",
    )
    p.add_argument("--workers", type=int, default=8, help="parallel transfers (default 8)")
    p.set_defaults(func=_run_stage)


def _run_convert(args) -> int:
    from irv2_core.data.convert import convert

    record = convert(
        args.data_dir,
        args.out_dir,
        shards=args.shards,
        val_fraction=args.val_fraction,
        seed=args.seed,
        full_decode=args.full_decode,
        workers=args.workers,
    )
    for item in record.skipped:
        print(f"skipped {item.path}: {item.reason}")
    summary = {
        "totals": record.totals,
        "num_classes": record.num_classes,
        "fingerprint": record.fingerprint,
        "skipped": len(record.skipped),
    }
    print(json.dumps(summary, indent=2))
    return 0


def add_convert(subparsers) -> None:
    """Register ``irv2 convert DATA_DIR OUT_DIR [--shards N] [--val-fraction F]``."""
    p = subparsers.add_parser(
        "convert",
        help="convert class folders of images into sharded MindRecord",
        description="Check every image and write train/val MindRecord shards, classes.json and "
        "conversion.json into OUT_DIR (built aside, renamed into place; reruns are free).",
    )
    p.add_argument(
        "data_dir", metavar="DATA_DIR", help="train/<class>/* [+ val/<class>/*] or <class>/*"
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="folder to create (replaced when done)")
    p.add_argument("--shards", type=int, default=1, help="MindRecord files per split (default 1)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=0.2,
        help="share of each class held out for val when there is no val/ folder (default 0.2)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of that split (default 0)")
    p.add_argument(
        "--full-decode",
        action="store_true",
        help="also decode good JPEGs when checking them (catches damage inside the data; slower)",
    )
    p.add_argument("--workers", type=int, default=None, help="checking threads (default: CPUs)")
    p.set_defaults(func=_run_convert)

"""``irv2 train`` and ``irv2 evaluate``.

The core modules are imported inside the commands: they import MindSpore (~2 s), which
``--help`` does not need."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from irv2_core.config import PRESETS, parse_overrides, resolve_config


def _allow_cache_if_own_process(args: argparse.Namespace) -> None:
    """Opt in to the scoped compile cache only when this command is the whole process.

    There no graph was compiled before the command, so the cache's order-numbered graphs are its
    own. An in-process ``main([...])`` call (a test, a notebook) may follow other graphs: it
    compiles uncached like any library call and leaves the caller's process with the cache off.
    """
    from irv2_core.runtime.compile_cache import allow_scoped_cache

    if getattr(args, "own_process", False):
        allow_scoped_cache()


def _run_train(args: argparse.Namespace) -> int:
    from irv2_core.training.train import train

    _allow_cache_if_own_process(args)
    saved = Path(args.out) / "config.yaml" if args.resume else None
    cfg = resolve_config(args.preset, args.config, parse_overrides(args.set), run_config=saved)
    train(
        cfg,
        args.data,
        args.out,
        resume=args.resume,
        stop_after_steps=args.stop_after_steps,
        mirror_uri=args.mirror_uri,
        compile_cache_uri=args.compile_cache_uri,
        endpoint_url=args.endpoint_url,
        lock_wait_s=args.wait_for_lock,
        accept_stack_change=args.accept_stack_change,
    )
    return 0


def add_train(subparsers: argparse._SubParsersAction) -> None:
    """Register ``irv2 train --data MR_DIR --out RUN_DIR [--preset P] [--config F] [--set k=v]
    [--resume]``."""
    p = subparsers.add_parser("train", help="train Inception-ResNet-v2 on a MindRecord folder")
    p.add_argument("--data", required=True, help="MindRecord folder (irv2 convert output)")
    p.add_argument("--out", required=True, help="run folder (created)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="config preset")
    p.add_argument("--config", help="YAML config file (applied after the preset)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument(
        "--accept-stack-change",
        action="store_true",
        help="resume even from a checkpoint written on another software stack (MindSpore, "
        "CANN, driver, packages, image); without it such a resume fails naming what differs",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run folder's latest checkpoint (starts fresh if none)",
    )
    p.add_argument(
        "--stop-after-steps", type=int, help="stop after this global step (resumable checkpoint)"
    )
    p.add_argument(
        "--mirror-uri",
        help="this run's place in the object store (s3://bucket/prefix/runs/ID or a folder): "
        "checkpoints are copied there as written, --resume without local checkpoints starts "
        "from the newest there, and a lease there keeps a second worker out",
    )
    p.add_argument(
        "--compile-cache-uri",
        help="an object store (the flow's output_uri) that shares MindSpore's compile cache "
        "between workers: fetched before the first compile, published after the first step "
        "(needs MS_COMPILER_CACHE_ENABLE=1)",
    )
    p.add_argument("--endpoint-url", help="S3-compatible endpoint of the store URIs (MinIO, OBS)")
    p.add_argument(
        "--wait-for-lock",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another worker writing the run to finish (default: fail)",
    )
    p.set_defaults(func=_run_train)


def _run_evaluate(args: argparse.Namespace) -> int:
    from irv2_core.evaluation import evaluate

    _allow_cache_if_own_process(args)
    overrides = parse_overrides(args.set)
    cfg = None  # evaluate() then reads the run's own config.yaml beside the checkpoint
    if args.preset or args.config or overrides:  # --set alone adjusts the run's own config
        saved = Path(args.ckpt).parent / "config.yaml"
        cfg = resolve_config(
            args.preset, args.config, overrides, run_config=saved, fallback_preset="cpu-smoke"
        )
    result = evaluate(args.ckpt, args.data, cfg, args.split, args.out, args.image_size)
    print(json.dumps(result.to_json(), sort_keys=True), flush=True)
    return 0


def add_evaluate(subparsers: argparse._SubParsersAction) -> None:
    """Register ``irv2 evaluate --data MR_DIR --ckpt CKPT [--out F] [--preset/--config/--set]``."""
    p = subparsers.add_parser("evaluate", help="top-1/top-5 of a checkpoint on the val split")
    p.add_argument("--data", required=True, help="MindRecord folder (irv2 convert output)")
    p.add_argument("--ckpt", required=True, help="checkpoint, e.g. RUN_DIR/final.ckpt")
    p.add_argument("--split", default="val", help="split to evaluate (default: val)")
    p.add_argument("--out", help="also write the result JSON to this file")
    p.add_argument("--preset", choices=sorted(PRESETS), help="config preset")
    p.add_argument("--config", help="YAML config file (default: config.yaml beside --ckpt)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--image-size", type=int, help="input size when no config is found")
    p.set_defaults(func=_run_evaluate)

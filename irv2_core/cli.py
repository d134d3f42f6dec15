"""The ``irv2`` command line: one sub-command per stage, each defined next to its core code.

Only the chosen command's module is imported, so ``irv2 --help`` and light commands stay fast
(MindSpore's import alone costs ~2 s). A module listed here provides
``add_cli(subparsers) -> None`` that registers its sub-parser and sets ``func(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from irv2_core import __version__
from irv2_core.errors import Irv2Error

# command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "stage": ("irv2_core.data.stage", "mirror s3://bucket/prefix or a local folder into a folder"),
    "convert": (
        "irv2_core.data.convert",
        "convert class folders of images into sharded MindRecord",
    ),
    "train": ("irv2_core.training.train", "train Inception-ResNet-v2 on a MindRecord folder"),
    "evaluate": ("irv2_core.evaluation", "top-1/top-5 of a checkpoint on the val split"),
    "export": (
        "irv2_core.export.exporter",
        "export a checkpoint to MINDIR, ONNX or AIR (verified)",
    ),
    "predict": ("irv2_core.export.predict", "classify images with a ckpt, MINDIR or ONNX model"),
    "import-weights": (
        "irv2_core.models.weights",
        "convert timm safetensors weights to a checkpoint",
    ),
    "report": ("irv2_core.report", "build the Markdown/HTML/CSV report of a run folder"),
    "demo": ("irv2_core.demo", "run the whole flow locally on a small real image set"),
    "serve": ("irv2_core.serve", "serve the Prefect deployments from this process"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    """Top-level parser; only *command*'s module is imported and registered."""
    parser = argparse.ArgumentParser(
        prog="irv2",
        description="Inception-ResNet-v2 train-eval-export pipeline on MindSpore.",
        epilog="commands: " + "; ".join(f"{name}: {text}" for name, (_, text) in COMMANDS.items()),
    )
    parser.add_argument("--version", action="version", version=f"irv2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, text) in COMMANDS.items():
        if name == command:
            importlib.import_module(module).add_cli(sub)
        else:
            sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``irv2`` console script and ``python -m irv2_core``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if argv else 0
    try:
        return int(args.func(args) or 0)
    except Irv2Error as exc:
        print(f"irv2 {args.command}: error: {exc}", file=sys.stderr)
        return 2

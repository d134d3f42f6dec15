"""The ``irv2`` command line of the library: one sub-command per core verb.

Only the chosen command's registration function is imported, and the command imports its core
module only when it runs, so ``irv2 --help`` and ``irv2 VERB --help`` stay fast (MindSpore's import
alone costs ~2 s). A command is ``name -> (module, function, one-line help)``; the function takes
the argparse sub-parsers, registers its parser and sets ``func(args) -> int``. The orchestration
package extends :data:`COMMANDS` with ``demo`` and ``serve`` (``flows.cli``).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from irv2_core import __version__
from irv2_core.errors import EXIT_BAD_INPUT, EXIT_TRANSIENT, Irv2Error, TransientError

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

Command = tuple[str, str, str]  # (module, registration function, one-line help)

COMMANDS: dict[str, Command] = {
    "stage": ("irv2_core.cli.data", "add_stage", "mirror s3://bucket/prefix or a local folder"),
    "convert": ("irv2_core.cli.data", "add_convert", "convert class folders into MindRecord"),
    "train": ("irv2_core.cli.model", "add_train", "train Inception-ResNet-v2 on MindRecord"),
    "evaluate": ("irv2_core.cli.model", "add_evaluate", "top-1/top-5 of a checkpoint"),
    "export": ("irv2_core.cli.export", "add_export", "export to MINDIR, ONNX or AIR (verified)"),
    "predict": ("irv2_core.cli.export", "add_predict", "classify images with a model file"),
    "import-weights": ("irv2_core.cli.export", "add_import_weights", "timm weights -> ckpt"),
    "report": ("irv2_core.cli.report", "add_report", "the Markdown/HTML/CSV report of a run"),
    "pull": ("irv2_core.cli.store", "add_pull", "fetch a published run from the object store"),
    "models": ("irv2_core.cli.models", "add_models", "the model in service: list/show/rollback"),
    "gang-pod": ("irv2_core.cli.gang", "add_gang_pod", "one pod of a multi-node gang job"),
}


def build_parser(command: str | None, commands: dict[str, Command] = COMMANDS):
    """Top-level parser; only *command*'s registration function is imported and called."""
    parser = argparse.ArgumentParser(
        prog="irv2",
        description="Inception-ResNet-v2 train-eval-export pipeline on MindSpore.",
        epilog="commands: " + "; ".join(f"{n}: {text}" for n, (_, _, text) in commands.items()),
    )
    parser.add_argument("--version", action="version", version=f"irv2 {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, function, text) in commands.items():
        if name == command:
            getattr(importlib.import_module(module), function)(sub)
        else:
            sub.add_parser(name, help=text, add_help=False)
    return parser


def main(argv: list[str] | None = None, commands: dict[str, Command] = COMMANDS) -> int:
    """Entry point of ``python -m irv2_core`` (and, with more *commands*, of ``irv2``).

    *argv* None means the command is the process (its command line is ``sys.argv``); only then may
    train/evaluate use the compile cache. A list is an in-process call, which never turns it on.
    """
    own_process = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in commands else None, commands)
    args = parser.parse_args(argv)
    args.own_process = own_process
    if not getattr(args, "func", None):
        parser.print_help()
        return 2 if argv else 0
    try:
        return int(args.func(args) or 0)
    except TransientError as exc:  # its own status, so a launching task retries it
        print(
            f"irv2 {args.command}: error (transient, may pass if retried): {exc}", file=sys.stderr
        )
        return EXIT_TRANSIENT
    except Irv2Error as exc:
        print(f"irv2 {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

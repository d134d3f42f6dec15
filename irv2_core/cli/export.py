"""``irv2 export``, ``irv2 predict`` and ``irv2 import-weights``.

The core modules are imported inside the commands: they import MindSpore (~2 s), which
``--help`` does not need."""

from __future__ import annotations

import argparse
import json

from irv2_core.export import FORMATS
from irv2_core.models.metadata import EVAL_PROTOCOLS


def _run_export(args: argparse.Namespace) -> int:
    from irv2_core.export.exporter import export_model

    result = export_model(
        args.ckpt,
        args.format,
        args.out,
        num_classes=args.num_classes,
        image_size=args.image_size,
        protocol=args.protocol,
    )
    print(json.dumps(result.to_json(), indent=2))
    return 0


def add_export(subparsers) -> None:
    """Register ``irv2 export --ckpt CKPT --format MINDIR|ONNX|AIR --out PATH``."""
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to MINDIR, ONNX or AIR (verified)",
        description="Export a checkpoint and verify the file by reloading it (MINDIR: "
        "GraphCell; ONNX: onnxruntime). MINDIR has a dynamic batch; ONNX and AIR batch 1.",
    )
    p.add_argument("--ckpt", required=True, help="network checkpoint (e.g. a run's final.ckpt)")
    p.add_argument("--format", type=str.upper, choices=list(FORMATS), default="MINDIR")
    p.add_argument("--out", required=True, help="output file (the extension is added if missing)")
    p.add_argument("--num-classes", type=int, default=None, help="default: the checkpoint's")
    p.add_argument("--image-size", type=int, default=299, help="input height/width (>= 75)")
    p.add_argument(
        "--protocol",
        choices=list(EVAL_PROTOCOLS),
        default=None,
        help="input mean/std baked into the export; default: the one the checkpoint records "
        "(its weights expect it; a different one is refused), else its run's config.yaml, else zoo",
    )
    p.set_defaults(func=_run_export)


def _run_predict(args: argparse.Namespace) -> int:
    from irv2_core.export.predict import predict

    results = predict(
        args.model, args.images, args.classes, args.top_k, args.image_size, args.protocol
    )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    for item in results:
        print(item["image"])
        for entry in item["top"]:
            print(f"  {entry['probability']:.4f}  {entry['name']}")
    return 0


def add_predict(subparsers) -> None:
    """Register ``irv2 predict --model FILE IMAGE... [--classes] [--top-k] [--image-size]``."""
    p = subparsers.add_parser(
        "predict",
        help="classify images with a ckpt, MINDIR or ONNX model",
        description="Print the top-k classes and probabilities of each image, using the "
        "evaluation preprocessing of the model's input contract (the <model>.json an export "
        "writes beside it; a run's config.yaml for a checkpoint), else of --protocol.",
    )
    p.add_argument("--model", required=True, help="a .ckpt, .mindir or .onnx model")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, BMP)")
    p.add_argument("--classes", help="classes.json {name: index}; default: next to the model")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument(
        "--image-size", type=int, default=None, help="default: the model's input size, else 299"
    )
    p.add_argument(
        "--protocol",
        choices=list(EVAL_PROTOCOLS),
        default=None,
        help="default: the model's recorded protocol, else zoo (must agree with a recorded one)",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_run_predict)


def _run_import_weights(args: argparse.Namespace) -> int:
    from irv2_core.models.weights import import_timm_weights

    result = import_timm_weights(args.src, args.out, num_classes=args.num_classes)
    print(result["message"])
    print(json.dumps({k: v for k, v in result.items() if k != "message"}, indent=2))
    return 0


def add_import_weights(subparsers) -> None:
    """Register ``irv2 import-weights SRC.safetensors --out W.ckpt [--num-classes N]``."""
    p = subparsers.add_parser(
        "import-weights",
        help="convert timm inception_resnet_v2 safetensors weights to a MindSpore checkpoint",
        description="Convert a timm inception_resnet_v2 state dict (.safetensors; F32/F16/BF16) "
        "into a MindSpore checkpoint for evaluate/export/predict or fine-tuning (no torch needed).",
    )
    p.add_argument("src", help="timm state dict as .safetensors")
    p.add_argument("--out", required=True, help="checkpoint to write (.ckpt)")
    p.add_argument(
        "--num-classes",
        type=int,
        default=None,
        help="classifier width; if it differs from the file's, classif.* is dropped (fine-tune)",
    )
    p.set_defaults(func=_run_import_weights)

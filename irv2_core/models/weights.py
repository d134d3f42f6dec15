"""Weights in and out: timm safetensors -> MindSpore checkpoint, and checkpoint -> network.

``import_timm_weights`` reads a timm ``inception_resnet_v2`` state dict stored as safetensors with
numpy alone (no torch), renames its keys onto this project's parameter names (they are 1:1 by
design; only BatchNorm's names differ), checks every name and shape against the real network and
writes a MindSpore checkpoint atomically. ``load_model`` rebuilds a network from any checkpoint
this project writes (weights-only or resumable, with optimizer state) for evaluation or export.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from irv2_core.errors import Irv2Error
from irv2_core.models.ckpt_io import read_checkpoint, save_checkpoint_atomic
from irv2_core.runtime.io import atomic_write_bytes, sha256_file

# timm BatchNorm suffix -> MindSpore BatchNorm suffix; every other key is identical.
BN_RENAMES = {
    ".bn.weight": ".bn.gamma",
    ".bn.bias": ".bn.beta",
    ".bn.running_mean": ".bn.moving_mean",
    ".bn.running_var": ".bn.moving_variance",
}
IGNORED_SUFFIXES = (".num_batches_tracked",)  # a torch BN step counter, no MindSpore counterpart
CLASSIFIER_PREFIX = "classif."
RESIDUAL_BIAS_KEY = "repeat.0.conv2d.bias"
_SAFETENSORS_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_MAX_HEADER = 100 * 1024 * 1024  # the format's own limit on the JSON header


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read every tensor of a safetensors file into numpy arrays (BF16 is widened to float32).

    The format is an 8-byte little-endian header length, a JSON header mapping each name to
    ``{dtype, shape, data_offsets}`` (offsets relative to the end of the header), then the raw
    little-endian data. A truncated or malformed file raises Irv2Error naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise Irv2Error(f"weights file not found: {path}")
    blob = path.read_bytes()
    header, start = _parse_header(blob, path)
    out: dict[str, np.ndarray] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        out[name] = _decode_tensor(blob, start, name, info, path)
    return out


def _parse_header(blob: bytes, path: Path) -> tuple[dict[str, Any], int]:
    if len(blob) < 8:
        raise Irv2Error(f"{path} is not a safetensors file: only {len(blob)} bytes")
    size = int.from_bytes(blob[:8], "little")
    if size > _MAX_HEADER or 8 + size > len(blob):
        raise Irv2Error(
            f"{path} is not a valid safetensors file (header length {size} does not fit in "
            f"{len(blob)} bytes); the file is truncated or not safetensors. A torch .pth/.bin "
            "state dict converts with safetensors.torch.save_file(state_dict, 'w.safetensors')"
        )
    try:
        header = json.loads(blob[8 : 8 + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Irv2Error(f"{path}: the safetensors JSON header is unreadable ({exc})") from None
    if not isinstance(header, dict):
        raise Irv2Error(f"{path}: the safetensors header is not a JSON object")
    return header, 8 + size


def _decode_tensor(blob: bytes, start: int, name: str, info: Any, path: Path) -> np.ndarray:
    try:
        dtype, shape, (begin, end) = info["dtype"], list(info["shape"]), info["data_offsets"]
    except (KeyError, TypeError, ValueError):
        raise Irv2Error(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
    count = int(np.prod(shape, dtype=np.int64))
    width = 2 if dtype == "BF16" else np.dtype(_SAFETENSORS_DTYPES.get(dtype, np.uint8)).itemsize
    if dtype != "BF16" and dtype not in _SAFETENSORS_DTYPES:
        raise Irv2Error(
            f"{path}: tensor {name!r} has unsupported dtype {dtype!r}; "
            f"supported: BF16, {', '.join(_SAFETENSORS_DTYPES)}"
        )
    if not 0 <= begin <= end or start + end > len(blob) or end - begin != count * width:
        raise Irv2Error(
            f"{path}: tensor {name!r} ({dtype}{shape}) has data offsets {begin}..{end} that do "
            f"not match its size or the file length {len(blob)}; the file is truncated or corrupt"
        )
    raw = blob[start + begin : start + end]
    if dtype == "BF16":
        # bfloat16 is the top half of a float32: widen by shifting into the high 16 bits.
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    arr = np.frombuffer(raw, dtype=np.dtype(_SAFETENSORS_DTYPES[dtype]).newbyteorder("<"))
    return arr.reshape(shape).astype(arr.dtype.newbyteorder("="))


def write_safetensors(tensors: dict[str, np.ndarray], path: str | os.PathLike[str]) -> Path:
    """Write numpy arrays (float64/32/16, ints, bool) as a safetensors file, atomically."""
    names = {np.dtype(v).type: k for k, v in _SAFETENSORS_DTYPES.items()}
    header: dict[str, Any] = {}
    chunks, offset = [], 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name])
        data = arr.astype(arr.dtype.newbyteorder("<")).tobytes()
        header[name] = {
            "dtype": names[arr.dtype.type],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        chunks.append(data)
        offset += len(data)
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)  # the format aligns the data start to 8 bytes
    return atomic_write_bytes(path, len(head).to_bytes(8, "little") + head + b"".join(chunks))


def timm_to_ms_name(key: str) -> str | None:
    """Map a timm state-dict key onto this project's parameter name (None: not a parameter)."""
    if key.endswith(IGNORED_SUFFIXES):
        return None
    for old, new in BN_RENAMES.items():
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def _few(names: list[str], limit: int = 5) -> str:
    """'a, b, c ... (N in all)': enough names to act on without flooding the terminal."""
    shown = ", ".join(names[:limit])
    return f"{shown} ... ({len(names)} in all)" if len(names) > limit else shown


def _net_param_shapes(net) -> dict[str, tuple[int, ...]]:
    return {p.name: tuple(p.shape) for p in net.get_parameters()}


def check_state_against_net(
    state: dict[str, np.ndarray], expected: dict[str, tuple[int, ...]], source: str
) -> None:
    """Raise Irv2Error listing missing keys, unexpected keys and shape mismatches (if any)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{k} {tuple(state[k].shape)} != {expected[k]}"
        for k in set(state) & set(expected)
        if tuple(state[k].shape) != expected[k]
    )
    problems = []
    if missing:
        problems.append(f"missing keys: {_few(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_few(unexpected)}")
    if wrong:
        problems.append(f"shape mismatches (file != network): {_few(wrong)}")
    if problems:
        raise Irv2Error(
            f"{source} does not match Inception-ResNet-v2: "
            + "; ".join(problems)
            + ". Use a timm inception_resnet_v2 state dict (or a checkpoint written by irv2)."
        )


def import_timm_weights(
    src: str | os.PathLike[str], out: str | os.PathLike[str], num_classes: int | None = None
) -> dict[str, Any]:
    """Convert a timm inception_resnet_v2 safetensors state dict into a MindSpore checkpoint.

    Keys are renamed (BatchNorm weight/bias/running_* -> gamma/beta/moving_*; the step counters
    ``num_batches_tracked`` are dropped) and checked name-by-name and shape-by-shape against the
    real network, which is then saved to *out* atomically. ``num_classes`` other than the file's
    drops ``classif.*`` so the classifier starts fresh (fine-tuning). Returns a summary dict.
    """
    from irv2_core.models import create_model

    tensors = read_safetensors(src)
    state = {}
    for key, arr in tensors.items():
        name = timm_to_ms_name(key)
        if name is None:
            continue
        if name in state:
            raise Irv2Error(f"{src} holds two tensors for parameter {name!r} (e.g. {key!r})")
        state[name] = arr
    head = state.get(CLASSIFIER_PREFIX + "weight")
    if head is None or head.ndim != 2:
        raise Irv2Error(
            f"{src} has no classifier weight 'classif.weight' (2-D); it is not a timm "
            f"inception_resnet_v2 state dict (keys: {_few(sorted(tensors))})"
        )
    source_classes = int(head.shape[0])
    target = source_classes if num_classes is None else int(num_classes)
    dropped = []
    if target != source_classes:
        dropped = sorted(k for k in state if k.startswith(CLASSIFIER_PREFIX))
        for k in dropped:
            del state[k]
    residual_bias = RESIDUAL_BIAS_KEY in state
    net = create_model(num_classes=target, residual_bias=residual_bias, drop_rate=0.0)
    expected = _net_param_shapes(net)
    if dropped:
        expected = {k: v for k, v in expected.items() if not k.startswith(CLASSIFIER_PREFIX)}
    check_state_against_net(state, expected, str(src))
    _assign(net, state)
    save_checkpoint_atomic(net, out)
    message = f"imported {len(state)} tensors from {src} into {out}"
    if dropped:
        message += (
            f"; dropped {', '.join(dropped)} (the file has {source_classes} classes, "
            f"--num-classes is {target}): the classifier is freshly initialised for fine-tuning"
        )
    return {
        "source": str(src),
        "out": str(out),
        "tensors": len(state),
        "source_num_classes": source_classes,
        "num_classes": target,
        "residual_bias": residual_bias,
        "dropped": dropped,
        "bytes": Path(out).stat().st_size,
        "sha256": sha256_file(out),
        "message": message,
    }


def _assign(net, state: dict[str, np.ndarray]) -> None:
    import mindspore as ms

    for param in net.get_parameters():
        if param.name in state:
            param.set_data(ms.Tensor(np.ascontiguousarray(state[param.name], dtype=np.float32)))


def load_model(
    ckpt: str | os.PathLike[str],
    num_classes: int | None = None,
    residual_bias: bool | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Rebuild the network from a checkpoint, in eval mode; return ``(net, info)``.

    ``num_classes`` and ``residual_bias`` default to what the checkpoint holds (the classifier's
    width, the presence of the residual biases); given values that disagree with the file raise
    Irv2Error. Optimizer state in a resumable checkpoint is ignored. ``info`` holds
    ``{checkpoint, num_classes, residual_bias}``.
    """
    import mindspore as ms

    from irv2_core.models import create_model

    params = read_checkpoint(ckpt)
    head = params.get(CLASSIFIER_PREFIX + "weight")
    if head is None:
        raise Irv2Error(
            f"{ckpt} has no 'classif.weight': it is not an Inception-ResNet-v2 checkpoint "
            "(use final.ckpt of a run, or `irv2 import-weights` output)"
        )
    found_classes, found_bias = int(head.shape[0]), RESIDUAL_BIAS_KEY in params
    if num_classes is not None and int(num_classes) != found_classes:
        raise Irv2Error(
            f"{ckpt} has a {found_classes}-class classifier but num_classes={num_classes} was "
            "asked for; omit --num-classes to use the checkpoint's"
        )
    if residual_bias is not None and bool(residual_bias) != found_bias:
        raise Irv2Error(
            f"{ckpt} was saved with residual_bias={found_bias} but residual_bias={residual_bias} "
            "was asked for; omit it to use the checkpoint's"
        )
    net = create_model(num_classes=found_classes, residual_bias=found_bias, drop_rate=0.0)
    expected = _net_param_shapes(net)
    state = {k: v for k, v in params.items() if k in expected}
    check_state_against_net(
        {k: np.empty(v.shape, np.uint8) for k, v in state.items()}, expected, str(ckpt)
    )
    ms.load_param_into_net(net, state, strict_load=True)
    net.set_train(False)
    return net, {"checkpoint": str(ckpt), "num_classes": found_classes, "residual_bias": found_bias}


def _cmd_import(args: argparse.Namespace) -> int:
    result = import_timm_weights(args.src, args.out, num_classes=args.num_classes)
    print(result["message"])
    print(json.dumps({k: v for k, v in result.items() if k != "message"}, indent=2))
    return 0


def add_cli(subparsers) -> None:
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
    p.set_defaults(func=_cmd_import)

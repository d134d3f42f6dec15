"""Weights in and out: timm safetensors -> MindSpore checkpoint, and checkpoint -> network.

``import_timm_weights`` reads a timm ``inception_resnet_v2`` state dict stored as safetensors with
numpy alone (no torch), renames its keys onto this project's parameter names (they are 1:1 by
design; only BatchNorm's names differ), checks every name and shape against the real network and
writes a MindSpore checkpoint atomically, recording in it that the weights expect timm's
``inception`` input protocol (``models.protocol``).

Putting weights into a network goes through one function, :func:`load_into`, whichever the source:
``load_model`` rebuilds a network from any checkpoint this project writes (weights-only or
resumable) for evaluation or export, ``load_pretrained`` starts fine-tuning from a checkpoint with
another classifier, and a run's resume (``training.checkpoints``) restores its train cell.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np

from irv2_core.errors import Irv2Error
from irv2_core.models.ckpt_io import read_checkpoint, save_checkpoint_atomic
from irv2_core.models.factory import create_model
from irv2_core.models.metadata import TIMM_PROTOCOL
from irv2_core.models.protocol import protocol_metadata
from irv2_core.models.safetensors_io import read_safetensors
from irv2_core.runtime.io import sha256_file

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
    real network, which is then saved to *out* atomically, recording timm's input protocol
    (``inception``) inside it. ``num_classes`` other than the file's
    drops ``classif.*`` so the classifier starts fresh (fine-tuning). Returns a summary dict.
    """
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
    save_checkpoint_atomic(net, out, metadata=protocol_metadata(TIMM_PROTOCOL))
    message = (
        f"imported {len(state)} tensors from {src} into {out} (recorded input protocol "
        f"{TIMM_PROTOCOL!r}: export, evaluate, predict and fine-tuning use it by default)"
    )
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
        "protocol": TIMM_PROTOCOL,
        "bytes": Path(out).stat().st_size,
        "sha256": sha256_file(out),
        "message": message,
    }


def _assign(net, state: dict[str, np.ndarray]) -> None:
    for param in net.get_parameters():
        if param.name in state:
            param.set_data(ms.Tensor(np.ascontiguousarray(state[param.name], dtype=np.float32)))


def load_model(
    ckpt: str | os.PathLike[str],
    num_classes: int | None = None,
    residual_bias: bool | None = None,
    input_protocol: str | None = "zoo",
) -> tuple[Any, dict[str, Any]]:
    """Rebuild the network from a checkpoint, in eval mode; return ``(net, info)``.

    The network takes 0..255 pixels normalised inside with *input_protocol* (None: it takes
    normalised float32, timm's contract; the checkpoint is the same either way).
    ``num_classes`` and ``residual_bias`` default to what the checkpoint holds (the classifier's
    width, the presence of the residual biases); given values that disagree with the file raise
    Irv2Error. Optimizer state in a resumable checkpoint is ignored. ``info`` holds
    ``{checkpoint, num_classes, residual_bias}``.
    """
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
    net = create_model(
        num_classes=found_classes,
        residual_bias=found_bias,
        drop_rate=0.0,
        input_protocol=input_protocol,
    )
    expected = _net_param_shapes(net)
    state = {k: v for k, v in params.items() if k in expected}
    check_state_against_net(
        {k: np.empty(v.shape, np.uint8) for k, v in state.items()}, expected, str(ckpt)
    )
    load_into(net, state, ckpt, "use the checkpoint's own num_classes and residual_bias")
    net.set_train(False)
    return net, {"checkpoint": str(ckpt), "num_classes": found_classes, "residual_bias": found_bias}


def load_into(cell, params: dict, path: Path | str, fix: str) -> list[str]:
    """``load_param_into_net`` with a shape mismatch turned into an Irv2Error ending in *fix*;
    returns the names of the cell's parameters the checkpoint did not provide."""
    try:
        missing, _ = ms.load_param_into_net(cell, params)
    except RuntimeError as exc:
        detail = str(exc).split(". May")[0].split(".May")[0]
        raise Irv2Error(f"checkpoint {path} does not fit: {detail}; {fix}") from None
    return missing


def load_pretrained(net, path: str | Path) -> list[str]:
    """Load weights from *path* into *net* for fine-tuning, leaving out tensors whose shape does
    not fit (a classifier of another width); return the names left out."""
    path = Path(path)
    if not path.is_file():
        raise Irv2Error(f"pretrained checkpoint not found: {path} (config key 'pretrained')")
    params = read_checkpoint(path)
    own = {p.name: p for p in net.get_parameters()}
    skipped = [k for k, v in params.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    for k in skipped:
        params.pop(k)
    missing = load_into(net, params, path, "is it an Inception-ResNet-v2 checkpoint?")
    left = [m for m in missing if m not in skipped]
    if left:
        raise Irv2Error(
            f"pretrained checkpoint {path} lacks {len(left)} of the network's parameters, "
            f"e.g. {left[:3]}; is it an Inception-ResNet-v2 with the same residual_bias?"
        )
    return skipped

"""``irv2 predict``: classify image files with a checkpoint, MINDIR or ONNX model.

Images go through exactly the evaluation preprocessing (``irv2_core.data.transforms``), so a
prediction here agrees with what ``evaluate`` measured. Class names come from a
``classes.json`` (``{name: index}``, as ``convert`` writes it); by default the one next to the
model file is used, which is where a run folder keeps it beside ``final.ckpt``.

Input contract: models take uint8 NCHW pixels and normalise inside. An export records its
protocol and image size in ``<file>.json`` beside it (ONNX also in its metadata_props); predict
uses them, and refuses a ``--protocol``/``--image-size`` that disagrees. A checkpoint uses the
protocol recorded in it (refusing a ``--protocol`` that disagrees), else the ``eval_protocol`` of
the run's ``config.yaml`` beside it. An export without a recorded contract
(made before issue 12) took normalised float32: predict normalises for it in numpy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import nn

from irv2_core.data.transforms import normalize_pixels, preprocess_image
from irv2_core.errors import Irv2Error
from irv2_core.export.exporter import ONNX_METADATA_KEY, checkpoint_protocol, contract_path
from irv2_core.models.metadata import EVAL_PROTOCOLS, check_image_size
from irv2_core.models.weights import load_model
from irv2_core.runtime.context import compile_cache_disabled, pynative_mode
from irv2_core.runtime.io import read_json

SUFFIXES = (".ckpt", ".mindir", ".onnx")


def load_class_names(classes: str | os.PathLike[str] | None, model: Path) -> list[str] | None:
    """Index -> name list from *classes* or the model's sibling classes.json (None if neither)."""
    path = Path(classes) if classes else model.parent / "classes.json"
    if not path.is_file():
        if classes:
            raise Irv2Error(f"classes file not found: {path}")
        return None
    try:
        mapping = read_json(path)
        names = {int(i): str(n) for n, i in mapping.items()}
    except (ValueError, AttributeError, TypeError) as exc:
        raise Irv2Error(f"{path} is not a classes.json ({{name: index}}): {exc}") from None
    if sorted(names) != list(range(len(names))):
        raise Irv2Error(f"{path}: class indices must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]


def _ckpt_runner(path: Path, protocol: str) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    net, _ = load_model(path, input_protocol=protocol)
    return (lambda x: net(ms.Tensor(x)).asnumpy()), True


def _mindir_runner(path: Path, _protocol: str) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    try:
        cell = nn.GraphCell(ms.load(str(path)))
    except (RuntimeError, ValueError) as exc:
        raise Irv2Error(f"cannot load MINDIR {path}: {str(exc).splitlines()[0]}") from None
    return (lambda x: cell(ms.Tensor(x)).asnumpy()), False


def _onnx_runner(path: Path, _protocol: str) -> tuple[Callable[[np.ndarray], np.ndarray], bool]:
    try:
        import onnxruntime as ort
    except ImportError:
        raise Irv2Error(
            "predicting with .onnx needs onnxruntime: pip install onnxruntime"
        ) from None
    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise Irv2Error(f"cannot load ONNX model {path}: {exc}") from None
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})[0]), False


def _check_model(model: Path) -> str:
    if not model.is_file():
        raise Irv2Error(f"model file not found: {model}")
    suffix = model.suffix.lower()
    if suffix not in SUFFIXES:
        raise Irv2Error(f"{model}: unknown model type {suffix!r}; use one of {', '.join(SUFFIXES)}")
    return suffix


def _runner(model: Path, protocol: str):
    """(run(x) -> logits, accepts_a_batch) for the model file, chosen by its extension."""
    runners = {".ckpt": _ckpt_runner, ".mindir": _mindir_runner, ".onnx": _onnx_runner}
    return runners[_check_model(model)](model, protocol)


def recorded_contract(model: Path) -> dict[str, Any] | None:
    """The input contract an export recorded: ``<model>.json``, else (ONNX) its metadata_props;
    None for a checkpoint or an export made before contracts existed."""
    side = contract_path(model)
    if side.is_file():
        try:
            contract = read_json(side)
        except ValueError as exc:
            raise Irv2Error(f"{side} is not valid JSON ({exc}); re-export the model") from None
    elif model.suffix.lower() == ".onnx":
        try:
            import onnxruntime as ort
        except ImportError:
            return None
        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        text = session.get_modelmeta().custom_metadata_map.get(ONNX_METADATA_KEY)
        if text is None:
            return None
        contract = json.loads(text)
    else:
        return None
    if not isinstance(contract, dict) or contract.get("protocol") not in EVAL_PROTOCOLS:
        raise Irv2Error(f"the input contract of {model} names no known protocol; re-export it")
    return contract


def _resolve_input(
    model: Path, protocol: str | None, image_size: int | None
) -> tuple[str, int, bool]:
    """(protocol, image size, model takes pixels) from the model's record and the caller's."""
    suffix = model.suffix.lower()
    if suffix == ".ckpt":
        return checkpoint_protocol(model, protocol), image_size or 299, True
    contract = recorded_contract(model)
    if contract is None:  # an export from before issue 12: normalised float32 input
        size = image_size or (onnx_image_size(model) if suffix == ".onnx" else None) or 299
        return protocol or "zoo", size, False
    if protocol and protocol != contract["protocol"]:
        raise Irv2Error(
            f"{model} was exported for protocol {contract['protocol']!r} (its input contract "
            f"says so) but --protocol {protocol} was given; omit --protocol"
        )
    size = int(contract["image_size"])
    if image_size and image_size != size:
        raise Irv2Error(
            f"{model} takes {size}x{size} inputs (its input contract says so) but "
            f"--image-size {image_size} was given; omit --image-size"
        )
    return contract["protocol"], size, contract.get("dtype") == "uint8"


def onnx_image_size(model: Path) -> int | None:
    """The fixed input height of an ONNX model (exports are static), or None if not fixed."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    shape = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).get_inputs()[0]
    size = shape.shape[2] if len(shape.shape) == 4 else None
    return size if isinstance(size, int) else None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64 (stable for large logits)."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def predict(
    model: str | os.PathLike[str],
    images: Sequence[str | os.PathLike[str]],
    classes: str | os.PathLike[str] | None = None,
    top_k: int = 5,
    image_size: int | None = None,
    protocol: str | None = None,
) -> list[dict[str, Any]]:
    """Top-k classes with probabilities for each image, as ``[{image, top: [{index, name,
    probability}]}]``. *protocol* and *image_size* default to what the model recorded (an
    export's input contract, a checkpoint's protocol, a run's config.yaml), else ``zoo`` and
    299."""
    model = Path(model)
    if not images:
        raise Irv2Error("no images given to predict")
    if top_k < 1:
        raise Irv2Error(f"--top-k must be at least 1, got {top_k}")
    _check_model(model)
    protocol, image_size, takes_pixels = _resolve_input(model, protocol, image_size)
    check_image_size(image_size)
    names = load_class_names(classes, model)
    batch = np.stack([preprocess_image(p, protocol, image_size) for p in images])
    if not takes_pixels:
        batch = normalize_pixels(batch, protocol)
    with compile_cache_disabled(), pynative_mode():
        run, batched = _runner(model, protocol)
        try:
            logits = run(batch) if batched else np.concatenate([run(x[None]) for x in batch])
        except (RuntimeError, ValueError) as exc:
            raise Irv2Error(
                f"{model} could not run on {image_size}x{image_size} inputs "
                f"({str(exc).splitlines()[0]}); pass the --image-size it was exported with"
            ) from None
    if names is not None and len(names) != logits.shape[1]:
        raise Irv2Error(
            f"the classes file lists {len(names)} classes but {model} outputs "
            f"{logits.shape[1]}; use the classes.json of the run that trained this model"
        )
    probs = softmax(logits)
    results = []
    for path, row in zip(images, probs, strict=True):
        order = np.argsort(-row, kind="stable")[: min(top_k, row.size)]
        top = [
            {
                "index": int(i),
                "name": names[i] if names else f"class_{i}",
                "probability": float(row[i]),
            }
            for i in order
        ]
        results.append({"image": str(path), "top": top})
    return results

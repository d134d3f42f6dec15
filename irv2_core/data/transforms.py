"""Image transforms of the recipe: random-crop training augmentation and two eval protocols.

``zoo``: square resize to ``int(size/0.875)`` (aspect not kept, as the model zoo does), center
crop, ImageNet mean/std. ``inception``: shorter side to ``int(size/0.8975)`` bicubic, center crop,
mean = std = 0.5 (what timm's published weights expect).

The pipelines end in **uint8 CHW** pixels (0..255, RGB): the network normalises them with the
protocol's mean/std as its first op (``InceptionResNetV2(input_protocol=...)``), for training
and evaluation alike. A float32 ``Normalize`` in the pipeline cost a quarter of its CPU time and
4x the bytes per batch (see docs/perf.md). :func:`preprocess_image` applies exactly the eval
pipeline to one image for prediction; :func:`normalize_pixels` is the network's normalisation
in numpy, for models that take normalised floats (timm, exports made before issue 12).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from mindspore.dataset import vision
from mindspore.dataset.vision import Inter

from irv2_core.errors import Irv2Error
from irv2_core.models.metadata import EVAL_PROTOCOLS, EvalProtocol

__all__ = [
    "PROTOCOLS",
    "eval_transforms",
    "normalize_pixels",
    "preprocess_image",
    "train_transforms",
]

PROTOCOLS = EVAL_PROTOCOLS
_INTERPOLATION = {"linear": Inter.LINEAR, "bicubic": Inter.BICUBIC}


def _protocol(name: str) -> EvalProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise Irv2Error(
            f"unknown eval protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}"
        ) from None


def _to_chw(protocol: str) -> list:
    _protocol(protocol)  # an unknown protocol fails here, before any data flows
    return [vision.HWC2CHW()]  # stays uint8: the network normalises


def normalize_pixels(pixels: np.ndarray, protocol: str = "zoo") -> np.ndarray:
    """uint8/float NCHW or CHW pixels 0..255 -> float32 normalised with *protocol*'s mean/std,
    the same float32 arithmetic as the network's first op."""
    p = _protocol(protocol)
    shape = (3, 1, 1)
    mean = np.array(p.mean, np.float32).reshape(shape) * np.float32(255)
    std = np.array(p.std, np.float32).reshape(shape) * np.float32(255)
    return ((np.asarray(pixels, np.float32) - mean) / std).astype(np.float32)


def train_transforms(
    image_size: int, protocol: str = "zoo", crop_scale_min: float = 0.08, hflip: bool = True
) -> list:
    """Ops mapped on the raw JPEG bytes for training: decode + random crop (area
    *crop_scale_min*-1, ratio 3/4-4/3), horizontal flip (if *hflip*), colour jitter 0.4,
    CHW uint8 (the network normalises with *protocol*). The defaults are the zoo's."""
    flip = [vision.RandomHorizontalFlip(prob=0.5)] if hflip else []
    return [
        vision.RandomCropDecodeResize(image_size, scale=(crop_scale_min, 1.0), ratio=(0.75, 1.333)),
        *flip,
        vision.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4),
        *_to_chw(protocol),
    ]


def eval_resize_size(image_size: int, protocol: str) -> int:
    """Resize target before the center crop: ``int(image_size / crop_pct)`` (341/333 at 299)."""
    return int(image_size / _protocol(protocol).crop_pct)


def eval_transforms(image_size: int, protocol: str = "zoo") -> list:
    """Deterministic ops mapped on the raw JPEG bytes for evaluation under *protocol*."""
    p = _protocol(protocol)
    resize = eval_resize_size(image_size, protocol)
    size = (resize, resize) if p.square_resize else resize
    return [
        vision.Decode(),
        vision.Resize(size, interpolation=_INTERPOLATION[p.interpolation]),
        vision.CenterCrop(image_size),
        *_to_chw(protocol),
    ]


def preprocess_image(
    path_or_bytes: str | os.PathLike[str] | bytes, protocol: str = "zoo", image_size: int = 299
) -> np.ndarray:
    """One image file (or its encoded bytes) -> (3, H, W) uint8 pixels, exactly the eval pipeline
    (feed them to the network or an export as they are; it normalises)."""
    if isinstance(path_or_bytes, bytes):
        data, where = path_or_bytes, "the given bytes"
    else:
        path = Path(path_or_bytes)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise Irv2Error(f"cannot read image {path}: {exc.strerror}") from None
        where = str(path)
    ops = eval_transforms(image_size, protocol)
    try:
        out = ops[0](np.frombuffer(data, dtype=np.uint8))
        if out.ndim == 2:  # greyscale JPEG: the network wants three channels
            out = np.repeat(out[:, :, None], 3, axis=2)
        for op in ops[1:]:
            out = op(out)
    except (RuntimeError, ValueError) as exc:
        raise Irv2Error(
            f"cannot decode image {where}: {exc}. Use a JPEG, PNG or BMP RGB image."
        ) from None
    return np.ascontiguousarray(out, dtype=np.uint8)

"""Image transforms of the recipe: random-crop training augmentation and two eval protocols.

``zoo``: square resize to ``int(size/0.875)`` (aspect not kept, as the model zoo does), center
crop, ImageNet mean/std. ``inception``: shorter side to ``int(size/0.8975)`` bicubic, center crop,
mean = std = 0.5 (what timm's published weights expect). Training normalises with the protocol's
mean/std so that train and eval inputs share one scale. :func:`preprocess_image` applies exactly
the eval pipeline to one image for prediction.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from mindspore.dataset import vision
from mindspore.dataset.vision import Inter

from irv2_core.errors import Irv2Error
from irv2_core.models.metadata import EVAL_PROTOCOLS, EvalProtocol

__all__ = ["PROTOCOLS", "eval_transforms", "preprocess_image", "train_transforms"]

PROTOCOLS = EVAL_PROTOCOLS
_INTERPOLATION = {"linear": Inter.LINEAR, "bicubic": Inter.BICUBIC}


def _protocol(name: str) -> EvalProtocol:
    try:
        return PROTOCOLS[name]
    except KeyError:
        raise Irv2Error(
            f"unknown eval protocol {name!r}; choose one of: {', '.join(PROTOCOLS)}"
        ) from None


def _normalize(protocol: str) -> list:
    p = _protocol(protocol)
    # Normalising uint8 pixels with mean/std scaled by 255 equals Rescale(1/255) + Normalize.
    mean = [m * 255.0 for m in p.mean]
    std = [s * 255.0 for s in p.std]
    return [vision.Normalize(mean=mean, std=std), vision.HWC2CHW()]


def train_transforms(
    image_size: int, protocol: str = "zoo", crop_scale_min: float = 0.08, hflip: bool = True
) -> list:
    """Ops mapped on the raw JPEG bytes for training: decode + random crop (area
    *crop_scale_min*-1, ratio 3/4-4/3), horizontal flip (if *hflip*), colour jitter 0.4,
    normalise, CHW float32. The defaults are the zoo's."""
    flip = [vision.RandomHorizontalFlip(prob=0.5)] if hflip else []
    return [
        vision.RandomCropDecodeResize(image_size, scale=(crop_scale_min, 1.0), ratio=(0.75, 1.333)),
        *flip,
        vision.RandomColorAdjust(brightness=0.4, contrast=0.4, saturation=0.4),
        *_normalize(protocol),
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
        *_normalize(protocol),
    ]


def preprocess_image(
    path_or_bytes: str | os.PathLike[str] | bytes, protocol: str = "zoo", image_size: int = 299
) -> np.ndarray:
    """One image file (or its encoded bytes) -> (3, H, W) float32, exactly the eval pipeline."""
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
    return np.ascontiguousarray(out, dtype=np.float32)

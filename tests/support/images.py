"""The tests' image sets: small learnable JPEG trees and the one MindRecord folder the training
tests share (converted by the real ``irv2_core.data.convert``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TRAIN_PER_CLASS, VAL_PER_CLASS, CLASSES = 8, 3, 3

CLASS_COLOURS = [(220, 40, 40), (40, 200, 60), (50, 70, 220), (230, 210, 40), (160, 60, 200)]


def make_image(
    label: int, rng: np.random.Generator, size: tuple[int, int] = (96, 80)
) -> Image.Image:
    """A small learnable RGB image: class colour plus noise and a class-dependent stripe."""
    w, h = size
    base = np.array(CLASS_COLOURS[label % len(CLASS_COLOURS)], dtype=np.float32)
    arr = base + rng.normal(0, 25, size=(h, w, 3))
    stripe = (label * 13) % max(h - 8, 1)
    arr[stripe : stripe + 8, :, :] = 255 - base
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def write_image_tree(
    root: Path, classes: int = 3, per_class: int = 8, seed: int = 0, split: str | None = None
) -> Path:
    """Write ``root/[split/]class_k/img_i.jpg`` JPEGs; return the folder that holds the classes."""
    rng = np.random.default_rng(seed)
    top = root / split if split else root
    for c in range(classes):
        d = top / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            make_image(c, rng).save(d / f"img_{i:03d}.jpg", quality=90)
    return top


def make_mindrecord(root: Path) -> Path:
    """``root/mr``: train (3 classes x 8) and val (3 x 3) MindRecord + classes.json."""
    from irv2_core.data.convert import convert

    write_image_tree(root / "images", CLASSES, TRAIN_PER_CLASS, seed=0, split="train")
    write_image_tree(root / "images", CLASSES, VAL_PER_CLASS, seed=1, split="val")
    convert(root / "images", root / "mr")
    return root / "mr"

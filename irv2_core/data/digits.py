"""A small, real image set for the demo, made offline from scikit-learn's bundled digits.

``sklearn.datasets.load_digits`` ships 1,797 handwritten 8x8 greyscale digits (about 180 per
class) inside the package, so the demo needs no download. Each digit is upsampled with bicubic
interpolation and drawn as dark ink on light paper in an RGB JPEG, with a small deterministic
jitter of colours and position so that the set is not trivially uniform. The output is plain class
folders ``0/ .. 9/`` (``irv2 convert`` makes the seeded train/val split).
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import publish_dir

__all__ = [
    "DIGIT_CLASSES",
    "DEFAULT_IMAGE_SIZE",
    "make_digits_dataset",
    "render_digit",
]

DIGIT_CLASSES = [str(d) for d in range(10)]
DEFAULT_IMAGE_SIZE = 80  # a little above IRv2's 75 px minimum, so crops still hold the digit
JPEG_QUALITY = 95
_DIGIT_FRACTION = 0.8  # the digit's share of the frame; the rest is paper margin
_FILE_PATTERN = "digit_{index:04d}.jpg"


def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_digits()
    return bunch.images, bunch.target


def render_digit(pixels: np.ndarray, image_size: int, rng: np.random.Generator) -> Image.Image:
    """Render one 8x8 digit (values 0..16) as an RGB image of ``image_size`` square pixels.

    The digit is upsampled bicubically to 80 % of the frame, shifted by at most a quarter of the
    margin, and blended as ink over paper; ink and paper colours are drawn from *rng*, so the same
    generator state always gives the same image.
    """
    ink_mask = Image.fromarray(np.clip(pixels * (255.0 / 16.0), 0, 255).astype(np.uint8), "L")
    side = max(8, round(image_size * _DIGIT_FRACTION))
    alpha = np.asarray(ink_mask.resize((side, side), Image.BICUBIC), dtype=np.float32) / 255.0
    margin = image_size - side
    max_shift = margin // 4
    top, left = (margin // 2 + rng.integers(-max_shift, max_shift + 1, size=2)).tolist()
    canvas = np.zeros((image_size, image_size), dtype=np.float32)
    canvas[top : top + side, left : left + side] = alpha
    paper = rng.uniform(200, 255) + rng.uniform(-12, 12, size=3)
    ink = rng.uniform(0, 70) + rng.uniform(-20, 20, size=3)
    rgb = paper * (1.0 - canvas[..., None]) + ink * canvas[..., None]
    return Image.fromarray(np.clip(rgb, 0, 255).round().astype(np.uint8), "RGB")


def _encode_jpeg(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


def _planned_files(per_class: int | None, image_size: int, seed: int) -> dict[str, bytes]:
    """Every file of the dataset as ``{"<class>/<name>.jpg": jpeg_bytes}``, in memory."""
    images, targets = _load_digits()
    files: dict[str, bytes] = {}
    taken = dict.fromkeys(range(10), 0)
    for index, (pixels, label) in enumerate(zip(images, targets, strict=True)):
        label = int(label)
        if per_class is not None and taken[label] >= per_class:
            continue
        taken[label] += 1
        # per-image generator: an image does not change when per_class selects fewer others
        rng = np.random.default_rng([seed, index])
        name = f"{label}/{_FILE_PATTERN.format(index=index)}"
        files[name] = _encode_jpeg(render_digit(pixels, image_size, rng))
    return files


def _existing_files(dest: Path) -> dict[str, Path] | None:
    """The digit files under *dest*, or None if *dest* holds anything a digits set would not."""
    found: dict[str, Path] = {}
    for entry in dest.iterdir():
        if not entry.is_dir() or entry.name not in DIGIT_CLASSES:
            return None
        for item in entry.iterdir():
            if not (item.is_file() and item.name.startswith("digit_") and item.suffix == ".jpg"):
                return None
            found[f"{entry.name}/{item.name}"] = item
    return found


def _unchanged(existing: dict[str, Path], planned: dict[str, bytes]) -> bool:
    if existing.keys() != planned.keys():
        return False
    return all(existing[name].read_bytes() == data for name, data in planned.items())


def _write_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def make_digits_dataset(
    dest: str | os.PathLike[str],
    per_class: int | None = None,
    image_size: int = DEFAULT_IMAGE_SIZE,
    seed: int = 0,
) -> dict[str, Any]:
    """Write the digits as RGB JPEG class folders ``dest/0 .. dest/9`` and return their counts.

    ``per_class=None`` keeps all 1,797 digits (174-183 per class); an integer keeps the first that
    many of each class in scikit-learn's order. The tree is built in a temporary sibling folder and
    renamed into place, so *dest* is never half-written. Calling again with the same arguments
    rewrites nothing (``written`` is 0); different arguments replace an earlier digits tree. A
    *dest* that holds anything else raises Irv2Error and is left untouched. Returns ``{dest,
    classes, counts, total, image_size, per_class, seed, written}``.
    """
    if image_size < 16:
        raise Irv2Error(f"image_size must be at least 16 px to draw a digit, got {image_size}")
    if per_class is not None and per_class < 1:
        raise Irv2Error(f"per_class must be a positive number of images or None, got {per_class}")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise Irv2Error(f"{dest} exists and is not a folder; choose another destination")
    existing = _existing_files(dest) if dest.exists() else {}
    if existing is None:
        raise Irv2Error(
            f"{dest} already holds files that are not a digits image set; refusing to replace it. "
            "Choose an empty or new folder, or delete it first."
        )
    planned = _planned_files(per_class, image_size, seed)
    written = 0
    if not (existing and _unchanged(existing, planned)):
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
        try:
            _write_tree(tmp, planned)
            publish_dir(tmp, dest)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        written = len(planned)
    counts = {c: 0 for c in DIGIT_CLASSES}
    for name in planned:
        counts[name.split("/", 1)[0]] += 1
    return {
        "dest": str(dest),
        "classes": list(DIGIT_CLASSES),
        "counts": counts,
        "total": len(planned),
        "image_size": image_size,
        "per_class": per_class,
        "seed": seed,
        "written": written,
    }

"""A tiny image tree holding the awkward cases the data stages must handle (shared by the
stage and convert tests): valid-but-awkward images, broken files, odd names, a non-image."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

# Files that convert must skip, with a word its reason must contain.
BROKEN = {
    "fish/truncated.jpg": "truncated",
    "fish/empty.jpg": "empty",
    "fish/error_page.jpg": "html",
}
IGNORED = ["fish/notes.txt"]  # not an image extension: never a candidate
SIZE = (40, 30)  # w, h: small, non-square so a rotation shows in the decoded shape


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _photo(rng: np.random.Generator, colour: tuple[int, int, int]) -> Image.Image:
    arr = np.array(colour, np.float32) + rng.normal(0, 20, (SIZE[1], SIZE[0], 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def awkward_tree(seed: int = 0) -> dict[str, bytes]:
    """Relative path -> file bytes for three classes (cat, dog, fish) of awkward cases."""
    rng = np.random.default_rng(seed)
    cat, dog, fish = (_photo(rng, c) for c in [(200, 60, 60), (60, 200, 60), (60, 60, 200)])
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored image must come out 30 wide x 40 high
    rgba = np.zeros((SIZE[1], SIZE[0], 4), np.uint8)
    rgba[:, : SIZE[0] // 2] = (0, 200, 0, 255)  # left half opaque green, right half transparent
    good = _encode(cat, "JPEG", quality=90)
    files = {
        "cat/good_0.jpg": good,
        "cat/good_1.JPEG": _encode(_photo(rng, (210, 50, 50)), "JPEG", quality=90),
        "cat/gray.jpg": _encode(cat.convert("L"), "JPEG"),
        "cat/cmyk.jpg": _encode(cat.convert("CMYK"), "JPEG"),
        "cat/exif rotated.jpg": _encode(cat, "JPEG", exif=exif.tobytes()),
        "cat/one_px.png": _encode(Image.new("RGB", (1, 1), (200, 60, 60)), "PNG"),
        "dog/good_2.jpg": _encode(dog, "JPEG", quality=90),
        "dog/good_3.jpeg": _encode(_photo(rng, (50, 210, 50)), "JPEG", quality=90),
        "dog/rgba.png": _encode(Image.fromarray(rgba, "RGBA"), "PNG"),
        "dog/palette.png": _encode(dog.convert("P", palette=Image.Palette.ADAPTIVE), "PNG"),
        "dog/sixteen.png": _encode(
            Image.fromarray(np.full((SIZE[1], SIZE[0]), 32896, np.uint16)), "PNG"
        ),
        "dog/ünïcode name.jpg": _encode(_photo(rng, (40, 220, 40)), "JPEG", quality=90),
        "fish/good_4.jpg": _encode(fish, "JPEG", quality=90),
        "fish/good_5.jpg": _encode(_photo(rng, (50, 50, 210)), "JPEG", quality=90),
        "fish/good_6.png": _encode(_photo(rng, (40, 40, 220)), "PNG"),
        "fish/truncated.jpg": good[: len(good) // 2],
        "fish/empty.jpg": b"",
        "fish/error_page.jpg": b"<!DOCTYPE html><html><body>503 Service Unavailable</body></html>",
        "fish/notes.txt": b"not an image",
    }
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    """Write *files* under *root*; return *root*."""
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def upload_tree(client, bucket: str, prefix: str, files: dict[str, bytes]) -> None:
    """Put *files* under ``prefix`` in *bucket* (created if needed), single-part uploads."""
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=bucket)
    for rel, data in files.items():
        client.put_object(Bucket=bucket, Key=prefix + rel, Body=data)

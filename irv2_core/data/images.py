"""Check one image file and turn it into RGB JPEG bytes that MindSpore's decoder reads.

Good RGB JPEGs are kept byte-for-byte (no generation loss) and checked cheaply: their marker
structure is parsed and the end-of-image marker must follow the scan, which catches truncation
without decoding (optionally they are also decoded, at 1/8 scale). Everything else that is a
valid image (grayscale, CMYK, alpha, palette, 16-bit, EXIF-rotated) is decoded in full,
normalised to 8-bit RGB and re-encoded.
Broken inputs raise :class:`BadImage` with a reason a person can act on.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
# Of those, what MindSpore's Decode reads as-is (image-folder datasets skip the rest; convert
# re-encodes them to JPEG instead).
DECODABLE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp"})
MAX_IMAGE_BYTES = 64 << 20  # MindRecord pages top out at 256 MiB; nothing real comes close
JPEG_QUALITY = 95
EXIF_ORIENTATION = 0x0112
_HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class BadImage(Exception):
    """The file cannot be used as a training image; ``str(exc)`` is the reason."""


def is_image_name(path: str | Path) -> bool:
    """True if *path* has an image extension (case-insensitive) and is not a hidden file."""
    p = Path(path)
    return not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS


def _describe_non_image(head: bytes) -> str:
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype", b"<html", b"<?xml", b"<")):
        return "not an image: the file holds HTML/XML text (an error page saved as an image?)"
    if text.startswith((b"{", b"[")):
        return "not an image: the file holds JSON text"
    return f"not an image: unrecognised content (first bytes {head[:8]!r})"


def _open(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise BadImage(_describe_non_image(data[:64])) from None
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise BadImage(f"image too large to decode safely: {exc}") from None


def _load(img: Image.Image) -> None:
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as exc:
        msg = str(exc)
        if "truncated" in msg or "broken data stream" in msg:
            raise BadImage(f"truncated or corrupt image data ({msg})") from None
        raise BadImage(f"image data cannot be decoded ({msg})") from None


def _orientation(img: Image.Image) -> int:
    try:
        return int(img.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # a malformed EXIF block must not sink an otherwise good image
        return 1


def _to_rgb(img: Image.Image) -> tuple[Image.Image, str]:
    """Normalise a fully loaded image to 8-bit RGB; return it and why it needed work."""
    mode = img.mode
    if mode in _HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if mode != "I" or arr.max() > 255 else 255.0
        arr8 = np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, "L").convert("RGB"), "16-bit"
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr8 = np.zeros(arr.shape, np.uint8) if hi <= lo else (arr - lo) * (255.0 / (hi - lo))
        return Image.fromarray(np.asarray(arr8, np.uint8), "L").convert("RGB"), "float"
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        mode == "P" and "transparency" in img.info
    )
    if has_alpha:
        # Transparent pixels often hold arbitrary (black) colour; white is how viewers show them.
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB"), "alpha"
    reason = {"L": "grayscale", "1": "grayscale", "CMYK": "cmyk", "P": "palette"}.get(mode)
    return img.convert("RGB"), reason or f"mode {mode}"


def _encode_jpeg(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=JPEG_QUALITY)
    return out.getvalue()


def _check_jpeg_fast(data: bytes, full_decode: bool) -> bool:
    """True if *data* is a whole, plain RGB JPEG that can be stored unchanged.

    PIL's open parses every marker segment up to the first scan; a file cut short anywhere after
    that lacks its EOI marker (0xFFD9 cannot occur inside entropy-coded data, where 0xFF is
    byte-stuffed), so finding it after the scan start proves the file is whole. *full_decode*
    also decodes the scan (at 1/8 scale, ~10x slower) to catch damage inside it.
    """
    img = _open(data)
    if img.format != "JPEG" or img.mode != "RGB" or _orientation(img) != 1:
        return False
    scan_start = img.tile[0][2] if img.tile else 0
    if data.find(b"\xff\xd9", scan_start) < 0:
        raise BadImage("truncated JPEG: the end-of-image marker is missing")
    if full_decode:
        img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))
        _load(img)
    return True


def prepare_image(data: bytes, full_decode: bool = False) -> tuple[bytes, str]:
    """Check *data* (a whole image file) and return ``(rgb_jpeg_bytes, how)``.

    ``how`` is ``"as-is"`` for an RGB JPEG kept byte-for-byte, otherwise the reason it was
    re-encoded (``grayscale``, ``cmyk``, ``alpha``, ``palette``, ``16-bit``, ``exif-rotated``,
    ``png`` ...). Raises :class:`BadImage` for empty, truncated, oversized or non-image data.
    Other images are always decoded in full; *full_decode* also decodes good JPEGs' scans.
    """
    if not data:
        raise BadImage("empty file (0 bytes)")
    if len(data) > MAX_IMAGE_BYTES:
        raise BadImage(f"file is {len(data)} bytes, over the {MAX_IMAGE_BYTES} byte limit")
    if data[:3] == b"\xff\xd8\xff" and _check_jpeg_fast(data, full_decode):
        return data, "as-is"
    img = _open(data)
    fmt = (img.format or "image").lower()
    _load(img)
    how = []
    if _orientation(img) != 1:
        img = ImageOps.exif_transpose(img)
        how.append("exif-rotated")
    if img.mode != "RGB":
        img, reason = _to_rgb(img)
        how.append(reason)
    if fmt != "jpeg":
        how.append(fmt)
    return _encode_jpeg(img), "+".join(how) or "re-encoded"


def prepare_file(path: str | Path, full_decode: bool = False) -> tuple[bytes, str]:
    """Read *path* and run :func:`prepare_image` on its bytes (see there)."""
    return prepare_image(Path(path).read_bytes(), full_decode)

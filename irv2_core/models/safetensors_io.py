"""Safetensors files read and written with numpy alone (no torch), for timm weight import.

The format is an 8-byte little-endian header length, a JSON header mapping each name to
``{dtype, shape, data_offsets}`` (offsets relative to the end of the header), then the raw
little-endian data.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import atomic_write_bytes

__all__ = ["read_safetensors", "write_safetensors"]

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

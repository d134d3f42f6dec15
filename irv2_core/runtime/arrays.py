"""Compact, JSON-safe text for per-image arrays (a record may hold 50,000 of them): booleans as
base64 of packed bits, integers as base64 of little-endian int32."""

from __future__ import annotations

import base64

import numpy as np

from irv2_core.errors import Irv2Error

__all__ = ["pack_bools", "pack_ints", "unpack_bools", "unpack_ints"]


def pack_bools(values: np.ndarray) -> str:
    """*values* (truthy per item) as base64 of ``numpy.packbits``."""
    return base64.b64encode(np.packbits(np.asarray(values, dtype=bool)).tobytes()).decode("ascii")


def unpack_bools(text: str, count: int) -> np.ndarray:
    """The *count* booleans :func:`pack_bools` wrote."""
    bits = np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))
    if len(bits) < count:
        raise Irv2Error(f"packed booleans hold {len(bits)} values, fewer than {count}")
    return bits[:count].astype(bool)


def pack_ints(values: np.ndarray) -> str:
    """*values* as base64 of little-endian int32."""
    return base64.b64encode(np.asarray(values, dtype="<i4").tobytes()).decode("ascii")


def unpack_ints(text: str, count: int) -> np.ndarray:
    """The *count* integers :func:`pack_ints` wrote."""
    values = np.frombuffer(base64.b64decode(text), dtype="<i4")
    if len(values) != count:
        raise Irv2Error(f"packed integers hold {len(values)} values, not {count}")
    return values.astype(np.int64)

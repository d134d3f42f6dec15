"""Reading and writing MindSpore ``.ckpt`` files safely: the one place every stage goes through.

Writes go to a temp name (ending in ``.ckpt``, which MindSpore insists on) and are renamed into
place, with the usual file mode instead of MindSpore's read-only 0400. Reads turn MindSpore's
errors into an Irv2Error, and work around MindSpore 2.10 refusing a checkpoint bigger than the
OS's *free* memory: it asks for ``SC_AVPHYS_PAGES`` (MemFree), which leaves out reclaimable page
cache, so after a run has written a few 0.6 GB checkpoints, resume, evaluate and export fail on a
machine with 20 GB actually available. We let it count ``MemAvailable`` instead.

A checkpoint can carry metadata (short strings, e.g. the input protocol its weights expect)
inside the file, as MindSpore's ``append_dict`` entries named ``irv2.<key>``: a checkpoint copied
on its own keeps them, and older checkpoints simply have none. ``read_checkpoint`` leaves them
out, so every value it returns is a tensor.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mindspore as ms
from mindspore.train import serialization

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import atomic_target

__all__ = ["read_checkpoint", "read_checkpoint_metadata", "save_checkpoint_atomic"]

METADATA_PREFIX = "irv2."  # no parameter of the network is named so


def save_checkpoint_atomic(
    obj, out: str | os.PathLike[str], metadata: dict[str, str] | None = None
) -> Path:
    """``ms.save_checkpoint(obj)`` to a temp name in *out*'s folder, then rename it into place;
    *metadata* (str -> str) is stored inside the file."""
    extra = {METADATA_PREFIX + k: str(v) for k, v in (metadata or {}).items()} or None
    with atomic_target(out, suffix=".tmp.ckpt") as tmp:  # MindSpore insists on .ckpt
        ms.save_checkpoint(obj, str(tmp), append_dict=extra)
    return Path(out)


def mem_available() -> int | None:
    """Bytes the kernel could hand out now (MemAvailable: free plus reclaimable cache)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@contextmanager
def _count_reclaimable_cache() -> Iterator[None]:
    original = getattr(serialization, "_get_available_memory", None)
    if original is None or mem_available() is None:  # another MindSpore, or not Linux
        yield
        return

    def available() -> int | None:
        return max(mem_available() or 0, original() or 0) or None

    serialization._get_available_memory = available
    try:
        yield
    finally:
        serialization._get_available_memory = original


def _is_metadata(name: str) -> bool:
    return name.startswith(METADATA_PREFIX)


def read_checkpoint(ckpt: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a MindSpore checkpoint as a name -> Parameter dict (metadata left out); Irv2Error if
    unreadable."""
    return {k: v for k, v in _load(ckpt).items() if not _is_metadata(k)}


def read_checkpoint_metadata(ckpt: str | os.PathLike[str]) -> dict[str, str]:
    """The metadata stored inside a checkpoint (``{}`` for one written without any); cheap: no
    tensor is built."""
    found = _load(ckpt, choice_func=_is_metadata)
    return {k[len(METADATA_PREFIX) :]: str(v) for k, v in found.items() if _is_metadata(k)}


def _load(ckpt: str | os.PathLike[str], choice_func=None) -> dict[str, Any]:
    path = Path(ckpt)
    if not path.is_file():
        raise Irv2Error(f"checkpoint not found: {path}")
    try:
        with _count_reclaimable_cache():
            return ms.load_checkpoint(str(path), choice_func=choice_func)
    except ValueError as exc:
        if choice_func is not None and "empty after filter" in str(exc):
            return {}  # MindSpore refuses a filter that keeps nothing: no such entries
        raise _unreadable(path, exc) from None
    except (RuntimeError, OSError) as exc:
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: Exception) -> Irv2Error:
    return Irv2Error(
        f"cannot read checkpoint {path}: the file is truncated, corrupt or not a MindSpore "
        f"checkpoint ({str(exc).splitlines()[0]})"
    )

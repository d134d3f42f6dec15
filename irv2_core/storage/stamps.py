"""Stamps: a small witness beside a local output that it is what a cache key produced.

A cache (Prefect's, or any other) may hand back a stored result whose files were deleted or
changed since. Each heavy stage therefore keys on a digest of its *content* inputs and checks a
stamp it wrote next to its output when it last completed: the stamp holds the exact key the
output was produced under and the size and mtime of every output file. While the stamp matches
the digest and the files, the key is the stamped one (a hit); otherwise the key gets a fresh
suffix, which no stored result has, so the stage runs again and re-stamps.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from irv2_core.runtime.io import atomic_write_json, read_json, sha256_file, sha256_json

__all__ = [
    "file_digest",
    "files_state",
    "local_key",
    "stamp_path",
    "stamped_key",
    "write_stamp",
]

_DIGEST_MEMO: dict[tuple[str, int, int], str] = {}


def stamp_path(anchor: str | os.PathLike[str]) -> Path:
    """Where the stamp of the output *anchor* (a folder or file) lives: a hidden sibling file.

    A sibling, not a file inside the output, so that a stage that mirrors or lists its folder never
    sees it, and deleting the output folder is detected (its files are gone).
    """
    anchor = Path(anchor)
    return anchor.parent / f".{anchor.name}.cache.json"


def files_state(paths: Iterable[str | os.PathLike[str]]) -> dict[str, list[int]]:
    """``{path: [size, mtime_ns]}`` of existing files: a cheap witness that they are unchanged."""
    state: dict[str, list[int]] = {}
    for p in paths:
        st = Path(p).stat()
        state[str(Path(p))] = [st.st_size, st.st_mtime_ns]
    return state


def stamped_key(anchor: str | os.PathLike[str], digest: str) -> str | None:
    """The key the output at *anchor* was produced under, if it still stands for *digest*.

    None when the stamp is missing or unreadable, was written for other inputs, or any stamped file
    is missing or has a different size or mtime.
    """
    path = stamp_path(anchor)
    try:
        stamp = read_json(path)
        key, files = stamp["key"], stamp["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not (isinstance(key, str) and key.startswith(digest) and isinstance(files, dict) and files):
        return None
    for name, state in files.items():
        try:
            size, mtime_ns = state
            st = Path(name).stat()
        except (OSError, TypeError, ValueError):  # gone, or a garbled entry
            return None
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            return None
    return key


def local_key(anchor: str | os.PathLike[str], content: Any) -> str:
    """Key for producing *anchor* from *content* (any JSON-safe description of the inputs).

    Returns the stamped key while the output is intact, else a new never-used key.
    """
    digest = sha256_json(content)
    return stamped_key(anchor, digest) or f"{digest}-{uuid.uuid4().hex[:16]}"


def write_stamp(
    anchor: str | os.PathLike[str], key: str | None, files: Iterable[str | os.PathLike[str]]
) -> None:
    """Record that *files* (the output at *anchor*) were produced under cache *key*.

    Without a key (the stage ran outside any cache) there is nothing to protect, so an old
    stamp is removed instead.
    """
    path = stamp_path(anchor)
    if not key:
        path.unlink(missing_ok=True)
        return
    atomic_write_json(path, {"key": key, "files": files_state(files)})


def file_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, memoised on (path, size, mtime) so cache keys do not re-hash 200 MB."""
    st = Path(path).stat()
    memo_key = (str(path), st.st_size, st.st_mtime_ns)
    if memo_key not in _DIGEST_MEMO:
        _DIGEST_MEMO[memo_key] = sha256_file(path)
    return _DIGEST_MEMO[memo_key]

"""Small file helpers shared by every stage: atomic writes and content hashes.

Partial outputs must never look complete, so every file a stage publishes is written under a
temporary name in the same folder and renamed into place only once it is whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def _default_mode() -> int:
    """Mode a plain ``open()`` would give a new file (0666 minus the umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# Read once at import: os.umask is process-wide, so probing it later from threads would race.
FILE_MODE = _default_mode()


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in *path*'s folder to write; on success it gets the usual file mode
    and is renamed to *path*, on failure it is removed: *path* is never seen half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp creates 0600; published files should be as readable as any other output.
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write *data* to *path* via a temp file in the same folder and an atomic rename."""
    with atomic_target(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Text variant of :func:`atomic_write_bytes` (UTF-8)."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write *obj* as indented, key-sorted JSON atomically.

    Streamed to the file (the same bytes as ``json.dumps``): an indented dump is built from
    ~10 small strings per entry, which for a 100k-object stage manifest held ~1 KB per object.
    """
    with atomic_target(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    return Path(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    """Load a JSON file (UTF-8)."""
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Hex sha256 of an object's canonical (sorted-key) JSON form."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def publish_dir(tmp_dir: str | os.PathLike[str], dest: str | os.PathLike[str]) -> Path:
    """Swap the finished folder *tmp_dir* into *dest* (same parent); an old *dest* is moved
    aside first and removed only after the new one is in place, so *dest* is never partial."""
    tmp_dir, dest = Path(tmp_dir), Path(dest)
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(tmp_dir, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return dest

"""The store interface and its local-folder implementation (``storage.open_store`` picks one).

A store holds objects under keys (``a/b/c``) below its root URI. Writes are whole-object and
atomic (a reader never sees half an object); ``create`` writes only if the key is absent (the
building block of leases). Every transfer is verified: uploads send a SHA-256 that the store
checks, downloads are hashed against what the caller expects.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import atomic_target, atomic_write_bytes, sha256_file

__all__ = [
    "LocalStore",
    "ObjectStore",
    "StoredObject",
    "check_digest",
    "join_key",
    "read_json_object",
]


@dataclass(frozen=True)
class StoredObject:
    """What a store holds under a key: its size, sha256 and the store's version tag."""

    key: str
    size: int
    sha256: str | None = None
    version: str | None = None  # S3 ETag or local mtime; conditional writes compare it


def join_key(*parts: str) -> str:
    """Join key parts with ``/``, dropping empty parts and stray slashes."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class ObjectStore(Protocol):
    """What the stages need from object storage (an S3 prefix or a local folder)."""

    uri: str  # the root, e.g. s3://bucket/prefix or /data/irv2-store

    def put_file(self, path: Path, key: str) -> StoredObject:
        """Upload *path* to *key*, verified; return what was stored (with its sha256)."""

    def get_file(self, key: str, path: Path, sha256: str | None = None) -> Path:
        """Download *key* to *path* atomically; with *sha256*, a mismatch raises Irv2Error."""

    def put_bytes(self, data: bytes, key: str) -> StoredObject:
        """Store *data* under *key* (whole, atomically)."""

    def get_bytes(self, key: str) -> bytes | None:
        """The bytes under *key*, or None when absent."""

    def create(self, data: bytes, key: str, replace: str | None = None) -> StoredObject | None:
        """Write *key* only if absent, or only if its version is *replace*; None if not written."""

    def head(self, key: str) -> StoredObject | None:
        """Size and version of *key*, or None when absent."""

    def list(self, prefix: str) -> list[StoredObject]:
        """Every object whose key starts with *prefix*, sorted by key."""

    def delete(self, key: str) -> None:
        """Remove *key* (absent is fine)."""

    def check_writable(self) -> None:
        """Raise Irv2Error naming the URI and the cause unless objects can be written here."""


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LocalStore:
    """A folder as an object store (``/path`` or ``file:///path``); keys are relative paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise Irv2Error(f"key {key!r} leaves the store {self.uri}")
        return path

    def put_file(self, path: Path, key: str) -> StoredObject:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.upload")
        shutil.copyfile(path, tmp)
        digest = sha256_file(tmp)
        if digest != sha256_file(path):
            tmp.unlink(missing_ok=True)
            raise Irv2Error(f"copy of {path} to {target} does not match its source; try again")
        os.replace(tmp, target)
        return StoredObject(key, target.stat().st_size, digest, str(target.stat().st_mtime_ns))

    def get_file(self, key: str, path: Path, sha256: str | None = None) -> Path:
        source = self._path(key)
        if not source.is_file():
            raise Irv2Error(f"{self.uri}/{key} does not exist")
        # a temp name of its own: ranks on one shared run folder may fetch the same file at once
        with atomic_target(path, suffix=".download") as tmp:
            shutil.copyfile(source, tmp)
            check_digest(tmp, sha256, f"{self.uri}/{key}")
        return path

    def put_bytes(self, data: bytes, key: str) -> StoredObject:
        target = atomic_write_bytes(self._path(key), data)
        return StoredObject(key, len(data), _sha256_bytes(data), str(target.stat().st_mtime_ns))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def create(self, data: bytes, key: str, replace: str | None = None) -> StoredObject | None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        if replace is not None:
            current = self.head(key)
            if current is None or current.version != replace:
                return None
            return self.put_bytes(data, key)  # a local folder has one writer host: no race
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return None
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return StoredObject(key, len(data), _sha256_bytes(data), str(target.stat().st_mtime_ns))

    def head(self, key: str) -> StoredObject | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return StoredObject(key, st.st_size, None, str(st.st_mtime_ns))

    def list(self, prefix: str) -> list[StoredObject]:
        base = self.root / prefix.rsplit("/", 1)[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for path in base.rglob("*"):
            key = path.relative_to(self.root).as_posix()
            hidden = any(part.startswith(".") for part in Path(key).parts)
            if path.is_file() and key.startswith(prefix) and not hidden:
                st = path.stat()
                out.append(StoredObject(key, st.st_size, None, str(st.st_mtime_ns)))
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def check_writable(self) -> None:
        probe = join_key(".irv2-preflight", f"{os.getpid()}")
        try:
            self.put_bytes(b"ok", probe)
            self.delete(probe)
        except OSError as exc:
            raise Irv2Error(
                f"output_uri {self.uri} cannot be written: {exc.strerror}; choose a writable "
                "folder or an s3:// URI"
            ) from None


def check_digest(path: Path, sha256: str | None, where: str) -> None:
    if sha256 is None:
        return
    got = sha256_file(path)
    if got != sha256:
        path.unlink(missing_ok=True)
        raise Irv2Error(
            f"{where} does not match its recorded sha256 ({got[:12]}... != {sha256[:12]}...): "
            "the stored object is damaged or was replaced; publish it again"
        )


def read_json_object(store: ObjectStore, key: str) -> dict[str, Any] | None:
    """The JSON object stored under *key*, or None when absent or unreadable."""
    data = store.get_bytes(key)
    if data is None:
        return None
    try:
        value = json.loads(data)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None

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
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import FILE_MODE, atomic_target, sha256_file
from irv2_core.storage.folder_cas import check_locking, key_lock, stamp_after, version_of

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
    version: str | None = None  # S3 ETag, or the folder store's never-repeating tag


def join_key(*parts: str) -> str:
    """Join key parts with ``/``, dropping empty parts and stray slashes."""
    return "/".join(p.strip("/") for p in parts if p and p.strip("/"))


class ObjectStore(Protocol):
    """What the stages need from object storage (an S3 prefix or a local folder)."""

    uri: str  # the root, e.g. s3://bucket/prefix or /data/irv2-store

    def put_file(self, path: Path, key: str, sha256: str | None = None) -> StoredObject:
        """Upload *path* to *key*, verified; return what was stored (with its sha256). Give
        *sha256* when it is known (a checkpoint's sidecar) to save a pass over a big file."""

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
    """A folder as an object store (``/path`` or ``file:///path``); keys are relative paths.

    Every write renames a verified temp file into place under the key's lock
    (:mod:`~irv2_core.storage.folder_cas`): conditional writes hold across processes, and a
    key's versions never repeat.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().resolve()
        self.uri = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise Irv2Error(f"key {key!r} leaves the store {self.uri}")
        return path

    def _commit(self, tmp: Path, target: Path, replace: str | None, conditional: bool) -> bool:
        """Rename *tmp* to *target* under the key's lock: always, or (*conditional*) only if
        absent (*replace* None) or still at version *replace*. False when not written."""
        with key_lock(target) as lock_fd:
            try:
                current = target.stat()
            except FileNotFoundError:
                current = None
            if conditional:
                version = None if current is None else version_of(current)
                if version != replace:  # None == None: absent, as asked
                    return False
            stamp_after(lock_fd, tmp, current)
            os.replace(tmp, target)
        return True

    def _write(
        self, key: str, fill, sha256: str, replace: str | None = None, conditional: bool = False
    ) -> StoredObject | None:
        """Fill a temp file beside *key* (outside the lock: copies can be large), then commit."""
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".upload")
        os.close(fd)
        tmp = Path(name)
        try:
            fill(tmp)
            os.chmod(tmp, FILE_MODE)  # mkstemp's 0600: stored objects read like other files
            if not self._commit(tmp, target, replace, conditional):
                return None
        finally:
            tmp.unlink(missing_ok=True)  # renamed away when written
        st = target.stat()
        return StoredObject(key, st.st_size, sha256, version_of(st))

    def put_file(self, path: Path, key: str, sha256: str | None = None) -> StoredObject:
        digest = sha256 or sha256_file(path)

        def fill(tmp: Path) -> None:
            shutil.copyfile(path, tmp)
            if sha256_file(tmp) != digest:
                raise Irv2Error(f"copy of {path} to {self.uri}/{key} does not match its source; "
                                "try again")  # fmt: skip

        return self._write(key, fill, digest)

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
        return self._write(key, _filler(data), _sha256_bytes(data))

    def get_bytes(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            return None

    def create(self, data: bytes, key: str, replace: str | None = None) -> StoredObject | None:
        return self._write(key, _filler(data), _sha256_bytes(data), replace, conditional=True)

    def head(self, key: str) -> StoredObject | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            return None
        return StoredObject(key, st.st_size, None, version_of(st))

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
                out.append(StoredObject(key, st.st_size, None, version_of(st)))
        return sorted(out, key=lambda o: o.key)

    def delete(self, key: str) -> None:
        target = self._path(key)
        if target.parent.is_dir():
            with key_lock(target):  # never between another writer's check and its rename
                target.unlink(missing_ok=True)

    def check_writable(self) -> None:
        probe = join_key(".irv2-preflight", f"{os.getpid()}")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            check_locking(self.root)
            self.put_bytes(b"ok", probe)
            self.delete(probe)
        except OSError as exc:
            raise Irv2Error(
                f"output_uri {self.uri} cannot be written: {exc.strerror}; choose a writable "
                "folder or an s3:// URI"
            ) from None


def _filler(data: bytes):
    """A function that writes *data* to a temp file, flushed to disk (a lease must survive)."""

    def fill(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    return fill


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

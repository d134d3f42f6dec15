"""Where ``stage`` reads from: an S3-compatible bucket (boto3) or a local folder.

Each source lists its objects as :class:`SourceObject` (key relative to the prefix, size, etag),
fetches a batch into the destination (temporary name, verify, rename) and can check that a file
already in place holds an object's bytes. Error messages never carry credentials.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit
from urllib.request import url2pathname

from irv2_core.errors import Irv2Error

log = logging.getLogger(__name__)

_OUTSIDE_LINK = "symbolic link to a file outside the source folder: not staged"
_LINKED_FOLDER = "symbolic link to a folder: not followed (link its files' real folder instead)"
TEMP_PREFIX = ".irv2part-"  # in-progress files; never a final name, swept at the next run
PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
MULTIPART_ETAG = re.compile(r"^[0-9a-f]{32}-(\d+)$")
# objects submitted to a fetch pool at once: a future per object of a 100k listing held ~1 KB
# each until the end (issue 24); a window keeps that flat and the threads busy
FETCH_WINDOW = 1024


def map_bounded(pool: ThreadPoolExecutor, fn: Callable[[Any], Any], items: Iterable) -> None:
    """``fn(item)`` for every item on *pool*, at most FETCH_WINDOW of them submitted at once."""
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) == FETCH_WINDOW:
            list(pool.map(fn, batch))
            batch = []
    list(pool.map(fn, batch))


@dataclass(frozen=True)
class SourceObject:
    """One object to mirror: full key (or local path), key relative to the prefix, size, etag."""

    key: str
    rel: str
    size: int
    etag: str
    rejected: str | None = None  # why it must not be staged (the source itself decided)


# done(obj, entry) for a verified file in place; fail(obj, error) otherwise (a TransientError
# when trying again later may fetch it).
Done = Callable[[SourceObject, dict[str, Any]], None]
Fail = Callable[[SourceObject, Irv2Error], None]


def temp_path(final: Path) -> Path:
    """The in-progress name for *final*: same folder, fixed-length, hidden."""
    digest = hashlib.sha1(final.name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return final.with_name(f"{TEMP_PREFIX}{digest}")


def hash_file(path: Path, *names: str) -> dict[str, str]:
    """Hex digests of *path* for each hashlib algorithm in *names*, in one read."""
    hs = {n: hashlib.new(n) for n in names}
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            for h in hs.values():
                h.update(chunk)
    return {n: h.hexdigest() for n, h in hs.items()}


class _Crc32:
    """hashlib-style CRC32 (big-endian digest, as S3 encodes ChecksumCRC32)."""

    def __init__(self, data: bytes = b""):
        self.value = zlib.crc32(data)

    def update(self, data: bytes) -> None:
        self.value = zlib.crc32(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(4, "big")


def new_hasher(algo: str, data: bytes = b""):
    """A hasher for *algo* (``crc32`` or any hashlib name) primed with *data*."""
    return _Crc32(data) if algo == "crc32" else hashlib.new(algo, data)


def part_digests(path: Path, sizes: list[int], algo: str) -> list[bytes]:
    """Raw *algo* digests of consecutive byte ranges of *path* with the given *sizes*."""
    out = []
    with open(path, "rb") as fh:
        for size in sizes:
            h, left = new_hasher(algo), size
            while left > 0:
                chunk = fh.read(min(1 << 20, left))
                if not chunk:
                    break
                h.update(chunk)
                left -= len(chunk)
            out.append(h.digest())
    return out


class Source(Protocol):
    """What staging needs from a source (a local folder or an S3 prefix)."""

    endpoint: str | None  # the S3 endpoint URL, None for a local folder

    def describe(self) -> str:
        """The source as a URI, for messages and the manifest."""

    def list(self) -> list[SourceObject]:
        """Every object under the source, sorted by key."""

    def empty_hint(self) -> str:
        """A hint to append when the source lists nothing usable ("" when there is none)."""

    def fetch(self, items: Iterable[tuple[SourceObject, Path]], done: Done, fail: Fail) -> None:
        """Download each (object, final path) verified, calling *done* or *fail* per object."""

    def verify_in_place(self, obj: SourceObject, path: Path) -> dict[str, Any] | None:
        """The verification entry of an already present file, or None if it must be fetched."""


class LocalSource:
    """A local folder; the etag of a file is ``mtime-<ns>`` (cheap, no read needed).

    Touching a file changes its fingerprint (a harmless cache miss); rewriting a file with the
    same size and mtime is not noticed, which only a deliberate act can do.
    """

    def __init__(self, root: Path, workers: int):
        self.root, self.workers = root, workers
        if not root.is_dir():
            raise Irv2Error(
                f"source folder not found: {root} (give an existing folder or s3://...)"
            )

    endpoint = None

    def describe(self) -> str:
        return self.root.as_uri()

    def empty_hint(self) -> str:
        return ""

    def list(self) -> list[SourceObject]:
        """Every regular file under the folder (hidden in-progress files excepted), sorted.

        A symbolic link is followed only to a file inside the folder (then its real path is
        copied); one that leads outside, or a linked folder, is returned rejected with the
        reason, so staging never carries a worker's other files into the mirror.
        """
        out = []
        root_real = self.root.resolve()
        for root, dirs, files in os.walk(self.root):
            dirs.sort()
            for name in [d for d in dirs if (Path(root) / d).is_symlink()]:
                rel = (Path(root) / name).relative_to(self.root).as_posix() + "/"
                out.append(SourceObject(rel, rel.rstrip("/"), 0, "", _LINKED_FOLDER))
            for name in sorted(files):
                if not name.startswith(TEMP_PREFIX):
                    out.extend(self._entry(Path(root) / name, root_real))
        return out

    def _entry(self, path: Path, root_real: Path) -> list[SourceObject]:
        rel = path.relative_to(self.root).as_posix()
        real = path.resolve()
        if path.is_symlink() and not real.is_relative_to(root_real):
            return [SourceObject(str(path), rel, 0, "", _OUTSIDE_LINK)]
        try:
            st = real.stat()
        except OSError:  # a dangling symlink or a file removed meanwhile: nothing to copy
            log.warning("stage: skipping unreadable %s", path)
            return []
        return [SourceObject(str(real), rel, st.st_size, f"mtime-{st.st_mtime_ns}")]

    def _copy(self, obj: SourceObject, final: Path) -> dict[str, Any]:
        tmp = temp_path(final)
        h = hashlib.sha256()
        try:
            # O_NOFOLLOW: a file swapped for a link after the listing is refused, not followed
            fd = os.open(obj.key, os.O_RDONLY | os.O_NOFOLLOW)
            with open(fd, "rb") as src, open(tmp, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
            st = os.stat(obj.key)
            if st.st_size != obj.size or f"mtime-{st.st_mtime_ns}" != obj.etag:
                raise Irv2Error("the source file changed while it was copied; run stage again")
            got = hash_file(tmp, "sha256")["sha256"]
            if tmp.stat().st_size != obj.size or got != h.hexdigest():
                raise Irv2Error("the copy does not match the source (size or sha256); disk error?")
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return {"size": obj.size, "etag": obj.etag, "sha256": got, "verified": "sha256"}

    def fetch(self, items: Iterable[tuple[SourceObject, Path]], done: Done, fail: Fail) -> None:
        """Copy each object to its final path via a temporary name, verified by size + sha256."""

        def one(pair):
            obj, final = pair
            try:
                done(obj, self._copy(obj, final))
            except Irv2Error as exc:
                fail(obj, exc)
            except OSError as exc:
                fail(obj, Irv2Error(str(exc)))

        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            map_bounded(pool, one, items)

    def verify_in_place(self, obj: SourceObject, path: Path) -> dict[str, Any] | None:
        """The manifest entry if *path* already holds the source file's bytes, else None."""
        src = hash_file(Path(obj.key), "sha256")["sha256"]
        if hash_file(path, "sha256")["sha256"] != src:
            return None
        return {"size": obj.size, "etag": obj.etag, "sha256": src, "verified": "sha256"}


def parse_source(src: str) -> tuple[str, str, str]:
    """Split *src* into ``("s3", bucket, prefix)`` or ``("local", path, "")``.

    The prefix is treated as a folder: ``s3://b/data`` mirrors the keys under ``data/``.
    """
    text = str(src)
    if text.startswith("s3://"):
        bucket, _, prefix = text[5:].partition("/")
        if not bucket:
            raise Irv2Error(f"bad source {text!r}: expected s3://bucket[/prefix]")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return "s3", bucket, prefix
    if text.startswith("file://"):
        parts = urlsplit(text)
        if parts.netloc not in ("", "localhost"):
            raise Irv2Error(f"bad source {text!r}: file:// URIs must name a local path")

        return "local", url2pathname(parts.path), ""
    if "://" in text:
        raise Irv2Error(
            f"unsupported source {text!r}: use s3://bucket/prefix, file://path or a path"
        )
    return "local", text, ""

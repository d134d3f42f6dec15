"""``stage``: mirror ``s3://bucket/prefix`` (or a local folder) into a local folder, verified.

Every object under the prefix lands at its relative key under DEST, written under a temporary
name and renamed only once its size and MD5/checksum (S3) or sha256 (local) are verified.
``DEST/manifest.json`` records key, size, etag and sha256 per object plus the dataset
fingerprint (sha256 of the sorted key/size/etag list), which later stages use as a cache key.

Incremental: an object whose key, size and etag match the last manifest (and whose file is
there) is neither downloaded nor rewritten. Objects deleted at the source are **removed**
locally, because a stale image left in a class folder would silently become training data and
the folder would no longer match its manifest; only files this stage put there are removed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from pathlib import Path, PurePosixPath
from typing import Any

from irv2_core.data.s3 import S3Source
from irv2_core.data.sources import (
    TEMP_PREFIX,
    LocalSource,
    Source,
    SourceObject,
    parse_source,
)
from irv2_core.errors import Irv2Error, TransientError
from irv2_core.records import StageRecord
from irv2_core.runtime.dirlock import folder_lock
from irv2_core.runtime.io import atomic_write_json, read_json
from irv2_core.storage.s3client import redact_url

__all__ = ["stage", "source_fingerprint", "fingerprint", "check_key"]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MAX_NAME_BYTES = 255  # one path component on common local filesystems


def check_key(rel: str) -> str | None:
    """Why the relative key *rel* must not be written under DEST, or None if it is safe.

    Rejects absolute keys, ``..``/``.``/empty segments (paths that escape or alias), NUL,
    names too long for the filesystem, and names reserved by this stage.
    """
    if rel.startswith("/"):
        return "absolute key: would be written outside the destination"
    parts = rel.split("/")
    if ".." in parts:
        return "'..' segment: would be written outside the destination"
    if "." in parts or "" in parts:
        return "'.' or empty path segment: ambiguous local path"
    if "\0" in rel:
        return "NUL character in key"
    if any(len(p.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for p in parts):
        return f"a path segment is longer than {MAX_NAME_BYTES} bytes"
    if rel == MANIFEST:
        return f"reserved name: would overwrite the stage's own {MANIFEST}"
    if parts[-1].startswith(TEMP_PREFIX):
        return f"reserved name: {TEMP_PREFIX}* marks in-progress files"
    return None


def _filter(listing: list[SourceObject]) -> tuple[list[SourceObject], list[dict], int]:
    """Split a listing into objects to stage, rejected keys (with reasons) and folder markers."""
    keep, rejected, markers = [], [], 0
    for obj in listing:
        if obj.rel == "" or obj.rel.endswith("/"):
            markers += 1
            continue
        reason = obj.rejected or check_key(obj.rel)
        if reason:
            rejected.append({"key": obj.key, "reason": reason})
        else:
            keep.append(obj)
    # A key that is also another key's folder ("a" and "a/b") cannot exist locally as both.
    folders = {str(p) for o in keep for p in PurePosixPath(o.rel).parents if str(p) != "."}
    clash = [o for o in keep if o.rel in folders]
    for o in clash:
        rejected.append({"key": o.key, "reason": "key is also a folder of other keys"})
    keep = [o for o in keep if o.rel not in folders]
    return keep, rejected, markers


def fingerprint(objects: list[SourceObject]) -> str:
    """sha256 of the sorted ``[relative key, size, etag]`` list: the dataset's cache key."""
    rows = sorted([o.rel, o.size, o.etag] for o in objects)
    return hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest()


def _open_source(src: str, endpoint_url: str | None, workers: int) -> Source:
    kind, where, prefix = parse_source(src)
    if kind == "local":
        return LocalSource(Path(where).expanduser().resolve(), workers)

    return S3Source(where, prefix, endpoint_url, workers)


def _list(source: Source) -> tuple[list[SourceObject], list[dict], int]:
    objects, rejected, markers = _filter(source.list())
    if not objects:
        hint = source.empty_hint()
        what = "no objects" if not rejected else f"only rejected keys ({len(rejected)})"
        raise Irv2Error(f"{what} under {source.describe()}: check the prefix{hint}")
    return objects, rejected, markers


def source_fingerprint(src: str, endpoint_url: str | None = None) -> str:
    """The fingerprint ``stage`` would record for *src*, from a listing only (no download).

    For S3 it hashes key, size and ETag; for a local folder, relative path, size and mtime_ns.
    Use it as the cache key of a stage step. Raises Irv2Error like :func:`stage`.
    """
    objects, _, _ = _list(_open_source(src, endpoint_url, workers=1))
    return fingerprint(objects)


def _load_manifest(dest: Path) -> dict[str, dict[str, Any]]:
    try:
        objects = read_json(dest / MANIFEST).get("objects", {})
        return objects if isinstance(objects, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _sweep_temps(dest: Path) -> None:
    """Remove in-progress files an interrupted run left behind (never under a final name)."""
    for root, _dirs, files in os.walk(dest):
        for name in files:
            if name.startswith(TEMP_PREFIX):
                (Path(root) / name).unlink(missing_ok=True)


@functools.lru_cache(maxsize=4096)
def _resolves_inside(folder: Path, dest: Path) -> bool:
    return folder.resolve().is_relative_to(dest)


def _final_path(dest: Path, rel: str) -> Path:
    final = dest / rel
    # Belt and braces after check_key: a symlinked folder inside DEST could still lead out.
    if not _resolves_inside(final.parent, dest):
        raise Irv2Error(f"key {rel!r} resolves outside {dest} (symlinked folder?); not written")
    return final


def _plan(source, objects, old, dest):
    """Split objects into ``(unchanged entries, [(obj, final path) to fetch])``."""
    unchanged, todo = {}, []
    for obj in objects:
        final = _final_path(dest, obj.rel)
        prev = old.get(obj.rel)
        try:
            on_disk = final.stat().st_size == obj.size and final.is_file()
        except OSError:
            on_disk = False
        if prev and prev.get("size") == obj.size and prev.get("etag") == obj.etag and on_disk:
            unchanged[obj.rel] = prev
            continue
        if not prev and on_disk:  # left by an interrupted run: keep it if it proves correct
            entry = source.verify_in_place(obj, final)
            if entry is not None:
                unchanged[obj.rel] = entry
                continue
        final.parent.mkdir(parents=True, exist_ok=True)
        todo.append((obj, final))
    return unchanged, todo


def _remove_deleted(dest: Path, old: dict, keep: set[str]) -> int:
    """Delete files of the last manifest whose keys are gone from the source; prune empty dirs."""
    removed = 0
    for rel in sorted(set(old) - keep):
        if check_key(rel):
            continue
        path = dest / rel
        if path.is_file():
            path.unlink()
            removed += 1
        for parent in path.parents:
            if parent == dest or not parent.is_relative_to(dest):
                break
            try:
                parent.rmdir()
            except OSError:
                break
    return removed


def _mirror(source, objects: list[SourceObject], dest: Path):
    """Fetch what changed, drop what the source deleted; return the manifest (without the
    rejected keys), the unchanged count, the fetched objects and the removed count."""
    _resolves_inside.cache_clear()  # folders may have changed since the last call
    _sweep_temps(dest)
    old = _load_manifest(dest)
    entries, todo = _plan(source, objects, old, dest)
    n_unchanged, failures = len(entries), []
    source.fetch(
        todo,
        done=lambda obj, entry: entries.__setitem__(obj.rel, entry),
        fail=lambda obj, reason: failures.append((obj.key, reason)),
    )
    if failures:
        listed = "; ".join(f"{k}: {r}" for k, r in sorted(failures, key=lambda f: f[0])[:5])
        # only when every failure may pass on retry is the whole stage worth retrying
        transient = all(isinstance(r, TransientError) for _, r in failures)
        kind = TransientError if transient else Irv2Error
        raise kind(
            f"{len(failures)} of {len(todo)} objects failed to stage from {source.describe()} "
            f"({listed}{' ...' if len(failures) > 5 else ''}); verified files are kept, "
            "run stage again to fetch the rest"
        )
    removed = _remove_deleted(dest, old, {o.rel for o in objects})
    manifest = {
        "source": source.describe(),
        "endpoint": redact_url(source.endpoint),
        "fingerprint": fingerprint(objects),
        "objects": {rel: entries[rel] for rel in sorted(entries)},
    }
    return manifest, n_unchanged, todo, removed


def stage(
    src: str, dest: str | os.PathLike[str], endpoint_url: str | None = None, workers: int = 8
) -> StageRecord:
    """Mirror *src* (``s3://bucket/prefix``, ``file://`` URI or folder) into *dest*, verified.

    Returns the :class:`~irv2_core.records.StageRecord`, where ``rejected`` lists ``{key,
    reason}`` for keys never written (hostile or reserved) and ``bytes`` is the size of the
    mirrored set.
    Raises Irv2Error (missing bucket, empty prefix, bad credentials, objects that still fail
    after retries); then no manifest is written and the next run resumes.
    """
    if not 1 <= int(workers) <= 256:
        raise Irv2Error(f"--workers must be between 1 and 256, got {workers}")
    started = time.perf_counter()
    source = _open_source(src, endpoint_url, int(workers))
    dest = Path(dest).expanduser().resolve()
    if isinstance(source, LocalSource) and (
        dest == source.root or source.root in dest.parents or dest in source.root.parents
    ):
        raise Irv2Error(f"source {source.root} and destination {dest} must not contain each other")
    objects, rejected, markers = _list(source)
    with folder_lock(dest, "stage"):
        dest.mkdir(parents=True, exist_ok=True)
        manifest, n_unchanged, todo, removed = _mirror(source, objects, dest)
        manifest.update(rejected=rejected, folder_markers=markers)
        path = dest / MANIFEST
        if not path.is_file() or read_json(path) != manifest:
            atomic_write_json(path, manifest)
    wall = time.perf_counter() - started
    got = sum(obj.size for obj, _ in todo)
    log.info(
        "stage: %d objects, %d downloaded (%d bytes) in %.1fs", len(objects), len(todo), got, wall
    )
    return StageRecord(
        dest=str(dest),
        fingerprint=manifest["fingerprint"],
        objects=len(objects),
        downloaded=len(todo),
        unchanged=n_unchanged,
        removed=removed,
        rejected=rejected,
        bytes=sum(o.size for o in objects),
        bytes_downloaded=got,
        folder_markers=markers,
        wall_s=round(wall, 3),
    )

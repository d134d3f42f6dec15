"""Publishing a set of files under a prefix so that a half-upload never looks complete.

Every file is uploaded verified, then a commit marker ``_COMMITTED.json`` listing each file's size
and sha256 is written last. Readers trust a prefix only through its marker: no marker means
incomplete (a worker died mid-upload; the next run publishes again), and each fetched file is
checked against the marker's sha256. Republishing removes the old marker first.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import sha256_file
from irv2_core.storage.store import ObjectStore, join_key, read_json_object

__all__ = [
    "COMMIT_MARKER",
    "fetch_committed",
    "folder_files",
    "publish_files",
    "read_commit",
]

COMMIT_MARKER = "_COMMITTED.json"
PARALLEL_FILES = 4


def publish_files(
    store: ObjectStore, prefix: str, files: dict[str, Path], meta: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Upload *files* (``{relative key: local path}``) under *prefix*, then commit; return the
    marker ``{files: {key: {size, sha256}}, meta, committed_at}``."""
    store.delete(join_key(prefix, COMMIT_MARKER))
    with ThreadPoolExecutor(max_workers=PARALLEL_FILES) as pool:  # each file multipart as well
        stored = pool.map(lambda rel: store.put_file(Path(files[rel]), join_key(prefix, rel)),
                          sorted(files))  # fmt: skip
        entries = {o.key.removeprefix(prefix).lstrip("/"): {"size": o.size, "sha256": o.sha256}
                   for o in stored}  # fmt: skip
    marker = {"files": entries, "meta": meta or {}, "committed_at": time.time()}
    data = json.dumps(marker, indent=2, sort_keys=True).encode()
    store.put_bytes(data, join_key(prefix, COMMIT_MARKER))
    return marker


def folder_files(folder: Path, exclude: tuple[str, ...] = ()) -> dict[str, Path]:
    """``{relative posix path: path}`` of the regular files under *folder* (hidden ones and
    top-level entries named in *exclude* left out)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder)
        hidden = any(p.startswith(".") for p in rel.parts)
        if path.is_file() and not hidden and rel.parts[0] not in exclude:
            out[rel.as_posix()] = path
    return out


def read_commit(store: ObjectStore, prefix: str) -> dict[str, Any] | None:
    """The commit marker of *prefix*, or None when it is not (yet) completely published."""
    marker = read_json_object(store, join_key(prefix, COMMIT_MARKER))
    if marker is None or not isinstance(marker.get("files"), dict):
        return None
    return marker


def fetch_committed(
    store: ObjectStore, prefix: str, dest: Path, only: list[str] | None = None
) -> dict[str, Any]:
    """Download the committed files of *prefix* (or those of *only* it has) into *dest*, each
    verified against the marker; files already present with the right sha256 are kept. Returns
    the marker. Raises Irv2Error when the prefix is not committed or a file does not verify."""
    marker = read_commit(store, prefix)
    if marker is None:
        raise Irv2Error(
            f"{store.uri}/{prefix} is not a completely published output (no {COMMIT_MARKER}); "
            "its upload may have been cut off: run the stage again to publish it"
        )
    files = marker["files"]
    wanted = files if only is None else {k: files[k] for k in only if k in files}
    for rel, entry in wanted.items():
        target = dest / rel
        same_size = target.is_file() and os.path.getsize(target) == entry["size"]
        if same_size and sha256_file(target) == entry["sha256"]:
            continue
        store.get_file(join_key(prefix, rel), target, sha256=entry["sha256"])
    return marker

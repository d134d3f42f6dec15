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
from irv2_core.storage import open_store
from irv2_core.storage.store import ObjectStore, join_key, read_json_object

__all__ = [
    "COMMIT_MARKER",
    "SMALL_RUN_FILES",
    "StoreRef",
    "ensure_local",
    "fetch_committed",
    "folder_files",
    "open_ref",
    "publish_files",
    "read_commit",
    "run_files",
]

# A store as a task or deployment parameter: {"uri": ..., "endpoint_url": ...}, JSON-safe.
StoreRef = dict[str, Any]
# what a worker needs of a published run to report on it (the weights are fetched where used)
SMALL_RUN_FILES = ["classes.json", "config.yaml", "metrics.jsonl", "train_summary.json"]

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


def open_ref(ref: StoreRef | None) -> ObjectStore | None:
    """The store a parameter names, or None when the flow has no ``output_uri``."""
    return open_store(ref["uri"], ref.get("endpoint_url")) if ref else None


def ensure_local(
    store: ObjectStore | None, prefix: str, folder: Path, only: list[str] | None = None
) -> Path:
    """*folder* holding the committed files of *prefix* (all, or *only* these): what is already
    there and verifies is kept, the rest is fetched. Without a store, *folder* as it is."""
    if store is not None:
        fetch_committed(store, prefix, folder, only=only)
    return folder


def run_files(run_dir: Path) -> dict[str, Path]:
    """The run-folder files a published run holds (checkpoints are mirrored apart; the report
    and reruns are published on their own)."""
    return folder_files(run_dir, exclude=("checkpoints", "report", "msrun_log", "reruns"))

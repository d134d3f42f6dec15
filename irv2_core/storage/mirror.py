"""Copies of a run's checkpoints in the object store, uploaded in the background.

Training hands each checkpoint (already written and hashed locally) to :class:`Mirror` and goes
on; one thread uploads it, then its ``.sha256`` sidecar, which acts as the checkpoint's commit
marker: a checkpoint without its sidecar in the store is incomplete and never resumed from.
Deletions of rotated checkpoints are mirrored too. :func:`pull_newest` brings the newest complete
checkpoint back, verified, to a worker that has none.
"""

from __future__ import annotations

import os
import queue
import re
import threading
from collections.abc import Callable
from pathlib import Path

from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import atomic_write_text, sha256_file
from irv2_core.storage.store import ObjectStore, join_key

__all__ = [
    "DIGEST_SUFFIX",
    "HELD_SUFFIX",
    "Mirror",
    "complete_checkpoints",
    "fetch_checkpoint",
    "pull_newest",
]

DIGEST_SUFFIX = ".sha256"
HELD_SUFFIX = ".mirror"  # hidden hard links of checkpoints waiting for their upload
_STEP = re.compile(r"-s(\d+)\.ckpt$")


class Mirror:
    """A background uploader of files under *prefix* of *store*, in the order they come."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        on_error: Callable[[str], None],
        fence: Callable[[], None] | None = None,
    ) -> None:
        """*fence* raises (an Irv2Error) when this process may no longer write here: it is
        called before every upload and deletion, which are then skipped and reported."""
        self.store, self.prefix, self.on_error, self.fence = store, prefix, on_error, fence
        self._jobs: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="irv2-mirror", daemon=True)
        self._thread.start()

    def upload(self, path: Path, rel: str) -> None:
        """Queue *path* (and then its ``.sha256`` sidecar, which must exist) for key *rel*.
        Both are hard-linked under a hidden name until uploaded: when uploads fall behind,
        rotation may delete a checkpoint before its turn comes, and it must still arrive."""
        sidecar = path.with_name(path.name + DIGEST_SUFFIX)
        self._jobs.put(("put", (_hold(path), _hold(sidecar)), rel))

    def delete(self, rel: str) -> None:
        """Queue the removal of *rel* and its sidecar (sidecar first: never a stale commit)."""
        self._jobs.put(("delete", None, rel))

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            op, files, rel = job
            key = join_key(self.prefix, rel)
            try:
                if op == "put":  # the sidecar, the checkpoint's commit, only if still fenced in
                    # the sidecar's sha256 was taken when training wrote the file: hashing
                    # ~0.6 GB again here took CPU from training (issue 24)
                    digest = files[1].read_text(encoding="ascii").strip()
                    self._fenced(self.store.put_file, files[0], key, digest)
                    self._fenced(self.store.put_file, files[1], key + DIGEST_SUFFIX)
                else:
                    self._fenced(self.store.delete, key + DIGEST_SUFFIX)
                    self._fenced(self.store.delete, key)
            except (Irv2Error, OSError) as exc:  # training goes on; the next upload may work
                self.on_error(f"mirror: {op} {rel} failed: {exc}")
            finally:
                for held in files or ():
                    if held.name.endswith(HELD_SUFFIX):
                        held.unlink(missing_ok=True)
                self._jobs.task_done()
        self._jobs.task_done()

    def _fenced(self, write, *args) -> None:
        """Call the store's *write* unless the fence says this process may write no more."""
        if self.fence is not None:
            self.fence()
        write(*args)

    def flush(self) -> None:
        """Wait until everything queued so far is in the store."""
        self._jobs.join()

    def close(self) -> None:
        """Finish the queued uploads and stop the thread."""
        self._jobs.put(None)
        self._thread.join()


def _hold(path: Path) -> Path:
    """A hidden hard link to *path* that outlives its deletion (or *path* itself where the
    filesystem has no hard links)."""
    held = path.with_name(f".{path.name}.{os.getpid()}{HELD_SUFFIX}")
    held.unlink(missing_ok=True)
    try:
        os.link(path, held)
    except OSError:
        return path
    return held


def complete_checkpoints(
    store: ObjectStore, prefix: str, folders: list[str]
) -> list[tuple[int, str, str]]:
    """``(global step, key, path relative to the run)`` of the complete checkpoints (sidecar
    present) directly in any of *folders* under *prefix*, newest first."""
    complete = []
    for folder in folders:
        base = join_key(prefix, folder) + "/"
        keys = {o.key for o in store.list(base)}
        for key in keys:
            rest = key[len(base) :]
            step = _STEP.search(rest)
            if "/" not in rest and step and key + DIGEST_SUFFIX in keys:
                complete.append((int(step.group(1)), key, join_key(folder, rest)))
    return sorted(complete, reverse=True)


def fetch_checkpoint(store: ObjectStore, key: str, target: Path) -> str | None:
    """Make *target* the store's checkpoint *key* with its sidecar, verified: ``"kept"`` when
    its sha256 already matched, ``"fetched"`` when downloaded, None when the store's copy does
    not verify."""
    digest = (store.get_bytes(key + DIGEST_SUFFIX) or b"").decode().strip()
    sidecar = target.with_name(target.name + DIGEST_SUFFIX)
    if target.is_file() and sha256_file(target) == digest:
        if not sidecar.is_file():
            atomic_write_text(sidecar, digest + "\n")
        return "kept"
    try:
        store.get_file(key, target, sha256=digest)
    except Irv2Error:
        return None
    atomic_write_text(sidecar, digest + "\n")
    return "fetched"


def pull_newest(store: ObjectStore, prefix: str, folders: list[str], dest: Path) -> Path | None:
    """Download the newest complete checkpoint directly in any of *folders* (under *prefix*)
    to the same relative place under *dest* (with its sidecar), verified against the sidecar's
    sha256; a damaged one is passed over for the next older. None when the store has none."""
    for _, key, rel in complete_checkpoints(store, prefix, folders):
        if fetch_checkpoint(store, key, dest / rel):
            return dest / rel
    return None

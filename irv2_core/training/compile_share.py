"""MindSpore's compile cache shared through the object store, so a fresh worker starts training
without compiling the graph again (20-40 s on a CPU, minutes on Ascend).

The local cache folder is scoped (``runtime.compile_cache``): its name is a digest of the
MindSpore version, the package's code, the command and every value that shapes the graphs (the
config, steps per epoch, validation size, rank count). The store keeps one committed prefix per
folder and rank, ``compile-cache/<folder>/rank_<r>``: the same name is the same graphs, so a
cache is never used for other graphs, and a fetched one is verified file by file. MindSpore
validates it once more on load and compiles when it does not match. Rank r publishes its own
``rank_<r>`` files after its first step (and again at the end, with the evaluation graph) when
the store lacks them; a worker whose folder is empty fetches them before its first compile.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from irv2_core.errors import Irv2Error
from irv2_core.storage.layout import compile_cache_prefix
from irv2_core.storage.publish import fetch_committed, folder_files, publish_files, read_commit
from irv2_core.storage.store import ObjectStore

__all__ = ["SharedCompileCache"]


class SharedCompileCache:
    """This process's rank folder of the scoped compile cache, and its copy in *store*."""

    def __init__(self, store: ObjectStore | None, folder: str | None, rank: int,
                 log: Callable[[str], None]) -> None:  # fmt: skip
        self.store, self.log = store, log
        self.local = Path(folder) / f"rank_{rank}" if folder else None
        self.prefix = compile_cache_prefix(Path(folder).name, rank) if folder else None
        self.state = "off" if folder is None else "local"

    @property
    def active(self) -> bool:
        return self.store is not None and self.local is not None

    def fetch(self) -> str:
        """Fill an empty local folder from the store; the cache's state: ``local`` (it was
        here), ``fetched``, ``compiling`` (none usable in the store) or ``off``."""
        if self.local is None:
            return self.state
        if self.local.is_dir() and any(self.local.rglob("*.mindir")):
            self.log(f"compile cache: {self.local.parent.name} found on this worker")
            return self.state
        self.state = "compiling"
        if not self.active:
            return self.state
        try:
            marker = fetch_committed(self.store, self.prefix, self.local)
        except Irv2Error as exc:  # none published yet, or a file did not verify
            shutil.rmtree(self.local, ignore_errors=True)
            reason = "none in the store" if read_commit(self.store, self.prefix) is None else exc
            self.log(f"compile cache: {reason}; compiling the graph")
            return self.state
        self.state = "fetched"
        size = sum(e["size"] for e in marker["files"].values()) / 1e6
        self.log(f"compile cache: fetched {len(marker['files'])} files ({size:.1f} MB) from "
                 f"{self.store.uri}/{self.prefix} (verified)")  # fmt: skip
        return self.state

    def publish(self) -> None:
        """Publish the local rank folder when the store lacks any of its files. A failure is
        logged, never raised: training goes on without sharing its cache."""
        if not self.active or not self.local.is_dir():
            return
        files = folder_files(self.local)
        try:
            marker = read_commit(self.store, self.prefix)
            if not files or (marker is not None and set(files) <= set(marker["files"])):
                return
            publish_files(self.store, self.prefix, files)
            self.log(f"compile cache: published {len(files)} files to {self.prefix}")
        except (Irv2Error, OSError) as exc:
            self.log(f"compile cache: not published ({exc}); the next fresh worker compiles")

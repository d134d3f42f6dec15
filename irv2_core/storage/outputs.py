"""One mechanism for "is this stage already done?", and for publishing what it made.

Every heavy stage (convert, train, evaluate, export) declares once, as a :class:`StageOutput`:
the content its key is made of, the local output a stamp guards, the store prefix it is
published under and the record type it returns. :func:`produce_once` then does, for every stage
and with or without a store, in this order:

1. with a store, a commit marker under the prefix made for the same digest: the published
   record is returned (adopted to this worker's paths) and nothing runs or downloads;
2. otherwise the stage's inputs are fetched (with a store) and the stage runs;
3. its output files are stamped with the cache key (``irv2_core.storage.stamps``);
4. with a store, they are published, verified, commit marker last, with the record (and its
   :class:`~irv2_core.records.Address`) in the marker.

The cache key itself (Prefect's, in ``tasks.caching``) is computed from the same declaration.
``docs/flow.md`` has the whole order, Prefect's cache included.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from irv2_core.records import Address, Record
from irv2_core.runtime.io import sha256_json
from irv2_core.storage.publish import publish_files, read_commit
from irv2_core.storage.stamps import write_stamp
from irv2_core.storage.store import ObjectStore

__all__ = ["Made", "StageOutput", "committed", "committed_record", "produce_once", "publish"]

R = TypeVar("R", bound=Record)


@dataclass(frozen=True)
class StageOutput(Generic[R]):
    """What one stage produces for given inputs, declared once."""

    stage: str
    content: Mapping[str, Any]  # JSON-safe: every input that shapes the output, no local paths
    anchor: Path  # the local output (file or folder) its stamp guards
    prefix: str | None  # where it is published in the store (None: never published)
    record: type[R]

    @property
    def digest(self) -> str:
        """The content digest: the cache key's stem and the publication's identity."""
        return sha256_json(dict(self.content))

    def local_content(self) -> dict[str, Any]:
        """The content plus the local output's path: without a store, two output folders are
        two outputs even for the same inputs."""
        return {**self.content, "anchor": str(self.anchor)}

    def address(self, store: ObjectStore) -> Address:
        """Where this output is (or will be) published in *store*."""
        assert self.prefix is not None, f"{self.stage} is never published"
        return Address(uri=f"{store.uri}/{self.prefix}", prefix=self.prefix, digest=self.digest)


@dataclass(frozen=True)
class Made(Generic[R]):
    """What a stage made: its record, the files to publish (``{name: local file}``) and, when
    not all of them, the files its stamp vouches for (a run folder's later files do not count)."""

    record: R
    files: Mapping[str, Path]
    stamped: tuple[Path, ...] | None = None


def committed(store: ObjectStore, prefix: str, digest: str) -> bool:
    """Whether *prefix* holds a complete publication made for the content *digest*."""
    marker = read_commit(store, prefix)
    return marker is not None and marker.get("meta", {}).get("digest") == digest


def committed_record(store: ObjectStore, prefix: str, digest: str) -> dict[str, Any] | None:
    """The stage record published under *prefix* for *digest* (from its commit marker), or None."""
    marker = read_commit(store, prefix)
    meta = (marker or {}).get("meta", {})
    return meta.get("record") if meta.get("digest") == digest else None


def publish(
    store: ObjectStore, prefix: str, files: Mapping[str, Path], digest: str, **meta: Any
) -> dict[str, Any]:
    """Publish *files* under *prefix* for the content *digest* (verified; commit marker last)."""
    return publish_files(store, prefix, dict(files), meta={"digest": digest, **meta})


def produce_once(
    out: StageOutput[R],
    store: ObjectStore | None,
    key: str | None,
    produce: Callable[[], Made[R]],
    *,
    fetch_inputs: Callable[[], Any] | None = None,
    adopt: Callable[[R], R] | None = None,
) -> R:
    """The record of *out*: the published one when the store holds it, else made by *produce*,
    stamped with *key* and published. *adopt* turns a published record into this worker's (local
    paths); *fetch_inputs* brings what *produce* reads onto a worker that has never seen it."""
    if store is not None and out.prefix is not None:
        found = committed_record(store, out.prefix, out.digest)
        if found is not None:
            record = out.record.model_validate({**found, "address": out.address(store)})
            return adopt(record) if adopt else record
        if fetch_inputs is not None:
            fetch_inputs()
    made = produce()
    stamped = made.stamped if made.stamped is not None else tuple(made.files.values())
    write_stamp(out.anchor, key, stamped)
    if store is None or out.prefix is None:
        return made.record
    record = made.record.model_copy(update={"address": out.address(store)})
    publish(store, out.prefix, made.files, out.digest, record=record.to_json())
    return record

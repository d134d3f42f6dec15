"""The tasks' view of the object store (``output_uri``): how a cache key is checked against
what is published, how a task gets the inputs it needs on a worker that has never seen them, and
where Prefect keeps its results. The layout itself is ``irv2_core.storage.layout``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from prefect.filesystems import LocalFileSystem
from prefect_aws import AwsClientParameters, AwsCredentials, S3Bucket

from irv2_core.storage import open_store
from irv2_core.storage.layout import PREFECT_RESULTS
from irv2_core.storage.publish import fetch_committed, folder_files, publish_files, read_commit
from irv2_core.storage.store import ObjectStore, join_key

__all__ = [
    "SMALL_RUN_FILES",
    "StoreRef",
    "committed",
    "committed_record",
    "ensure_local",
    "open_ref",
    "publish",
    "result_storage",
    "run_files",
]

StoreRef = dict[str, Any]  # {"uri": ..., "endpoint_url": ...}: JSON-safe, so a task parameter


def open_ref(ref: StoreRef | None) -> ObjectStore | None:
    """The store a task parameter names, or None when the flow has no ``output_uri``."""
    return open_store(ref["uri"], ref.get("endpoint_url")) if ref else None


def committed(store: ObjectStore, prefix: str, digest: str) -> bool:
    """Whether *prefix* holds a complete publication made for the cache *digest*."""
    marker = read_commit(store, prefix)
    return marker is not None and marker.get("meta", {}).get("digest") == digest


def committed_record(store: ObjectStore, prefix: str, digest: str) -> dict[str, Any] | None:
    """The stage record published with *prefix* for *digest* (from its commit marker), or None.
    A task whose output another worker already published returns this without downloading."""
    marker = read_commit(store, prefix)
    meta = (marker or {}).get("meta", {})
    return meta.get("record") if meta.get("digest") == digest else None


def publish(
    store: ObjectStore, prefix: str, files: dict[str, Path], digest: str, **meta: Any
) -> dict[str, Any]:
    """Publish *files* under *prefix* for the cache *digest* (verified; commit marker last)."""
    return publish_files(store, prefix, files, meta={"digest": digest, **meta})


def ensure_local(store: ObjectStore | None, prefix: str, folder: Path, only=None) -> Path:
    """*folder* holding the committed files of *prefix* (all, or *only* these): what is already
    there and verifies is kept, the rest is fetched. Without a store, *folder* as it is."""
    if store is not None:
        fetch_committed(store, prefix, folder, only=only)
    return folder


# what a worker needs of a published run to report on it (the weights are fetched where used)
SMALL_RUN_FILES = ["classes.json", "config.yaml", "metrics.jsonl", "train_summary.json"]


def run_files(run_dir: Path) -> dict[str, Path]:
    """The run-folder files a published run holds (checkpoints are mirrored apart; reruns are
    published on their own)."""
    return folder_files(run_dir, exclude=("checkpoints", "report", "msrun_log", "reruns"))


def result_storage(ref: StoreRef) -> Any:
    """A saved Prefect storage block for ``<output_uri>/prefect``: persisted task results and
    cache records live beside the outputs, so workers that share only the store share the cache.
    Saved under a name derived from the URI (Prefect requires result storage to be a saved
    block); S3 credentials come from the standard AWS chain, never from the block."""
    uri, endpoint = ref["uri"], ref.get("endpoint_url")
    name = "irv2-results-" + hashlib.sha256(f"{uri}|{endpoint}".encode()).hexdigest()[:12]
    if not uri.startswith("s3://"):
        block = LocalFileSystem(basepath=str(Path(uri.removeprefix("file://")) / PREFECT_RESULTS))
        block.save(name, overwrite=True)
        return block
    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    credentials = AwsCredentials(aws_client_parameters=AwsClientParameters(endpoint_url=endpoint))
    credentials.save(name, overwrite=True)
    block = S3Bucket(
        bucket_name=bucket,
        bucket_folder=join_key(prefix, PREFECT_RESULTS),
        credentials=credentials,
    )
    block.save(name, overwrite=True)
    return block

"""Prefect tasks for the data stages: ``stage`` (object store -> folder) and ``convert``.

stage is keyed on the source listing (keys, sizes, ETags; no download) and retried only on
transient network errors; convert is keyed on the staged data's fingerprint plus its options.
Both keys also check the stamped output (see ``tasks.caching``), so a deleted or changed output
folder is rebuilt instead of returned from the cache. Both return their stage record
(``irv2_core.records``) as a JSON dict.

With an object store (``store``, the flow's ``output_uri``) the keys leave local paths out and are
the same on every worker: convert publishes its MindRecord folder under
``mindrecord/<digest>/``, a worker whose key matches another's publication returns that record
without downloading, and a convert that must run on a worker without the staged data stages it
first (the stage task's cache hit does not bring the files).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from irv2_core.data.convert import convert
from irv2_core.data.stage import source_fingerprint, stage
from irv2_core.errors import Irv2Error
from irv2_core.records import ConversionRecord, StageRecord
from irv2_core.runtime.io import read_json, sha256_json
from irv2_core.storage.layout import convert_prefix
from tasks.caching import cache_key, current_cache_key, store_cache_key, write_stamp
from tasks.common import PERSIST, for_record, retry_transient_only
from tasks.storage import StoreRef, committed_record, ensure_local, open_ref, publish

__all__ = [
    "convert_digest",
    "convert_task",
    "ensure_mindrecord",
    "stage_task",
]


def _stage_content(params: dict[str, Any]) -> dict[str, Any]:
    listing = source_fingerprint(params["source"], endpoint_url=params.get("endpoint_url"))
    return {"task": "stage", "source": params["source"], "listing": listing}


def _stage_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    content = _stage_content(params)
    if params.get("store"):  # the same listing is the same data on every worker
        return for_record(sha256_json(content), StageRecord)
    return for_record(
        cache_key(params["dest"], {**content, "dest": str(params["dest"])}), StageRecord
    )


@task(
    name="stage",
    cache_key_fn=_stage_key,
    retries=3,
    retry_delay_seconds=[2, 10, 30],
    retry_condition_fn=retry_transient_only,
    **PERSIST,
)
def stage_task(
    source: str, dest: str, endpoint_url: str | None = None, store: StoreRef | None = None
) -> dict[str, Any]:
    """Mirror *source* (s3://bucket/prefix or a folder) into *dest*; return the StageRecord.

    Credentials come from the environment / AWS chain, never from parameters, so nothing secret
    reaches the persisted result. *store* only changes the cache key (see the module).
    """
    logger = get_run_logger()
    logger.info("staging %s -> %s", source, dest)
    record = stage(source, dest, endpoint_url=endpoint_url)
    logger.info(
        "staged %s objects (%s downloaded, %s unchanged, %s removed, %s rejected), fingerprint %s",
        record.objects,
        record.downloaded,
        record.unchanged,
        record.removed,
        len(record.rejected),
        record.fingerprint,
    )
    dest_dir = Path(record.dest)
    manifest = dest_dir / "manifest.json"
    objects = read_json(manifest).get("objects", {})
    write_stamp(Path(dest), current_cache_key(), [manifest, *(dest_dir / k for k in objects)])
    return record.to_json()


def _convert_content(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "convert",
        "input_fingerprint": params["input_fingerprint"],
        "options": _convert_options(params),
    }


def convert_digest(input_fingerprint: str, shards: int, val_fraction: float, seed: int) -> str:
    """The content digest (and so the store prefix) of a conversion with these inputs."""
    params = {"input_fingerprint": input_fingerprint, "shards": shards,
              "val_fraction": val_fraction, "seed": seed}  # fmt: skip
    return sha256_json(_convert_content(params))


def _convert_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    content = _convert_content(params)
    if store := open_ref(params.get("store")):
        prefix = convert_prefix(sha256_json(content))
        return store_cache_key(ctx, store, prefix, content, ConversionRecord)
    content["out_dir"] = str(params["out_dir"])
    return for_record(cache_key(params["out_dir"], content), ConversionRecord)


def _convert_options(params: dict[str, Any]) -> dict[str, Any]:
    return {k: params.get(k, d) for k, d in (("shards", 1), ("val_fraction", 0.2), ("seed", 0))}


@task(name="convert", cache_key_fn=_convert_key, retries=1, retry_delay_seconds=2, **PERSIST)
def convert_task(
    data_dir: str,
    out_dir: str,
    input_fingerprint: str,
    shards: int = 1,
    val_fraction: float = 0.2,
    seed: int = 0,
    store: StoreRef | None = None,
    source: str | None = None,
    source_endpoint_url: str | None = None,
) -> dict[str, Any]:
    """Convert the staged class folders into sharded MindRecord; return the ConversionRecord.

    *input_fingerprint* (the staged data's fingerprint) is part of the cache key, so new data
    reconverts even when the folder path is the same. With a *store*, *source* is staged into
    *data_dir* first when this worker does not hold it.
    """
    logger = get_run_logger()
    digest = convert_digest(input_fingerprint, shards, val_fraction, seed)
    st = open_ref(store)
    if st is not None:
        found = committed_record(st, convert_prefix(digest), digest)
        if found is not None:  # another worker published it: fetched only where it is used
            logger.info("convert: %s already published in %s", found["fingerprint"], st.uri)
            return ConversionRecord.model_validate({**found, "out_dir": out_dir}).to_json()
        _ensure_staged(data_dir, input_fingerprint, source, source_endpoint_url, logger)
    record = convert(data_dir, out_dir, shards=shards, val_fraction=val_fraction, seed=seed)
    out = Path(out_dir)
    for item in record.skipped[:20]:
        logger.warning("skipped %s: %s", item.path, item.reason)
    logger.info("converted %s, fingerprint %s", record.totals, record.fingerprint)
    outputs = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    write_stamp(out, current_cache_key(), outputs)
    if st is not None:
        files = {p.name: p for p in outputs}
        publish(st, convert_prefix(digest), files, digest, record=record.to_json())
        logger.info("published %s files to %s/%s", len(files), st.uri, convert_prefix(digest))
    return record.to_json()


def _ensure_staged(data_dir: str, fingerprint: str, source, endpoint_url, logger) -> None:
    manifest = Path(data_dir) / "manifest.json"
    if manifest.is_file() and read_json(manifest).get("fingerprint") == fingerprint:
        return
    if source is None:
        raise Irv2Error(f"{data_dir} does not hold the staged data {fingerprint[:12]}")
    logger.info("staging %s here first (this worker has not staged it)", source)
    stage(source, data_dir, endpoint_url=endpoint_url)


def ensure_mindrecord(store: Any, digest_prefix: str, folder: Path, fingerprint: str) -> Path:
    """*folder* holding the MindRecord conversion *fingerprint*: as it is when its
    conversion.json says so, else fetched (verified) from the store's *digest_prefix*."""
    record = folder / "conversion.json"
    if record.is_file() and read_json(record).get("fingerprint") == fingerprint:
        return folder
    if store is None:
        raise Irv2Error(f"{folder} does not hold the MindRecord conversion {fingerprint[:12]}")
    return ensure_local(store, digest_prefix, folder)

"""Prefect tasks for the data stages: ``stage`` (object store -> folder) and ``convert``.

stage is keyed on the source listing (keys, sizes, ETags; no download) and retried only on
transient network errors; convert is keyed on the staged data's fingerprint plus its options.
Both keys also check the stamped output (see ``tasks.caching``), so a deleted or changed output
folder is rebuilt instead of returned from the cache. Both return their stage record
(``irv2_core.records``) as a JSON dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.context import TaskRunContext

from irv2_core.records import ConversionRecord, StageRecord
from irv2_core.runtime.io import read_json
from tasks.caching import cache_key, current_cache_key, write_stamp
from tasks.common import PERSIST, for_record, retry_transient_only

__all__ = ["convert_task", "stage_task"]


def _stage_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    from irv2_core.data.stage import source_fingerprint

    listing = source_fingerprint(params["source"], endpoint_url=params.get("endpoint_url"))
    content = {"task": "stage", "source": params["source"], "listing": listing}
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
def stage_task(source: str, dest: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """Mirror *source* (s3://bucket/prefix or a folder) into *dest*; return the StageRecord.

    Credentials come from the environment / AWS chain, never from parameters, so nothing secret
    reaches the persisted result.
    """
    from irv2_core.data.stage import stage

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


def _convert_key(ctx: TaskRunContext, params: dict[str, Any]) -> str:
    content = {
        "task": "convert",
        "input_fingerprint": params["input_fingerprint"],
        "options": _convert_options(params),
        "out_dir": str(params["out_dir"]),
    }
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
) -> dict[str, Any]:
    """Convert the staged class folders into sharded MindRecord; return the ConversionRecord.

    *input_fingerprint* (the staged data's fingerprint) is part of the cache key, so new data
    reconverts even when the folder path is the same.
    """
    from irv2_core.data.convert import convert

    logger = get_run_logger()
    record = convert(data_dir, out_dir, shards=shards, val_fraction=val_fraction, seed=seed)
    out = Path(out_dir)
    for item in record.skipped[:20]:
        logger.warning("skipped %s: %s", item.path, item.reason)
    logger.info("converted %s, fingerprint %s", record.totals, record.fingerprint)
    outputs = sorted(p for p in out.iterdir() if p.is_file() and not p.name.startswith("."))
    write_stamp(out, current_cache_key(), outputs)
    return record.to_json()

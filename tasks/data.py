"""Prefect tasks for the data stages: ``stage`` (object store -> folder) and ``convert``.

stage is keyed on the source listing (keys, sizes, ETags; no download) and retried only on
transient network errors; convert is keyed on the staged data's fingerprint plus its options.
Each declares its output once (``declare_stage``, ``declare_convert``); the cache policy and
``produce_once`` do the rest (``tasks.caching``, ``irv2_core.storage.outputs``). With an object
store (``store``, the flow's ``output_uri``) convert publishes its MindRecord folder under
``mindrecord/<digest>/`` and its record carries that address.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from irv2_core.data.convert import convert
from irv2_core.data.local_copy import ensure_conversion, ensure_staged
from irv2_core.data.stage import source_fingerprint, stage
from irv2_core.records import ConversionRecord, StageRecord
from irv2_core.runtime.io import read_json, sha256_json
from irv2_core.storage.layout import convert_prefix
from irv2_core.storage.outputs import Made, StageOutput, produce_once
from irv2_core.storage.publish import StoreRef, open_ref
from tasks.caching import StagePolicy, current_cache_key
from tasks.common import PERSIST, retry_transient_only, retry_unless_user_error

__all__ = [
    "convert_task",
    "declare_convert",
    "declare_stage",
    "fetch_conversion_task",
    "stage_task",
]

CONVERT_DEFAULTS = (("shards", 1), ("val_fraction", 0.2), ("seed", 0))


def declare_stage(params: dict[str, Any], listing: str | None = None) -> StageOutput:
    """The staged folder: keyed on the source's listing (never published: every worker stages
    its own copy)."""
    if listing is None:
        listing = source_fingerprint(params["source"], endpoint_url=params.get("endpoint_url"))
    content = {"task": "stage", "source": params["source"], "listing": listing}
    return StageOutput("stage", content, Path(params["dest"]), None, StageRecord)


@task(
    name="stage",
    cache_policy=StagePolicy(declare=declare_stage),
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
    reaches the persisted result. *store* only makes the key the same on every worker.
    """
    logger = get_run_logger()

    def produce() -> Made[StageRecord]:
        logger.info("staging %s -> %s", source, dest)
        record = stage(source, dest, endpoint_url=endpoint_url)
        logger.info(
            "staged %s objects (%s downloaded, %s unchanged, %s removed, %s rejected), "
            "fingerprint %s",
            record.objects,
            record.downloaded,
            record.unchanged,
            record.removed,
            len(record.rejected),
            record.fingerprint,
        )
        folder = Path(record.dest)
        objects = read_json(folder / "manifest.json").get("objects", {})
        files = {k: folder / k for k in ["manifest.json", *objects]}
        return Made(record, files)

    # the key was made from the listing; the stamp needs only the folder, so no second listing
    out = declare_stage({"source": source, "dest": dest}, listing="")
    return produce_once(out, None, current_cache_key(), produce).to_json()


def declare_convert(params: dict[str, Any]) -> StageOutput:
    """The MindRecord folder: keyed on the staged data's fingerprint and the options; published
    under ``mindrecord/<digest>``."""
    options = {k: params.get(k, d) for k, d in CONVERT_DEFAULTS}
    content = {"task": "convert", "input_fingerprint": params["input_fingerprint"],
               "options": options}  # fmt: skip
    prefix = convert_prefix(sha256_json(content))
    return StageOutput("convert", content, Path(params["out_dir"]), prefix, ConversionRecord)


@task(name="convert", cache_policy=StagePolicy(declare=declare_convert), retries=1,
      retry_delay_seconds=2, **PERSIST)  # fmt: skip
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
    options = {"shards": shards, "val_fraction": val_fraction, "seed": seed}
    out = declare_convert({"input_fingerprint": input_fingerprint, "out_dir": out_dir, **options})

    def fetch_inputs() -> None:
        if ensure_staged(data_dir, input_fingerprint, source, source_endpoint_url):
            logger.info("staged %s here first (this worker had not staged it)", source)

    def produce() -> Made[ConversionRecord]:
        record = convert(data_dir, out_dir, **options)
        for item in record.skipped[:20]:
            logger.warning("skipped %s: %s", item.path, item.reason)
        logger.info("converted %s, fingerprint %s", record.totals, record.fingerprint)
        outputs = sorted(p for p in Path(out_dir).iterdir() if p.is_file())
        return Made(record, {p.name: p for p in outputs if not p.name.startswith(".")})

    def adopt(found: ConversionRecord) -> ConversionRecord:
        logger.info("convert: %s already published at %s", found.fingerprint, found.address.uri)
        return found.model_copy(update={"out_dir": out_dir})  # fetched only where it is used

    st = open_ref(store)
    record = produce_once(out, st, current_cache_key(), produce, fetch_inputs=fetch_inputs,
                          adopt=adopt)  # fmt: skip
    if record.address is not None:
        logger.info("convert: published at %s", record.address.uri)
    return record.to_json()


@task(name="fetch-mindrecord", retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_user_error)  # fmt: skip
def fetch_conversion_task(store: StoreRef, prefix: str, folder: str, fingerprint: str) -> str:
    """*folder* holding the MindRecord conversion *fingerprint* (fetched, verified, from the
    store's *prefix* when it does not already)."""
    return str(ensure_conversion(open_ref(store), prefix, Path(folder), fingerprint))

"""``convert``: class folders of images -> sharded MindRecord (``train`` / ``val``) for training.

Layouts: ``train/<class>/*`` (+ ``val/<class>/*``) as in ImageNet, or bare class folders, which
get a seeded, deterministic per-class split. Every image is checked (see ``irv2_core.data.images``);
awkward ones are normalised to RGB JPEG, broken ones are skipped and listed. Output is built in a
temporary sibling folder and renamed into place, so a half-written folder never looks complete,
and a folder already holding the same conversion (same fingerprint) is returned without work.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mindspore.mindrecord import FileWriter
from pydantic import ValidationError

from irv2_core.data.image_folders import (
    DataSplit,
    discover_layout,
    input_fingerprint,
    mindrecord_sizes,
)
from irv2_core.data.images import BadImage, prepare_file
from irv2_core.errors import Irv2Error
from irv2_core.records import ConversionRecord
from irv2_core.runtime.dirlock import folder_lock
from irv2_core.runtime.io import atomic_write_json, publish_dir, read_json, sha256_json

__all__ = ["CONVERTER_VERSION", "convert"]

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1
RECORD_NAME = "conversion.json"
SCHEMA = {"file_name": {"type": "string"}, "label": {"type": "int32"}, "image": {"type": "bytes"}}
WRITE_BATCH = 64
MAX_SHARDS = 1000  # MindRecord's own limit on shard_num


def _check_options(shards: int, val_fraction: float) -> None:
    if not 1 <= int(shards) <= MAX_SHARDS:
        raise Irv2Error(f"--shards must be between 1 and {MAX_SHARDS}, got {shards}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise Irv2Error(
            f"--val-fraction must be between 0 and 1 (exclusive), got {val_fraction}; "
            "it sets the share of each class held out for val when there is no val/ folder"
        )


def _reusable(out_dir: Path, fingerprint: str) -> ConversionRecord | None:
    """The existing record if *out_dir* already holds this exact conversion, complete.

    A ``conversion.json`` that does not read as a :class:`ConversionRecord` means convert again.
    """
    path = out_dir / RECORD_NAME
    if not path.is_file():
        return None
    try:
        record = ConversionRecord.model_validate(read_json(path))
    except (OSError, ValueError, ValidationError):
        return None
    if record.fingerprint != fingerprint:
        return None
    for name, size in record.files.items():
        f = out_dir / name
        if not f.is_file() or f.stat().st_size != size:
            return None
    return record.model_copy(update={"out_dir": str(out_dir)})


def _prepare_all(split: DataSplit, full_decode: bool, workers: int):
    """Yield ``(item, jpeg_bytes | None, how_or_reason)`` in input order, checked in parallel."""

    def one(item):
        try:
            data, how = prepare_file(item.path, full_decode)
            return item, data, how
        except BadImage as exc:
            return item, None, str(exc)
        except OSError as exc:
            return item, None, f"cannot read file: {exc.strerror or exc}"

    with ThreadPoolExecutor(max_workers=workers) as pool:
        # map() keeps input order (deterministic output); chunks bound the bytes held in memory.
        for start in range(0, len(split.items), 512):
            yield from pool.map(one, split.items[start : start + 512])


def _write_split(split: DataSplit, tmp_dir: Path, shards: int, full_decode: bool, stats: dict):
    """Write ``<split>.mindrecord*``; return per-class counts and the header/page sizes used."""
    if not split.items:
        raise Irv2Error(
            f"the {split.name} split is empty: no image files for it under {split.root}; "
            "add images (or, without a val/ folder, at least 2 images per class)"
        )
    header_size, page_size = mindrecord_sizes(split, shards)
    # FileWriter names one shard "<name>" but several "<name>0..N-1"; naming the single shard
    # "...0" ourselves makes "<split>.mindrecord0" the first file whatever the shard count.
    name = f"{split.name}.mindrecord" + ("0" if shards == 1 else "")
    writer = FileWriter(str(tmp_dir / name), shard_num=shards, overwrite=True)
    writer.set_header_size(header_size)
    writer.set_page_size(page_size)
    writer.add_schema(SCHEMA, "irv2")
    writer.add_index(["label"])
    counts = {name: 0 for name in split.class_names}
    batch: list[dict[str, Any]] = []
    for item, data, how in _prepare_all(split, full_decode, stats["workers"]):
        if data is None:
            stats["skipped"].append({"path": item.rel, "reason": how})
            continue
        if len(data) > page_size // 2:  # re-encoding can grow a small PNG past the page size
            reason = f"re-encoded JPEG is {len(data)} bytes, over the {page_size // 2} byte limit"
            stats["skipped"].append({"path": item.rel, "reason": reason})
            continue
        stats["stored"][how] = stats["stored"].get(how, 0) + 1
        counts[item.class_name] += 1
        batch.append({"file_name": item.rel, "label": item.label, "image": data})
        if len(batch) >= WRITE_BATCH:
            writer.write_raw_data(batch)
            batch = []
    if batch:
        writer.write_raw_data(batch)
    if not any(counts.values()):
        raise Irv2Error(
            f"no usable image in the {split.name} split of {split.root}: every candidate file "
            "was skipped (see the reasons above); fix or remove the broken files"
        )
    # The items are written: let them go before MindRecord's commit builds its index, the
    # conversion's memory peak (issue 24: ~25 MB at 110k images).
    split.items = []
    writer.commit()
    return counts, {"header_size": header_size, "page_size": page_size}


def _clean_stale(out_dir: Path) -> None:
    for stale in out_dir.parent.glob(f".{out_dir.name}.tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _build(layout, tmp_dir: Path, shards: int, full_decode: bool, workers: int | None) -> dict:
    """Write every split, ``classes.json``; return the record's data part (counts, skipped...)."""
    stats: dict[str, Any] = {"skipped": [], "stored": {}, "workers": workers or os.cpu_count() or 1}
    counts, sizes = {}, {}
    for split in layout.splits:
        counts[split.name], sizes[split.name] = _write_split(
            split, tmp_dir, shards, full_decode, stats
        )
    atomic_write_json(tmp_dir / "classes.json", layout.class_index)
    return {
        "layout": layout.kind,
        "num_classes": len(layout.class_index),
        "counts": counts,
        "totals": {name: sum(c.values()) for name, c in counts.items()},
        "skipped": stats["skipped"],
        "stored": stats["stored"],
        "ignored_files": layout.ignored,
        "mindrecord": {"shards": shards, "sizes": sizes},
        "files": {p.name: p.stat().st_size for p in sorted(tmp_dir.iterdir())},
    }


def convert(
    data_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    shards: int = 1,
    val_fraction: float = 0.2,
    seed: int = 0,
    full_decode: bool = False,
    workers: int | None = None,
) -> ConversionRecord:
    """Convert an image folder into ``train``/``val`` MindRecord shards plus ``classes.json``.

    Returns the :class:`~irv2_core.records.ConversionRecord`, also written (without ``out_dir``)
    as ``OUT_DIR/conversion.json``: counts per split and class, the ``skipped`` files with
    reasons, the MindRecord header/page sizes, the ``input_fingerprint`` and the output
    ``fingerprint`` (the cache key). If *out_dir* already holds a complete conversion with the
    same fingerprint, it is returned and nothing is written. *full_decode* also decodes good
    JPEGs (slower); *workers* defaults to the CPU count.
    """
    _check_options(shards, val_fraction)
    data_dir, out_dir = Path(data_dir).resolve(), Path(out_dir).resolve()
    if not data_dir.is_dir():
        raise Irv2Error(
            f"data folder not found: {data_dir} (give the folder that holds the images)"
        )
    if out_dir == data_dir or data_dir in out_dir.parents:
        raise Irv2Error(
            f"the output folder {out_dir} must not be inside the data folder {data_dir}"
        )
    started = time.perf_counter()
    layout = discover_layout(data_dir, val_fraction, seed)
    in_fp, in_fp_source = input_fingerprint(data_dir, layout.all_items())
    options = {"shards": int(shards), "val_fraction": float(val_fraction), "seed": int(seed)}
    options["full_decode"] = bool(full_decode)
    fingerprint = sha256_json(
        {"input": in_fp, "options": options, "layout": layout.kind, "version": CONVERTER_VERSION}
    )
    existing = _reusable(out_dir, fingerprint)
    if existing is not None:
        log.info(
            "convert: %s already holds this conversion (%s); nothing to do",
            out_dir,
            fingerprint[:12],
        )
        return existing

    with folder_lock(out_dir, "convert"):
        _clean_stale(out_dir)
        tmp_dir = out_dir.with_name(f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}")
        tmp_dir.mkdir()
        try:
            built = _build(layout, tmp_dir, int(shards), full_decode, workers)
            wall = time.perf_counter() - started
            total = sum(built["totals"].values())
            record = ConversionRecord(
                **built,
                fingerprint=fingerprint,
                input_fingerprint=in_fp,
                input_fingerprint_source=in_fp_source,
                converter_version=CONVERTER_VERSION,
                data_dir=str(data_dir),
                options=options,
                wall_s=round(wall, 3),
                img_per_s=round(total / wall, 1) if wall > 0 else None,
                out_dir=str(out_dir),
            )
            atomic_write_json(tmp_dir / RECORD_NAME, record.file_content())
            publish_dir(tmp_dir, out_dir)
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise
    log.info(
        "convert: wrote %s (%s images, %d skipped)",
        out_dir,
        record.totals,
        len(record.skipped),
    )
    return record

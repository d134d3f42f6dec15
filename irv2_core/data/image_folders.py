"""Find the classes, splits and image files of a data folder for ``convert``.

Kept apart from the writer so the rules (what counts as a class, how val is carved out, what the
input's fingerprint is, how big MindRecord pages must be) can be read and tested on their own.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irv2_core.data.images import is_image_name
from irv2_core.data.item_table import Item, ItemChain, ItemTable, RelIndex
from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import sha256_file
from irv2_core.runtime.json_stream import JsonReader

MIN_PAGE = 1 << 20  # small enough that a tiny set is not a 32 MiB (sparse) file per shard
MAX_PAGE = 256 << 20  # MindRecord's upper bound
MIN_HEADER, MAX_HEADER = 64 << 10, 128 << 20
HEADER_BYTES_PER_PAGE = 512  # measured ~200 B of header per page in MindSpore 2.10; 2.5x margin


@dataclass
class DataSplit:
    """The items of one split (``train`` or ``val``) and the class names, in label order."""

    name: str
    root: Path
    class_names: list[str]
    items: Sequence[Item] = field(default_factory=list)


@dataclass
class Layout:
    """What ``discover_layout`` found: the layout kind, class index, splits and ignored files."""

    kind: str
    class_index: dict[str, int]
    splits: list[DataSplit]
    ignored: int

    def all_items(self) -> ItemChain:
        """Every candidate image of every split (a view, not a copy)."""
        return ItemChain([split.items for split in self.splits])


def _scan_class(data_dir: Path, class_dir: Path) -> tuple[list[tuple[str, int]], int]:
    """Image files under *class_dir* (recursive, sorted) as (rel, size); count the rest."""
    found, ignored = [], 0
    for root, dirs, files in os.walk(class_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        # plain strings per file, no Path objects: at 100k+ files their garbage, interleaved with
        # the strings kept, left the heap fragmented (issue 24: conversion's peak memory)
        folder = Path(root).relative_to(data_dir).as_posix()
        for name in sorted(files):
            if not is_image_name(name):
                ignored += 1
                continue
            found.append((f"{folder}/{name}", os.stat(os.path.join(root, name)).st_size))
    return found, ignored


def _class_files(data_dir: Path, root: Path, ignored: list[int]):
    """``(class name, its image files)`` for each non-hidden folder of *root* holding images, in
    sorted order, one class at a time (issue 24: never every file of the set at once); files
    that are not images are counted in ``ignored[0]``."""
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        files, n_ignored = _scan_class(data_dir, entry)
        ignored[0] += n_ignored
        if files:
            yield entry.name, files


def _add(table: ItemTable, files: list[tuple[str, int]], label: int) -> None:
    for rel, size in files:
        table.append(rel, label, size)


def _split_class(files: list, class_name: str, val_fraction: float, seed: int):
    """Deterministic per-class split: a seeded shuffle of the sorted files, then a cut."""
    order = list(range(len(files)))
    random.Random(f"{seed}/{class_name}").shuffle(order)
    n = len(files)
    n_val = 0 if n < 2 else min(max(1, round(n * val_fraction)), n - 1)
    val_idx = set(order[:n_val])
    train = [f for i, f in enumerate(files) if i not in val_idx]
    val = [f for i, f in enumerate(files) if i in val_idx]
    return train, val


def _layout_kind(data_dir: Path) -> str:
    has_train, has_val = (data_dir / "train").is_dir(), (data_dir / "val").is_dir()
    if not has_train and has_val:
        raise Irv2Error(f"{data_dir} has a val/ folder but no train/ folder; add train/<class>/*")
    return "train/val" if has_val else "train+split" if has_train else "class-folders"


def _add_val_folder(data_dir: Path, val: DataSplit, class_index: dict, ignored: list) -> None:
    extra = []
    for name, files in _class_files(data_dir, val.root, ignored):
        if name in class_index:
            _add(val.items, files, class_index[name])
        else:
            extra.append(name)
    if extra:
        raise Irv2Error(
            f"val classes missing from train: {', '.join(extra[:10])}"
            f"{' ...' if len(extra) > 10 else ''} (in {val.root}); every val class needs a "
            f"train/<class> folder with images, or remove those val folders"
        )


def discover_layout(data_dir: Path, val_fraction: float, seed: int) -> Layout:
    """Classify *data_dir* as ``train/val``, ``train+split`` or ``class-folders`` and list it.

    Class index = sorted names of train class folders that hold at least one image file. Val
    classes must be a subset of them. Without a val folder, each class gives ``val_fraction`` of
    its files (at least one when it has two or more) to val, chosen by a seeded shuffle.
    """
    kind = _layout_kind(data_dir)
    where = data_dir if kind == "class-folders" else data_dir / "train"
    names: list[str] = []  # filled in sorted order as the classes are scanned: the labels
    train = DataSplit("train", where, names, ItemTable(str(data_dir), names))
    val_root = data_dir / "val" if kind == "train/val" else where
    val = DataSplit("val", val_root, names, ItemTable(str(data_dir), names))
    ignored = [0]
    for name, files in _class_files(data_dir, where, ignored):
        names.append(name)
        if kind == "train/val":
            _add(train.items, files, len(names) - 1)
        else:
            tr, va = _split_class(files, name, val_fraction, seed)
            _add(train.items, tr, len(names) - 1)
            _add(val.items, va, len(names) - 1)
    if len(names) < 2:
        raise Irv2Error(
            f"found {len(names)} class folder(s) with images under {where}; need at least 2. "
            "Expected layout: train/<class>/<image> (+ val/<class>/<image>) or <class>/<image>"
        )
    class_index = {name: i for i, name in enumerate(names)}
    if kind == "train/val":
        _add_val_folder(data_dir, val, class_index, ignored)
    # A seeded shuffle mixes classes across shards/pages, so an unshuffled read is not one class.
    train.items.shuffle(random.Random(seed))
    return Layout(kind, class_index, [train, val], ignored[0])


def _manifest_fingerprint(path: Path, items: Sequence[Item]) -> str | None:
    """The stage manifest's fingerprint if it lists every item with the item's size, else None.
    Streamed (issue 24): the manifest's text and entries are never held whole, and the items
    are found by their paths' hashes (:class:`RelIndex`), not through a string per item."""
    index = RelIndex(items)
    fingerprint = None
    with path.open(encoding="utf-8") as fh:
        reader = JsonReader(fh)
        for key in reader.members():
            if key == "fingerprint":
                fingerprint = reader.value()
            elif key != "objects":
                reader.value()
            else:
                for rel in reader.members():
                    entry = reader.value()
                    item = index.claim(rel)
                    if item is not None and not _staged_with_size(entry, item.size):
                        return None
    return fingerprint if index.all_claimed() and isinstance(fingerprint, str) else None


def _staged_with_size(entry: Any, size: int) -> bool:
    return isinstance(entry, dict) and "sha256" in entry and entry.get("size") == size


def input_fingerprint(data_dir: Path, items: Sequence[Item]) -> tuple[str, str]:
    """Cache key of the input images and where it came from (``manifest`` or ``content``).

    A staged folder's ``manifest.json`` fingerprint is used when every image is listed in it
    with the same size (the folder is what was staged); otherwise the sha256 of every image's
    bytes is hashed with its relative path, which reads the whole set once.
    """
    manifest = data_dir / "manifest.json"
    if manifest.is_file():
        try:
            fp = _manifest_fingerprint(manifest, items)
            if fp is not None:
                return fp, "manifest"
        except (OSError, ValueError):
            pass  # not a usable manifest: fall back to hashing the content
    ordered = sorted(items, key=lambda i: i.rel)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        digests = list(pool.map(lambda i: sha256_file(i.path), ordered))
    h = hashlib.sha256()
    for item, digest in zip(ordered, digests, strict=True):
        h.update(f"{item.rel}\0{digest}\n".encode())
    return h.hexdigest(), "content"


def _pow2_at_least(n: float) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def mindrecord_sizes(split: DataSplit, shards: int) -> tuple[int, int]:
    """``(header_size, page_size)`` for a split: pages fit the largest image 4x over, and the
    header has room for every page of a shard with a wide margin (too small fails mid-write)."""
    largest = total = 0
    for item in split.items:
        largest, total = max(largest, item.size), total + item.size
    page = min(MAX_PAGE, max(MIN_PAGE, _pow2_at_least(4 * largest)))
    per_shard = 1.1 * total / shards + page
    rows = max(len(split.items), 1)
    pages = math.ceil(per_shard / (0.75 * page)) + math.ceil(256 * rows / page) + 4
    header = min(MAX_HEADER, max(MIN_HEADER, _pow2_at_least(16384 + HEADER_BYTES_PER_PAGE * pages)))
    return header, page

"""Find the classes, splits and image files of a data folder for ``convert``.

Kept apart from the writer so the rules (what counts as a class, how val is carved out, what the
input's fingerprint is, how big MindRecord pages must be) can be read and tested on their own.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from irv2_core.data.images import is_image_name
from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import sha256_file
from irv2_core.runtime.json_stream import JsonReader

MIN_PAGE = 1 << 20  # small enough that a tiny set is not a 32 MiB (sparse) file per shard
MAX_PAGE = 256 << 20  # MindRecord's upper bound
MIN_HEADER, MAX_HEADER = 64 << 10, 128 << 20
HEADER_BYTES_PER_PAGE = 512  # measured ~200 B of header per page in MindSpore 2.10; 2.5x margin


@dataclass(frozen=True, slots=True)
class Item:
    """One candidate image: the data folder, its path relative to it, class and size.
    Slim (slots; *base* is one string shared by every item): a conversion holds one per image."""

    base: str
    rel: str
    class_name: str
    label: int
    size: int

    @property
    def path(self) -> str:
        """The image file's absolute path."""
        return f"{self.base}/{self.rel}"


@dataclass
class DataSplit:
    """The items of one split (``train`` or ``val``) and the class names, in label order."""

    name: str
    root: Path
    class_names: list[str]
    items: list[Item] = field(default_factory=list)


@dataclass
class Layout:
    """What ``discover_layout`` found: the layout kind, class index, splits and ignored files."""

    kind: str
    class_index: dict[str, int]
    splits: list[DataSplit]
    ignored: int

    def all_items(self) -> list[Item]:
        """Every candidate image of every split."""
        return [item for split in self.splits for item in split.items]


def _scan_class(data_dir: Path, class_dir: Path) -> tuple[list[tuple[str, str, int]], int]:
    """Image files under *class_dir* (recursive, sorted) as (base, rel, size); count the rest."""
    base = str(data_dir)  # one string, shared by every item
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
            found.append((base, f"{folder}/{name}", os.stat(os.path.join(root, name)).st_size))
    return found, ignored


def _scan_split_root(data_dir: Path, root: Path) -> tuple[dict[str, list], int]:
    """Class folder name -> its image files, for every non-hidden folder holding images."""
    classes, ignored = {}, 0
    for entry in sorted(root.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        files, n_ignored = _scan_class(data_dir, entry)
        ignored += n_ignored
        if files:
            classes[entry.name] = files
    return classes, ignored


def _items(files: list, class_name: str, label: int) -> list[Item]:
    return [Item(base, rel, class_name, label, size) for base, rel, size in files]


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


def discover_layout(data_dir: Path, val_fraction: float, seed: int) -> Layout:
    """Classify *data_dir* as ``train/val``, ``train+split`` or ``class-folders`` and list it.

    Class index = sorted names of train class folders that hold at least one image file. Val
    classes must be a subset of them. Without a val folder, each class gives ``val_fraction`` of
    its files (at least one when it has two or more) to val, chosen by a seeded shuffle.
    """
    train_root, val_root = data_dir / "train", data_dir / "val"
    has_train = train_root.is_dir()
    if not has_train and val_root.is_dir():
        raise Irv2Error(f"{data_dir} has a val/ folder but no train/ folder; add train/<class>/*")
    classes, ignored = _scan_split_root(data_dir, train_root if has_train else data_dir)
    where = train_root if has_train else data_dir
    if len(classes) < 2:
        raise Irv2Error(
            f"found {len(classes)} class folder(s) with images under {where}; need at least 2. "
            "Expected layout: train/<class>/<image> (+ val/<class>/<image>) or <class>/<image>"
        )
    class_index = {name: i for i, name in enumerate(sorted(classes))}
    names = list(class_index)
    train, val = DataSplit("train", where, names), DataSplit("val", where, names)
    if has_train and val_root.is_dir():
        kind = "train/val"
        val_classes, n_ignored = _scan_split_root(data_dir, val_root)
        ignored += n_ignored
        extra = sorted(set(val_classes) - set(class_index))
        if extra:
            raise Irv2Error(
                f"val classes missing from train: {', '.join(extra[:10])}"
                f"{' ...' if len(extra) > 10 else ''} (in {val_root}); every val class needs a "
                f"train/<class> folder with images, or remove those val folders"
            )
        val.root = val_root
        for name, files in val_classes.items():
            val.items += _items(files, name, class_index[name])
        for name, files in classes.items():
            train.items += _items(files, name, class_index[name])
    else:
        kind = "train+split" if has_train else "class-folders"
        for name, files in classes.items():
            tr, va = _split_class(files, name, val_fraction, seed)
            train.items += _items(tr, name, class_index[name])
            val.items += _items(va, name, class_index[name])
    # A seeded shuffle mixes classes across shards/pages, so an unshuffled read is not one class.
    random.Random(seed).shuffle(train.items)
    return Layout(kind, class_index, [train, val], ignored)


def _manifest_fingerprint(path: Path, items: list[Item]) -> str | None:
    """The stage manifest's fingerprint if it lists every item with the item's size, else None.
    Streamed (issue 24): the manifest's text and entries are never held whole, only a
    ``{rel: size}`` of the items, whose keys are the items' own strings."""
    want = {i.rel: i.size for i in items}
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
                    if rel in want and not _staged_with_size(entry, want.pop(rel)):
                        return None
    return fingerprint if not want and isinstance(fingerprint, str) else None


def _staged_with_size(entry: Any, size: int) -> bool:
    return isinstance(entry, dict) and "sha256" in entry and entry.get("size") == size


def input_fingerprint(data_dir: Path, items: list[Item]) -> tuple[str, str]:
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
    sizes = [i.size for i in split.items] or [0]
    page = min(MAX_PAGE, max(MIN_PAGE, _pow2_at_least(4 * max(sizes))))
    per_shard = 1.1 * sum(sizes) / shards + page
    pages = math.ceil(per_shard / (0.75 * page)) + math.ceil(256 * len(sizes) / page) + 4
    header = min(MAX_HEADER, max(MIN_HEADER, _pow2_at_least(16384 + HEADER_BYTES_PER_PAGE * pages)))
    return header, page

"""Reading a JSON document member by member (runtime.json_stream) and the stage-manifest check
built on it: the same answers as ``json.loads``, a bounded window, clear failures."""

from __future__ import annotations

import io
import json
import tracemalloc

import pytest

from irv2_core.data.image_folders import Item, input_fingerprint
from irv2_core.runtime.io import atomic_write_json
from irv2_core.runtime.json_stream import JsonReader

DOC = {
    "a": 12345678901234567890,
    "b": [1, 2.5e-3, 'x\\y \u00e9 "q"', None, True, {"n": [[]]}],
    "objects": {
        f"train/c{i}/img {i}.jpg": {"size": 100 + i, "sha256": "ab" * 32} for i in range(30)
    },
    "empty": {},
    "z": -0.0,
}


def _walk(reader: JsonReader) -> dict:
    """Rebuild an object through members()/value(), nesting through members() for "objects"."""
    out = {}
    for key in reader.members():
        out[key] = _walk(reader) if key in ("objects", "empty") else reader.value()
    return out


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
@pytest.mark.parametrize("indent", [None, 2])
def test_members_and_values_read_what_json_loads_reads_whatever_the_window(chunk, indent):
    text = json.dumps(DOC, indent=indent, ensure_ascii=False)
    assert _walk(JsonReader(io.StringIO(text), chunk=chunk)) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    ['{"a": 1', '{"a" 1}', '{"a": 1,}', "[1, 2]", "{1: 2}", '{"a": 1 "b": 2}', '{"a": [1, }', ""],
)
def test_malformed_json_raises_value_error(text):
    with pytest.raises(ValueError):
        _walk(JsonReader(io.StringIO(text), chunk=3))


def _staged(tmp_path, n: int):
    """A staged folder's manifest for *n* images (no files: only the manifest is read) and the
    items conversion would find for them."""
    objects = {f"train/c{i % 1000:04d}/img_{i:07d}.jpg": {"etag": f"mtime-{i}", "sha256": "0" * 64,
                                                          "size": 1000 + i % 500}
               for i in range(n)}  # fmt: skip
    manifest = {"endpoint": None, "fingerprint": "f" * 64, "objects": objects, "rejected": []}
    atomic_write_json(tmp_path / "manifest.json", manifest)
    items = [
        Item(str(tmp_path), rel, rel.split("/")[1], 0, o["size"]) for rel, o in objects.items()
    ]
    return items


def test_a_staged_folder_is_recognised_from_its_manifest_and_a_changed_size_is_not(tmp_path):
    items = _staged(tmp_path, 50)
    assert input_fingerprint(tmp_path, items) == ("f" * 64, "manifest")
    assert input_fingerprint(tmp_path, items[:10]) == ("f" * 64, "manifest")  # a subset: fine
    changed = [*items[:-1], Item(str(tmp_path), items[-1].rel, "c", 0, items[-1].size + 1)]
    for item in changed:
        (tmp_path / item.rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / item.rel).write_bytes(b"x" * item.size)
    assert input_fingerprint(tmp_path, changed)[1] == "content"  # hashed, not trusted
    (tmp_path / "manifest.json").write_text('{"fingerprint": "' + "f" * 64 + '", "objects": {')
    assert input_fingerprint(tmp_path, changed)[1] == "content"  # truncated manifest: hashed


def _check_peak(tmp_path, n: int) -> int:
    """Python's peak allocation while conversion checks a staged folder of *n* images against
    its manifest (the items themselves already exist: a conversion holds them anyway)."""
    folder = tmp_path / str(n)
    folder.mkdir()
    items = _staged(folder, n)
    tracemalloc.start()
    try:
        assert input_fingerprint(folder, items) == ("f" * 64, "manifest")
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_checking_a_manifest_costs_little_per_image(tmp_path):
    """Issue 24: conversion's memory must not grow with the manifest beyond the items
    themselves. ``json.loads`` of a manifest holds its text and every entry: > 300 B per image
    (this manifest is ~170 B per image on disk); the streamed check keeps a window and a
    ``{rel: size}`` of the items' own strings."""
    small, big = _check_peak(tmp_path, 20_000), _check_peak(tmp_path, 80_000)
    per_image = (big - small) / 60_000
    assert per_image < 80, f"{per_image:.0f} B per image (peaks {small} and {big} B)"

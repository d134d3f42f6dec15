"""convert: staged awkward images -> MindRecord that MindDataset reads and Decode decodes;
layouts, deterministic split, skipped list, idempotence and atomic replacement."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support.data_cases import BROKEN, IGNORED, SIZE, awkward_tree, upload_tree, write_tree
from support.images import write_image_tree

from irv2_core.cli import main
from irv2_core.data.convert import convert
from irv2_core.errors import Irv2Error
from irv2_core.runtime.io import read_json


def _read(out: Path, split: str, decode: bool) -> list[dict]:
    import mindspore.dataset as ds
    from mindspore.dataset import vision

    data = ds.MindDataset(
        str(out / f"{split}.mindrecord0"),
        columns_list=["image", "label", "file_name"],
        shuffle=False,
    )
    if decode:  # the MindSpore decoder itself must read every stored image, awkward ones too
        data = data.map(operations=[vision.Decode()], input_columns=["image"])
    rows = list(data.create_dict_iterator(output_numpy=True, num_epochs=1))
    for row in rows:
        row["file_name"] = str(row["file_name"])
        row["label"] = int(row["label"])
    return rows


def test_stage_then_convert_awkward_tree_reads_back_with_minddataset(
    s3_server, s3_client, tmp_path
):
    from irv2_core.data.stage import stage

    files = awkward_tree()
    upload_tree(s3_client, "convert-e2e", "set/", files)
    # the manifest's own name: a key stage must refuse that a real server stores (SeaweedFS
    # refuses '..' keys itself; those are covered on moto in test_stage)
    s3_client.put_object(Bucket="convert-e2e", Key="set/manifest.json", Body=b"x")
    s3_client.put_object(Bucket="convert-e2e", Key="set/dog/", Body=b"")
    staged = stage("s3://convert-e2e/set", tmp_path / "staged", endpoint_url=s3_server)
    assert [r.key for r in staged.rejected] == ["set/manifest.json"]
    out = tmp_path / "mr"

    record = convert(tmp_path / "staged", out, shards=2, val_fraction=0.34, seed=3)

    assert read_json(out / "classes.json") == {"cat": 0, "dog": 1, "fish": 2}
    assert record.input_fingerprint == staged.fingerprint
    assert record.input_fingerprint_source == "manifest"
    assert {s.path: s.reason for s in record.skipped}.keys() == BROKEN.keys()
    for item in record.skipped:
        assert BROKEN[item.path] in item.reason.lower()
    valid = [r for r in files if r not in BROKEN and r not in IGNORED]
    sizes = record.mindrecord.sizes["train"]
    assert sizes.page_size <= 1 << 22 and sizes.header_size <= 1 << 20
    assert sum((out / n).stat().st_size for n in record.files) < 32 << 20  # not sparse-huge

    seen = {}
    for split in ("train", "val"):
        rows = _read(out, split, decode=True)
        assert len(rows) == record.totals[split]
        per_class = {c: 0 for c in ("cat", "dog", "fish")}
        for row in rows:
            cls = row["file_name"].split("/")[0]
            assert row["label"] == {"cat": 0, "dog": 1, "fish": 2}[cls]
            assert row["image"].dtype == np.uint8 and row["image"].shape[2] == 3
            per_class[cls] += 1
            seen[row["file_name"]] = row["image"]
        assert per_class == record.counts[split]
    assert sorted(seen) == sorted(valid)  # every valid file once, across train and val
    assert seen["cat/exif rotated.jpg"].shape[:2] == (SIZE[0], SIZE[1])  # rotated upright
    assert seen["cat/one_px.png"].shape[:2] == (1, 1)
    assert abs(float(seen["dog/sixteen.png"].mean()) - 128) < 4  # 16-bit scaled, not clipped
    rgba = seen["dog/rgba.png"].astype(int)
    assert rgba[:, -5:].min() > 240 and rgba[:, :5, 1].mean() > 150  # transparent -> white
    raw = {
        r["file_name"]: r["image"].tobytes() for s in ("train", "val") for r in _read(out, s, False)
    }
    assert raw["cat/good_0.jpg"] == files["cat/good_0.jpg"]  # good JPEG stored byte-for-byte
    assert raw["dog/ünïcode name.jpg"] == files["dog/ünïcode name.jpg"]
    assert record.stored["as-is"] == 7

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    again = convert(tmp_path / "staged", out, shards=2, val_fraction=0.34, seed=3)
    assert again == record and {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == mtimes


def test_convert_layouts_split_and_val_subset(tmp_path, capsys):
    flat = write_image_tree(tmp_path / "flat", classes=3, per_class=10)
    a = convert(flat, tmp_path / "a", val_fraction=0.2, seed=1)
    assert a.layout == "class-folders" and a.input_fingerprint_source == "content"
    assert a.counts["val"] == {"class_0": 2, "class_1": 2, "class_2": 2}
    val_a = {r["file_name"] for r in _read(tmp_path / "a", "val", False)}
    b = convert(flat, tmp_path / "b", val_fraction=0.2, seed=1)
    assert {r["file_name"] for r in _read(tmp_path / "b", "val", False)} == val_a  # same seed
    c = convert(flat, tmp_path / "c", val_fraction=0.2, seed=2)
    assert {r["file_name"] for r in _read(tmp_path / "c", "val", False)} != val_a
    assert a.fingerprint == b.fingerprint != c.fingerprint

    inet = tmp_path / "inet"
    write_image_tree(inet, classes=3, per_class=4, split="train")
    write_image_tree(inet, classes=2, per_class=2, split="val", seed=5)
    rec = convert(inet, tmp_path / "d")
    assert rec.layout == "train/val"
    assert rec.totals == {"train": 12, "val": 4}
    assert rec.counts["val"] == {"class_0": 2, "class_1": 2, "class_2": 0}
    (inet / "val" / "zebra").mkdir()
    write_image_tree(inet / "val" / "zebra", classes=1, per_class=1)
    capsys.readouterr()
    assert main(["convert", str(inet), str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "val classes missing from train: zebra" in err
    assert not (tmp_path / "e").exists()


def test_failed_convert_keeps_the_old_output_and_leaves_no_temp(tmp_path):
    data = write_tree(tmp_path / "data", awkward_tree())
    out = tmp_path / "out"
    first = convert(data, out, val_fraction=0.34)
    for rel in awkward_tree():
        (data / rel).write_bytes(b"<html>gone</html>")  # every candidate image now broken
    with pytest.raises(Irv2Error, match="no usable image"):
        convert(data, out, val_fraction=0.34)
    assert read_json(out / "conversion.json") == first.file_content()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "data", "out"]
    from irv2_core.runtime.dirlock import folder_lock

    with folder_lock(tmp_path / "other", "convert"), pytest.raises(Irv2Error, match="another"):
        convert(data, tmp_path / "other")  # a second writer of the same folder stops at once
    with pytest.raises(Irv2Error, match="val-fraction"):
        convert(data, out, val_fraction=1.5)


def test_a_file_over_the_size_limit_is_skipped_and_reported(tmp_path, monkeypatch):
    """A file over MAX_IMAGE_BYTES (a tiny one here) is listed with its reason and left out of
    the MindRecord; the other images convert."""
    from PIL import Image

    from irv2_core.data import images

    flat = write_image_tree(tmp_path / "flat", classes=2, per_class=5)
    noise = np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    Image.fromarray(noise).save(flat / "class_0" / "huge.png")
    limit = 40_000
    assert (flat / "class_0" / "huge.png").stat().st_size > limit
    assert max(p.stat().st_size for p in flat.rglob("*.jpg")) < limit
    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", limit)
    rec = convert(flat, tmp_path / "out")
    skipped = {s["path"]: s["reason"] for s in rec.model_dump()["skipped"]}
    assert list(skipped) == ["class_0/huge.png"]
    assert f"over the {limit} byte limit" in skipped["class_0/huge.png"]
    assert sum(rec.totals.values()) == 10
    stored = {r["file_name"] for s in ("train", "val") for r in _read(tmp_path / "out", s, False)}
    assert len(stored) == 10 and not any("huge" in name for name in stored)

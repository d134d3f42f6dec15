"""The demo's image set: class folders of real, decodable, deterministic RGB JPEG digits."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from irv2_core.data.digits import DIGIT_CLASSES, make_digits_dataset
from irv2_core.errors import Irv2Error


def _tree_bytes(root):
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_every_digit_is_written_as_class_folders_of_rgb_jpegs(tmp_path):
    info = make_digits_dataset(tmp_path / "digits", per_class=4, image_size=80)
    root = tmp_path / "digits"
    assert sorted(p.name for p in root.iterdir()) == DIGIT_CLASSES
    assert info["counts"] == dict.fromkeys(DIGIT_CLASSES, 4)
    assert info["total"] == 40 and info["written"] == 40
    for folder in root.iterdir():
        files = sorted(folder.iterdir())
        assert len(files) == 4
        for path in files:
            with Image.open(path) as img:
                assert (img.format, img.mode, img.size) == ("JPEG", "RGB", (80, 80))
    # the same bytes must go through the decoder the training pipeline uses
    from mindspore.dataset import vision

    decoded = vision.Decode()(np.fromfile(files[0], dtype=np.uint8))
    assert decoded.shape == (80, 80, 3)
    assert not list(tmp_path.glob(".digits*")), "no temporary folder may be left behind"


def test_full_set_keeps_all_1797_digits_with_their_labels(tmp_path):
    from sklearn.datasets import load_digits

    info = make_digits_dataset(tmp_path / "digits", image_size=75)
    expected = np.bincount(load_digits().target, minlength=10)
    assert info["total"] == 1797
    assert [info["counts"][c] for c in DIGIT_CLASSES] == expected.tolist()
    on_disk = [len(list((tmp_path / "digits" / c).glob("*.jpg"))) for c in DIGIT_CLASSES]
    assert on_disk == expected.tolist()


def test_rendered_image_still_shows_its_source_digit(tmp_path):
    from sklearn.datasets import load_digits

    make_digits_dataset(tmp_path / "digits", per_class=3, image_size=80)
    source = load_digits().images
    for path in sorted((tmp_path / "digits").rglob("*.jpg")):
        index = int(path.stem.split("_")[1])
        with Image.open(path) as img:
            grey = 255.0 - np.asarray(img.convert("L"), dtype=np.float32)
        # undo the margin (digit = central 80 %, shifted by a few px) by cropping 8 px a side
        small = np.asarray(Image.fromarray(grey[8:72, 8:72]).resize((8, 8), Image.BOX))
        corr = np.corrcoef(small.ravel(), source[index].ravel())[0, 1]
        assert corr > 0.7, f"{path} does not look like digit #{index} (correlation {corr:.2f})"


def test_same_arguments_rewrite_nothing_and_reproduce_the_same_bytes(tmp_path):
    first = make_digits_dataset(tmp_path / "a", per_class=3, seed=5)
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.jpg")}
    again = make_digits_dataset(tmp_path / "a", per_class=3, seed=5)
    assert first["written"] == 30 and again["written"] == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.jpg")} == mtimes
    make_digits_dataset(tmp_path / "b", per_class=3, seed=5)
    assert _tree_bytes(tmp_path / "a") == _tree_bytes(tmp_path / "b")
    make_digits_dataset(tmp_path / "c", per_class=3, seed=6)
    assert _tree_bytes(tmp_path / "a") != _tree_bytes(tmp_path / "c")


def test_new_arguments_replace_an_earlier_digits_tree_completely(tmp_path):
    make_digits_dataset(tmp_path / "digits", per_class=5)
    info = make_digits_dataset(tmp_path / "digits", per_class=2)
    assert info["written"] == 20
    assert len(list((tmp_path / "digits").rglob("*.jpg"))) == 20
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits"]


def test_a_folder_holding_other_files_is_refused_and_left_untouched(tmp_path):
    dest = tmp_path / "mine"
    (dest / "3").mkdir(parents=True)
    (dest / "3" / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(Irv2Error, match="not a digits image set"):
        make_digits_dataset(dest, per_class=1)
    assert (dest / "3" / "holiday.jpg").read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"per_class": 0}, "per_class must be"), ({"image_size": 8}, "image_size must be")],
)
def test_bad_arguments_are_rejected_before_writing(tmp_path, kwargs, message):
    with pytest.raises(Irv2Error, match=message):
        make_digits_dataset(tmp_path / "digits", **kwargs)
    assert not (tmp_path / "digits").exists()


def test_the_demo_trains_with_the_cpu_preset_within_the_image_budget():
    from flows.demo import DEMO_PER_CLASS, DEMO_PRESET
    from irv2_core.config import load_config

    cfg = load_config(DEMO_PRESET)
    assert DEMO_PRESET == "cpu" and cfg.max_steps_per_epoch is None
    train_images = len(DIGIT_CLASSES) * (DEMO_PER_CLASS - DEMO_PER_CLASS // 5)  # 20 % val split
    seen = (train_images // cfg.batch_size) * cfg.batch_size * cfg.epoch_size
    assert 2500 <= seen <= 3500, f"{seen} training images do not fit the demo's ~4 min budget"


def test_the_demo_summary_is_a_table_with_verified_exports():
    from flows.demo import format_summary

    summary = {
        "timings": {
            "stage": {"seconds": 0.41, "state": "Completed"},
            "train": {"seconds": 190.0, "state": "Cached"},
            "export-ONNX": {"seconds": 9.5, "state": "Completed"},
        },
        "top1": 0.9221,
        "top5": 0.9972,
        "exports": ["/w/exports/irv2.onnx"],
        "export_checks": [
            {
                "format": "ONNX",
                "path": "/w/exports/irv2.onnx",
                "verified_with": "onnxruntime 1.32.0",
                "max_abs_diff": 2.6e-06,
            }
        ],
        "report": "/w/runs/r/report/report.md",
        "run_dir": "/w/runs/r",
    }
    lines = format_summary(summary).splitlines()
    assert lines[0].split("|") == ["stage       ", " state     ", " seconds"]
    assert "train       | Cached    |   190.0" in lines
    assert "total       |           |   199.9" in lines
    assert "top-1 92.21 %   top-5 99.72 %" in lines
    assert "  ONNX   /w/exports/irv2.onnx  (onnxruntime 1.32.0, max |diff| 2.6e-06)" in lines

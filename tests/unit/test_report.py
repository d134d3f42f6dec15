"""The run report: tables, plots and the zoo comparison built from a run folder's files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from irv2_core.cli import main
from irv2_core.errors import Irv2Error
from irv2_core.report import PIPELINE_FILE, build_report, load_metrics


def _run_folder(root: Path) -> Path:
    run = root / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"batch_size": 8, "image_size": 75}))
    rows = [
        {"kind": "train", "step": 1, "epoch": 1, "loss": 2.5, "lr": 0.01, "img_per_s": 10.0},
        {"kind": "train", "step": 2, "epoch": 1, "loss": 9.9, "lr": 0.02, "img_per_s": 11.0},
        {"kind": "eval", "step": 2, "epoch": 1, "top1": 0.25, "top5": 0.75, "loss": 2.0},
        # resumed after a kill: step 2 logged again, then training continued
        {"kind": "train", "step": 2, "epoch": 1, "loss": 2.1, "lr": 0.02, "img_per_s": 12.0},
        {"kind": "train", "step": 3, "epoch": 2, "loss": 1.7, "lr": 0.015, "img_per_s": 12.5},
        {"kind": "eval", "step": 3, "epoch": 2, "top1": 0.5, "top5": 1.0, "loss": 1.5},
    ]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = {"global_step": 3, "total_steps": 3, "wall_s": 4.2, "img_per_s": 12.1}
    (run / "train_summary.json").write_text(json.dumps(summary))
    return run


def test_report_tables_plots_and_zoo_comparison(tmp_path):
    run = _run_folder(tmp_path)
    model = tmp_path / "irv2.onnx"
    model.write_bytes(b"onnx-bytes" * 100)
    extra = {
        "evaluation": {"top1": 0.5, "top5": 1.0, "count": 9, "image_size": 75, "protocol": "zoo"},
        "exports": [{"format": "ONNX", "path": str(model), "bytes": 1, "sha256": None}],
        "data_fingerprint": "fp-123",
        "timings": {"train": {"seconds": 12.5, "state": "Completed"}, "stage": 0.25},
    }
    result = build_report(run, extra=extra)

    metrics = pd.read_csv(run / "report" / "final_metrics.csv").set_index("metric")
    assert metrics.loc["top1 (%)", "this run"] == 50.0
    assert metrics.loc["top1 (%)", "zoo reference"] == 79.96
    assert metrics.loc["top5 (%)", "zoo reference"] == 94.40
    assert metrics.loc["top1 (%)", "difference"] == pytest.approx(50.0 - 79.96)

    exports = pd.read_csv(run / "report" / "exports.csv")
    # the file on disk wins over the record's stale size; its digest is computed when missing
    assert exports.loc[0, "bytes"] == 1000
    assert exports.loc[0, "sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()

    steps = pd.read_csv(run / "report" / "steps.csv")
    assert steps["step"].tolist() == [1, 2, 3]  # the step logged twice keeps its resumed value
    assert steps.loc[1, "loss"] == 2.1
    timings = pd.read_csv(run / "report" / "timings.csv").set_index("stage")
    assert timings.loc["train", "state"] == "Completed" and timings.loc["stage", "seconds"] == 0.25

    md = Path(result.markdown).read_text()
    assert "79.96" in md and "fp-123" in md and "image_size" in md
    # a digits run beside an ImageNet number must say what each number is
    assert "This run: 9 images, 75 px, zoo protocol" in md and "ImageNet-1k val" in md
    html = Path(result.html).read_text()
    assert "<table" in html and "loss_lr.png" in html and "accuracy.png" in html
    assert sorted(Path(p).name for p in result.plots) == ["accuracy.png", "loss_lr.png"]
    for plot in result.plots:
        assert Path(plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.tables["final_metrics"][0]["this run"] == 50.0


def test_cli_rebuilds_report_from_pipeline_file(tmp_path, capsys):
    run = _run_folder(tmp_path)
    facts = {"evaluation": {"top1": 0.125, "top5": 0.5}, "data_fingerprint": "fp-cli"}
    (run / PIPELINE_FILE).write_text(json.dumps(facts))
    out = tmp_path / "out"

    assert main(["report", str(run), "--out", str(out)]) == 0

    assert str(out / "report.md") in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "12.5" in md and "fp-cli" in md


def test_bad_metrics_line_is_named(tmp_path):
    run = _run_folder(tmp_path)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"kind": "train", "step": 4\n')
    with pytest.raises(Irv2Error, match=r"metrics.jsonl, line 7: not valid JSON"):
        load_metrics(run)


def test_missing_run_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err

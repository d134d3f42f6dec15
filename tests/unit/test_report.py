"""The run report: tables, plots and comparisons built from a run folder's files and an
evaluation record (confusion matrix, misclassified samples), and the artifact's embedded plots."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from PIL import Image

from irv2_core.cli import main
from irv2_core.errors import Irv2Error
from irv2_core.records import EvalRecord, ReportRecord
from irv2_core.report import (
    PIPELINE_FILE,
    artifact_markdown,
    build_report,
    confused_pairs,
    load_metrics,
    per_class_table,
)

PNG = b"\x89PNG\r\n\x1a\n"
# rows = true class, columns = predicted: 16 images, 12 right
CONFUSION = [[5, 1, 0], [2, 3, 1], [0, 0, 4]]
CLASSES = ["cat", "dog", "fox"]


def _run_folder(root: Path, image_size: int = 75, evals: int = 2) -> Path:
    run = root / "run"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"batch_size": 8, "image_size": image_size}))
    rows = [
        {"kind": "train", "step": 1, "epoch": 1, "loss": 2.5, "lr": 0.01, "img_per_s": 10.0},
        {"kind": "train", "step": 2, "epoch": 1, "loss": 9.9, "lr": 0.02, "img_per_s": 11.0},
        {"kind": "eval", "step": 2, "epoch": 1, "top1": 0.25, "top5": 0.75, "loss": 2.0},
        # resumed after a kill: step 2 logged again, then training continued
        {"kind": "train", "step": 2, "epoch": 1, "loss": 2.1, "lr": 0.02, "img_per_s": 12.0},
        {"kind": "train", "step": 3, "epoch": 2, "loss": 1.7, "lr": 0.015, "img_per_s": 12.5},
        {"kind": "eval", "step": 3, "epoch": 2, "top1": 0.5, "top5": 1.0, "loss": 1.5},
    ]
    if evals == 1:
        rows = [r for r in rows if not (r["kind"] == "eval" and r["step"] == 2)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = {"global_step": 3, "total_steps": 3, "wall_s": 4.2, "img_per_s": 12.1}
    (run / "train_summary.json").write_text(json.dumps(summary))
    return run


def _thumbnail(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), color).save(buf, format="JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _eval_record(confusion=CONFUSION, checkpoint="/runs/new/final.ckpt", **fields) -> EvalRecord:
    """An eval.json as `evaluate` writes it, its numbers taken from *confusion*."""
    total = sum(map(sum, confusion))
    hits = sum(confusion[i][i] for i in range(len(confusion)))
    record = {
        "top1": hits / total,
        "top5": 1.0,
        "loss": 0.75,
        "count": total,
        "protocol": "zoo",
        "checkpoint": checkpoint,
        "image_size": 75,
        "classes": CLASSES,
        "confusion": confusion,
        "misclassified": [
            {"index": 7, "file_name": "dog/img_001.jpg", "label": 1, "pred": 0}
            | {"confidence": 0.9, "thumbnail": _thumbnail((200, 30, 30))},
            {"index": 3, "file_name": "cat/img_004.jpg", "label": 0, "pred": 1}
            | {"confidence": 0.6, "thumbnail": _thumbnail((30, 30, 200))},
        ],
    }
    return EvalRecord.model_validate(record | fields)


def test_report_tables_plots_and_files(tmp_path):
    run = _run_folder(tmp_path)
    model = tmp_path / "irv2.onnx"
    model.write_bytes(b"onnx-bytes" * 100)
    extra = {
        "evaluation": _eval_record().to_json(),
        "exports": [{"format": "ONNX", "path": str(model), "bytes": 1, "sha256": None}],
        "data_fingerprint": "fp-123",
        "timings": {"train": {"seconds": 12.5, "state": "Completed"}, "stage": 0.25},
    }
    result = build_report(run, extra=extra)

    metrics = pd.read_csv(run / "report" / "final_metrics.csv").set_index("metric")
    assert metrics.loc["top1 (%)", "this run"] == 75.0
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
    assert "fp-123" in md and "image_size" in md
    assert "This run: 16 images, 3 classes, 75 px, zoo protocol" in md
    # report.md on disk links its plots by name, beside it
    names = ["accuracy.png", "confusion.png", "misclassified.png", "loss_lr.png"]
    assert [Path(p).name for p in result.plots] == names
    for name in names:
        assert f"]({name})" in md
        assert (run / "report" / name).read_bytes()[:8] == PNG
    # the misclassified strip's table names the files and classes
    assert "| dog/img_001.jpg | dog | cat | 90.0 |" in md
    pairs = pd.read_csv(run / "report" / "confused_pairs.csv")
    assert pairs.iloc[0].tolist() == ["dog", "cat", 2, pytest.approx(33.33)]
    assert result.tables["final_metrics"][0]["this run"] == 75.0


def test_artifact_markdown_embeds_decodable_pngs_and_html_is_self_contained(tmp_path):
    run = _run_folder(tmp_path)
    result = build_report(run, extra={"evaluation": _eval_record().to_json()})

    text = artifact_markdown(result)
    embedded = re.findall(r"!\[([^\]]*)\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert sorted(alt for alt, _ in embedded) == [
        "accuracy",
        "confusion",
        "loss_lr",
        "misclassified",
    ]
    for _, payload in embedded:
        data = base64.b64decode(payload, validate=True)
        assert data[:8] == PNG
        with Image.open(io.BytesIO(data)) as img:
            assert img.width > 100 and img.height > 100
    assert not re.search(r"\]\([^)]*\.png\)", text)  # no link left for the UI to resolve
    assert len(text) < 600_000  # modest dpi: the artifact stays small
    page = Path(result.html).read_text()
    assert page.count("<img src='data:image/png;base64,") == 4 and ".png'" not in page
    assert "<table" in page


def test_a_single_evaluation_still_draws_the_accuracy_plot(tmp_path):
    run = _run_folder(tmp_path, evals=1)
    result = build_report(run)
    assert [Path(p).name for p in result.plots] == ["accuracy.png", "loss_lr.png"]
    _, evals = load_metrics(run)
    assert evals["epoch"].tolist() == [2]


def test_timings_follow_the_pipeline_not_the_alphabet(tmp_path):
    run = _run_folder(tmp_path)
    timings = {
        name: {"seconds": 1.0, "state": "Completed"}
        for name in ("report", "export-ONNX", "evaluate", "convert", "stage", "train")
    }
    timings["export-MINDIR"] = 2.0
    result = build_report(run, extra={"timings": timings})
    order = [row["stage"] for row in result.tables["timings"]]
    expected = ["stage", "convert", "train", "evaluate", "export-ONNX", "export-MINDIR", "report"]
    assert order == expected
    assert pd.read_csv(run / "report" / "timings.csv")["stage"].tolist() == expected
    md = Path(result.markdown).read_text()
    assert [md.index(f"| {s} |") for s in expected] == sorted(
        md.index(f"| {s} |") for s in expected
    )


def test_zoo_reference_only_for_imagenet_1k_at_299(tmp_path):
    # a 3-class 75 px run: no zoo number, and a sentence saying why
    small = _run_folder(tmp_path / "small")
    result = build_report(small, extra={"evaluation": _eval_record().to_json()})
    md = Path(result.markdown).read_text()
    assert "79.96" not in md and "94.4" not in md and "difference" not in md
    assert "No external reference applies" in md
    assert list(pd.read_csv(small / "report" / "final_metrics.csv").columns) == [
        "metric",
        "this run",
    ]

    # 1000 classes (the run folder's classes.json) at 299 px: the reference and its difference
    big = _run_folder(tmp_path / "big", image_size=299)
    (big / "classes.json").write_text(json.dumps({f"n{i:08d}": i for i in range(1000)}))
    evaluation = {"top1": 0.8, "top5": 0.95, "count": 50000, "image_size": 299}
    result = build_report(big, extra={"evaluation": evaluation})
    metrics = pd.read_csv(big / "report" / "final_metrics.csv").set_index("metric")
    assert metrics.loc["top1 (%)", "zoo reference"] == 79.96
    assert metrics.loc["top5 (%)", "zoo reference"] == 94.40
    assert metrics.loc["top1 (%)", "difference"] == pytest.approx(80.0 - 79.96)
    md = Path(result.markdown).read_text()
    assert "No external reference applies" not in md and "ImageNet-1k val" in md
    assert "dashed line in the accuracy plot" in md

    # 1000 classes at another size is not the zoo's measurement either
    other = _run_folder(tmp_path / "other", image_size=224)
    (other / "classes.json").write_text((big / "classes.json").read_text())
    result = build_report(other, extra={"evaluation": evaluation | {"image_size": 224}})
    assert "No external reference applies" in Path(result.markdown).read_text()


def test_per_class_precision_recall_and_confused_pairs_from_a_known_matrix():
    table = per_class_table(CONFUSION, CLASSES).set_index("class")
    assert table.loc["cat", "precision (%)"] == pytest.approx(100 * 5 / 7, abs=0.01)
    assert table.loc["cat", "recall (%)"] == pytest.approx(100 * 5 / 6, abs=0.01)
    assert table.loc["dog", "precision (%)"] == 75.0 and table.loc["dog", "recall (%)"] == 50.0
    assert table.loc["fox", "precision (%)"] == 80.0 and table.loc["fox", "recall (%)"] == 100.0
    assert table.loc["dog", "F1 (%)"] == pytest.approx(60.0)
    assert table["images"].tolist() == [6, 6, 4]
    assert table.loc["dog", "most often taken for"] == "cat (2)"
    assert table.loc["fox", "most often taken for"] == ""
    # a class never predicted has no precision (undefined), not 0
    never = per_class_table([[2, 0], [1, 0]], ["a", "b"]).set_index("class")
    assert pd.isna(never.loc["b", "precision (%)"]) and never.loc["b", "recall (%)"] == 0.0

    pairs = confused_pairs(CONFUSION, CLASSES)
    assert pairs[["true class", "predicted as", "images"]].values.tolist() == [
        ["dog", "cat", 2],
        ["cat", "dog", 1],
        ["dog", "fox", 1],
    ]
    assert confused_pairs([[3, 0], [0, 2]], ["a", "b"]).empty  # nothing confused


def test_comparison_with_the_previous_accepted_model(tmp_path):
    run = _run_folder(tmp_path)
    now = _eval_record()  # top-1 12/16
    before = _eval_record(
        confusion=[[6, 0, 0], [4, 2, 0], [1, 0, 3]],  # top-1 11/16
        checkpoint="/runs/old/final.ckpt",
        top5=0.9375,
        loss=1.0,
    )
    (run / "eval.json").write_text(json.dumps(now.file_content()))  # as the flow leaves it
    result = build_report(run, baseline=before, baseline_label="run-41")

    deltas = {row["metric"]: row for row in result.tables["comparison"]}
    assert deltas["top1 (%)"]["this run"] == 75.0 and deltas["top1 (%)"]["baseline"] == 68.75
    assert deltas["top1 (%)"]["Δ"] == pytest.approx(6.25)
    assert deltas["top5 (%)"]["Δ"] == pytest.approx(100.0 - 93.75)
    assert deltas["loss"]["Δ"] == pytest.approx(-0.25)
    changes = {row["class"]: row for row in result.tables["per_class_changes"]}
    assert changes["cat"]["Δ recall"] == pytest.approx(100 * 5 / 6 - 100.0, abs=0.01)
    assert changes["dog"]["Δ recall"] == pytest.approx(50.0 - 100 * 2 / 6, abs=0.01)
    assert changes["fox"]["Δ recall"] == pytest.approx(100.0 - 75.0)
    assert changes["fox"]["Δ precision"] == pytest.approx(80.0 - 100.0)
    md = Path(result.markdown).read_text()
    assert "Against the previous accepted model: run-41." in md
    assert "recall rose for 2, fell for 1, stayed for 0 of 3 classes" in md

    # the baseline may also come with the pipeline facts (as the flow writes them)
    facts = {"baseline": before.to_json(), "baseline_label": "run-41"}
    again = build_report(run, extra=facts)
    assert again.tables["comparison"] == result.tables["comparison"]

    # different classes: deltas still, per-class changes not
    other = before.model_copy(update={"classes": ["a", "b", "c"]})
    result = build_report(run, baseline=other)
    assert result.tables["per_class_changes"] == []
    assert "different classes" in Path(result.markdown).read_text()


def test_no_baseline_and_an_older_eval_json_still_report(tmp_path):
    run = _run_folder(tmp_path)
    old = {
        k: v for k, v in _eval_record().file_content().items() if k in EvalRecord.__annotations__
    }
    for key in ("classes", "confusion", "misclassified"):
        old.pop(key)
    (run / "eval.json").write_text(json.dumps(old))
    result = build_report(run)
    md = Path(result.markdown).read_text()
    assert "No previous accepted model" in md
    assert "holds no confusion matrix" in md
    assert [Path(p).name for p in result.plots] == ["accuracy.png", "loss_lr.png"]
    assert isinstance(ReportRecord.model_validate(result.to_json()), ReportRecord)
    with pytest.raises(Irv2Error, match="baseline evaluation do not read"):
        build_report(run, baseline={"top1": 0.5})


def test_cli_rebuilds_report_from_pipeline_file(tmp_path, capsys):
    run = _run_folder(tmp_path)
    facts = {"evaluation": {"top1": 0.125, "top5": 0.5}, "data_fingerprint": "fp-cli"}
    (run / PIPELINE_FILE).write_text(json.dumps(facts))
    out = tmp_path / "out"

    assert main(["report", str(run), "--out", str(out)]) == 0

    assert str(out / "report.md") in capsys.readouterr().out
    md = (out / "report.md").read_text()
    assert "12.5" in md and "fp-cli" in md


def test_cli_compares_with_a_baseline_eval_json(tmp_path, capsys):
    run = _run_folder(tmp_path)
    (run / "eval.json").write_text(json.dumps(_eval_record().file_content()))
    old = tmp_path / "old-eval.json"
    old.write_text(json.dumps(_eval_record(confusion=[[6, 0, 0], [4, 2, 0], [1, 0, 3]]).to_json()))

    assert main(["report", str(run), "--baseline", str(old), "--baseline-label", "run-41"]) == 0

    comparison = pd.read_csv(run / "report" / "comparison.csv").set_index("metric")
    assert comparison.loc["top1 (%)", "Δ"] == pytest.approx(6.25)
    assert (
        "Against the previous accepted model: run-41." in (run / "report" / "report.md").read_text()
    )
    assert main(["report", str(run), "--baseline", str(tmp_path / "nope.json")]) == 2
    assert "--baseline" in capsys.readouterr().err


def test_bad_metrics_line_is_named(tmp_path):
    run = _run_folder(tmp_path)
    with (run / "metrics.jsonl").open("a") as fh:
        fh.write('{"kind": "train", "step": 4\n')
    with pytest.raises(Irv2Error, match=r"metrics.jsonl, line 7: not valid JSON"):
        load_metrics(run)


def test_missing_run_folder_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().err

"""The typed stage records: their files keep the old keys, partial facts still read, the doc's
tables are generated from them, and they import nothing but pydantic and the standard library."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import irv2_core.records as records
from irv2_core.records import (
    RECORDS,
    ConversionRecord,
    EvalRecord,
    PipelineFacts,
    ReportRecord,
    StageRecord,
    TrainSummary,
    schema_digest,
)
from tasks.common import for_record

REPO = Path(__file__).resolve().parents[2]

TRAIN_SUMMARY_FILE = {
    "final_checkpoint": "/runs/run-1/final.ckpt",
    "final_sha256": "9f" * 32,
    "global_step": 4,
    "total_steps": 4,
    "epochs": 2,
    "steps_per_epoch": 2,
    "wall_s": 12.5,
    "img_per_s": 3.25,
    "last_loss": 1.5,
    "rank_size": 1,
    "resumed_from_step": 0,
    "eval": {"top1": 0.5, "top5": 1.0, "loss": 1.25, "count": 9},
    "stack": {"mindspore": "2.10.0", "device_target": "CPU", "cann": None, "image": None},
}


def test_contract_tables_in_docs_are_current():
    check = [sys.executable, str(REPO / "scripts" / "contracts.py"), "--check"]
    done = subprocess.run(check, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    doc = (REPO / "docs" / "contracts.md").read_text(encoding="utf-8")
    from irv2_core.contracts import TABLED

    for model in TABLED:  # every field of every record is in its table
        table = doc.split(f"### `{model.__name__}`", 1)[1].split("### ", 1)[0]
        for name, info in model.model_fields.items():
            assert info.exclude or f"| `{name}` |" in table, (model.__name__, name)


def test_records_import_only_pydantic_and_the_standard_library():
    tree = ast.parse(Path(records.__file__).read_text(encoding="utf-8"))
    imported = {
        (node.module if isinstance(node, ast.ImportFrom) else alias.name).split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "pydantic", *sys.stdlib_module_names}, imported


def test_train_summary_file_round_trips_without_the_in_memory_fields():
    summary = TrainSummary.model_validate(TRAIN_SUMMARY_FILE)
    assert summary.eval is not None and summary.eval.count == 9 and not summary.stopped
    moved = summary.model_copy(update={"run_dir": "/runs/run-1"})
    assert moved.file_content() == TRAIN_SUMMARY_FILE  # same keys and values as on disk
    assert moved.to_json()["run_dir"] == "/runs/run-1"  # the task result carries it
    assert TrainSummary.model_validate(moved.to_json()) == moved


def test_conversion_file_leaves_out_the_folder_and_reads_back():
    record = ConversionRecord(
        fingerprint="f",
        input_fingerprint="i",
        input_fingerprint_source="content",
        converter_version=1,
        data_dir="/data",
        options={"shards": 1, "val_fraction": 0.2, "seed": 0, "full_decode": False},
        layout="class-folders",
        num_classes=2,
        counts={"train": {"a": 3, "b": 3}, "val": {"a": 1, "b": 1}},
        totals={"train": 6, "val": 2},
        skipped=[{"path": "a/bad.jpg", "reason": "truncated"}],
        stored={"as-is": 8},
        ignored_files=0,
        mindrecord={"shards": 1, "sizes": {"train": {"header_size": 1, "page_size": 2}}},
        files={"classes.json": 20},
        wall_s=0.5,
        img_per_s=16.0,
        out_dir="/mr",
    )
    on_disk = record.file_content()
    assert "out_dir" not in on_disk and on_disk["skipped"] == [
        {"path": "a/bad.jpg", "reason": "truncated"}
    ]
    assert ConversionRecord.model_validate({**on_disk, "future_key": 1}).out_dir is None
    with pytest.raises(ValidationError):  # an incomplete conversion.json is not reused
        ConversionRecord.model_validate({k: v for k, v in on_disk.items() if k != "files"})


def test_records_require_what_their_stage_always_writes():
    with pytest.raises(ValidationError, match="checkpoint"):
        EvalRecord.model_validate({"top1": 0.5, "top5": 1.0, "loss": 1.0, "count": 2})
    with pytest.raises(ValidationError, match="rejected"):  # an old stage task result (a count)
        StageRecord.model_validate(
            {"dest": "/d", "fingerprint": "f", "objects": 1, "downloaded": 1, "unchanged": 0}
            | {"removed": 0, "rejected": 0, "bytes": 1}
        )


def test_pipeline_facts_accept_older_and_hand_written_files():
    facts = PipelineFacts.model_validate(
        {
            "evaluation": {"top1": 0.125, "top5": 0.5},
            "exports": [{"format": "ONNX", "path": "/x.onnx", "bytes": 1, "sha256": None}],
            "timings": {"train": {"seconds": 12.5, "state": "Completed"}, "stage": 0.25},
        }
    )
    assert facts.evaluation.top1 == 0.125 and facts.evaluation.count is None
    assert facts.exports[0].path == "/x.onnx" and facts.exports[0].verified_with is None
    assert facts.timings["stage"].seconds == 0.25 and facts.timings["stage"].state == ""
    assert facts.data_fingerprint is None
    with pytest.raises(ValidationError, match="path"):  # an export without its file is no export
        PipelineFacts.model_validate({"exports": [{"format": "ONNX"}]})


def test_report_tables_stay_out_of_the_dumped_record():
    report = ReportRecord(markdown="r.md", html="r.html", csv=[], plots=[], tables={"t": [{}]})
    assert "tables" not in report.to_json() and report.tables == {"t": [{}]}


def test_cache_keys_are_tagged_with_the_record_shape():
    key = "abc-123"
    tagged = for_record(key, StageRecord)
    assert tagged.startswith(key) and for_record(tagged, StageRecord) == tagged  # idempotent
    assert for_record(tagged, EvalRecord) != tagged
    assert len({schema_digest(m) for m in RECORDS}) == len(RECORDS)

"""Cache stamps and the training cache key: a damaged stamp is never reused as a key, and a run's
key notices its outputs, not the report written into its folder afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from irv2_core.runtime.io import sha256_json
from irv2_core.storage.stamps import local_key as cache_key
from irv2_core.storage.stamps import stamp_path, stamped_key, write_stamp
from tasks.training import _OUTPUTS, run_dir_for, train_task

CONTENT = {"fingerprint": "abc", "shards": 1}


def _stamped_output(tmp_path: Path) -> tuple[Path, Path, str]:
    """An output folder with one file, stamped as a task that completed under its key does."""
    out = tmp_path / "mindrecord"
    out.mkdir()
    part = out / "train.mindrecord0"
    part.write_bytes(b"x" * 100)
    key = cache_key(out, CONTENT)
    write_stamp(out, key, [part])
    assert cache_key(out, CONTENT) == key  # intact: reused
    return out, part, key


def _damaged(good: str, part: Path, key: str) -> dict[str, bytes]:
    """Stamps a full disk, a torn write or a foreign writer can leave, by name."""
    state = json.loads(good)["files"]
    bodies = {
        "garbage bytes": b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + key.encode(),
        "truncated JSON": good[: len(good) // 2].encode(),
        "empty file": b"",
        "a bare string": json.dumps(key),
        "a list": json.dumps([key, state]),
        "null": "null",
        "a numeric key": json.dumps({"key": 5, "files": state}),
        "a list key": json.dumps({"key": [key], "files": state}),
        "another digest's key": json.dumps({"key": "0" * 64 + "-x", "files": state}),
        "files as a list": json.dumps({"key": key, "files": [str(part)]}),
        "files as a string": json.dumps({"key": key, "files": str(part)}),
        "no files": json.dumps({"key": key, "files": {}}),
        "a number for a state": json.dumps({"key": key, "files": {str(part): 100}}),
        "three numbers for a state": json.dumps({"key": key, "files": {str(part): [1, 2, 3]}}),
        "a string for a state": json.dumps({"key": key, "files": {str(part): "ab"}}),
    }
    return {name: b if isinstance(b, bytes) else b.encode() for name, b in bodies.items()}


def test_a_damaged_stamp_is_never_reused_as_a_cache_key(tmp_path):
    """Whatever the stamp holds, if it is not a well-formed record of this digest and these
    files, the key is a fresh one (recompute), never the stamp's and never an error; a stamp
    written again afterwards is honoured again."""
    out, part, key = _stamped_output(tmp_path)
    good, digest = stamp_path(out).read_text(), sha256_json(CONTENT)
    for name, body in _damaged(good, part, key).items():
        stamp_path(out).write_bytes(body)
        assert stamped_key(out, digest) is None, name
        first, second = cache_key(out, CONTENT), cache_key(out, CONTENT)
        assert isinstance(first, str) and first.startswith(digest + "-"), name
        assert len({first, second, key}) == 3, name  # fresh each time: nothing reused
    write_stamp(out, key, [part])
    assert cache_key(out, CONTENT) == key


# what a training run leaves in its folder that a later stage reads
TRAINED = ("final.ckpt", "train_summary.json", "config.yaml")


def _train_params(tmp_path: Path) -> tuple[dict, Path]:
    params = {
        "runs_dir": str(tmp_path / "runs"),
        "mindrecord_fingerprint": "fp",
        "config": {"lr": 1},
    }
    run_dir = run_dir_for(params["runs_dir"], params)
    (run_dir / "checkpoints").mkdir(parents=True)
    for name in TRAINED:
        (run_dir / name).write_text(f"{name} of the run\n")
    return params, run_dir


def _stamp_as_the_train_task_does(run_dir: Path, key: str) -> None:
    write_stamp(run_dir, key, [run_dir / n for n in _OUTPUTS])


def test_the_training_key_ignores_the_report_written_into_the_run(tmp_path):
    """The report task writes ``report/`` into the run folder after training, and again on every
    report rerun: the training stays a cache hit however that folder changes, also when the run
    was stamped again with a report already there (Prefect's record was lost)."""
    params, run_dir = _train_params(tmp_path)
    key = train_task.cache_policy.key(params)
    _stamp_as_the_train_task_does(run_dir, key)
    report = run_dir / "report"
    report.mkdir()
    (report / "report.md").write_text("# first report\n")
    assert train_task.cache_policy.key(params) == key
    _stamp_as_the_train_task_does(run_dir, key)  # a later run found the outputs intact
    (report / "report.md").write_text("# the report, rebuilt with another evaluation\n")
    (report / "per_class.csv").write_text("class,top1\n")
    (report / "plots").mkdir()
    (report / "plots" / "loss.png").write_bytes(b"png")
    assert train_task.cache_policy.key(params) == key


@pytest.mark.parametrize("name", TRAINED)
def test_the_training_key_changes_when_an_output_changes(tmp_path, name):
    params, run_dir = _train_params(tmp_path)
    key = train_task.cache_policy.key(params)
    _stamp_as_the_train_task_does(run_dir, key)
    assert train_task.cache_policy.key(params) == key
    path = run_dir / name
    st = path.stat()
    path.write_text(f"{name} of the run, changed\n")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert train_task.cache_policy.key(params) != key  # another size: retrain, never a stale hit
    path.unlink()
    assert train_task.cache_policy.key(params) != key

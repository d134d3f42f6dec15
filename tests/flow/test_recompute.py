"""What makes the flow train, evaluate and export again: the real cache-key functions of those
tasks, on real (small) output files and stamps.

Unchanged inputs and intact outputs keep the stamped key (Prefect serves the stored result:
Cached); a changed config, a changed source file of the training code, or a changed final.ckpt
give a key no stored result has, so the stage runs again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from irv2_core.config import load_config
from irv2_core.storage.stamps import write_stamp
from tasks.model import evaluate_task, export_task
from tasks.training import _OUTPUTS, run_dir_for, train_task

REPO = Path(__file__).resolve().parents[2]


def _train_params(runs: Path, **overrides) -> dict:
    config = load_config("cpu-smoke", overrides=overrides).to_dict()
    return {"runs_dir": str(runs), "mindrecord_fingerprint": "mr-1", "config": config, "launch": {}}


def _finished_run(params: dict) -> tuple[Path, str]:
    """A run folder with the train task's outputs, stamped as its task would (returns the key)."""
    run_dir = run_dir_for(params["runs_dir"], params)
    run_dir.mkdir(parents=True)
    for name in _OUTPUTS:
        (run_dir / name).write_bytes(b"weights" if name == "final.ckpt" else b"{}")
    key = train_task.cache_policy.key(params)
    write_stamp(run_dir, key, [run_dir / n for n in _OUTPUTS])
    return run_dir, key


def _rewrite(path: Path, data: bytes) -> None:
    """Write *data* and move the mtime on, as a later write on a coarse-clock filesystem would."""
    before = path.stat().st_mtime_ns
    path.write_bytes(data)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def test_unchanged_training_is_cached_a_changed_config_is_not(tmp_path):
    params = _train_params(tmp_path / "runs")
    _, key = _finished_run(params)
    assert train_task.cache_policy.key(params) == key  # same inputs, intact outputs: Cached
    changed = _train_params(tmp_path / "runs", lr_max=0.5)
    assert train_task.cache_policy.key(changed) != key
    assert run_dir_for(changed["runs_dir"], changed) != run_dir_for(params["runs_dir"], params)


def test_a_changed_final_checkpoint_trains_evaluates_and_exports_again(tmp_path):
    params = _train_params(tmp_path / "runs")
    run_dir, key = _finished_run(params)
    ckpt = run_dir / "final.ckpt"
    evaluate = {
        "checkpoint": str(ckpt),
        "mindrecord_fingerprint": "mr-1",
        "config": params["config"],
        "out": str(run_dir / "eval.json"),
    }
    export = {"checkpoint": str(ckpt), "fmt": "ONNX", "options": {}, "out": str(tmp_path / "x")}
    eval_key, export_key = (
        evaluate_task.cache_policy.key(evaluate),
        export_task.cache_policy.key(export),
    )
    (run_dir / "eval.json").write_text("{}")
    write_stamp(run_dir / "eval.json", eval_key, [run_dir / "eval.json"])
    (tmp_path / "x").write_bytes(b"onnx")
    write_stamp(tmp_path / "x", export_key, [tmp_path / "x"])
    assert (evaluate_task.cache_policy.key(evaluate), export_task.cache_policy.key(export)) == (
        eval_key,
        export_key,
    )

    _rewrite(ckpt, b"WEIGHTS")  # same size, other bytes: a corrupted or replaced checkpoint
    assert train_task.cache_policy.key(params) != key
    assert evaluate_task.cache_policy.key(evaluate) != eval_key
    assert export_task.cache_policy.key(export) != export_key


def test_a_changed_training_source_changes_the_training_key(tmp_path):
    """In a copy of the code: editing a training module changes the run folder (the key's
    digest); editing the report module, which does not shape the model, does not."""
    copy = tmp_path / "src"
    for pkg in ("irv2_core", "tasks"):
        shutil.copytree(REPO / pkg, copy / pkg, ignore=shutil.ignore_patterns("__pycache__"))
    params = _train_params(Path("runs"))
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import irv2_core
        from tasks.training import run_dir_for
        root = Path(irv2_core.__file__).parent
        assert root == Path({str(copy / "irv2_core")!r}), root
        params = json.loads(sys.argv[1])
        names = [run_dir_for("runs", params).name]
        for edited in ("training/recipe.py", "report.py"):
            with open(root / edited, "a") as fh:
                fh.write("\\n# edited\\n")
            names.append(run_dir_for("runs", params).name)
        print(json.dumps(names))
    """)
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(params)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    original, after_training_edit, after_report_edit = json.loads(done.stdout.splitlines()[-1])
    assert original == run_dir_for("runs", params).name  # the copy is the same code
    assert after_training_edit != original
    assert after_report_edit == after_training_edit

"""``irv2 demo`` as a user runs it (README, "Two commands on a fresh machine"): a fresh process
with its own Prefect home and no server, the digits image set, the whole flow on Prefect's local
engine, and the closing summary; then the same command again, served from the cache.

Made cheap with the demo's own knobs: ``--per-class 5`` (50 digits) and ``--set`` overrides of
the cpu preset for 2 training steps of 4 images; everything else is the demo's default path.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.flow, pytest.mark.slow]

PER_CLASS = 5
QUICK = dict(
    epoch_size=1,
    max_steps_per_epoch=2,
    batch_size=4,
    eval_batch_size=4,
    save_checkpoint_epochs=1,
    log_every_steps=1,
)
HEAVY = ("stage", "convert", "train", "evaluate", "export-MINDIR", "export-ONNX")
DRIVER = "import sys\nfrom flows.cli import main\nsys.exit(main(sys.argv[1:]))\n"


def _irv2_demo(workdir: Path, prefect_home: Path) -> str:
    """Run ``irv2 demo`` in a fresh process; return its console output (it must succeed)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(prefect_home), PYTHONUNBUFFERED="1")
    sets = [a for k, v in QUICK.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-c", DRIVER, "demo", "--workdir", str(workdir)]
    cmd += ["--per-class", str(PER_CLASS), *sets]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-6000:]
    return out


def _stage_states(out: str) -> dict[str, str]:
    """The summary table's ``stage | state | seconds`` rows (not its header or total)."""
    return dict(re.findall(r"^(\S+)\s+\| (\w[\w ]*?)\s+\|\s+[\d.]+$", out, re.M))


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory):
    """(workdir, first run's console, second run's console)."""
    root = tmp_path_factory.mktemp("demo")
    first = _irv2_demo(root / "irv2-demo", root / "prefect-home")
    second = _irv2_demo(root / "irv2-demo", root / "prefect-home")
    return root / "irv2-demo", first, second


def test_demo_runs_every_stage_and_ends_with_the_promised_summary(demo_runs):
    workdir, out, _ = demo_runs
    assert f"demo image set: {10 * PER_CLASS} digits in {workdir / 'source'}" in out
    assert re.search(r"step 2/2\b", out), "the training log lines stream to the console"
    states = _stage_states(out)
    assert {k: states.get(k) for k in HEAVY} == dict.fromkeys(HEAVY, "Completed"), states
    top = re.search(r"^top-1 (\d+\.\d\d) %   top-5 (\d+\.\d\d) %$", out, re.M)
    assert top and 0.0 <= float(top[1]) <= float(top[2]) <= 100.0, out[-3000:]
    mindir = re.search(r"^  MINDIR (\S+)  \(mindspore\.GraphCell, max \|diff\| \S+\)$", out, re.M)
    onnx = re.search(r"^  ONNX   (\S+)  \(onnxruntime [\d.]+, max \|diff\| \S+\)$", out, re.M)
    assert mindir and onnx, out[-3000:]
    for match in (mindir, onnx):
        assert Path(match[1]).is_file() and Path(match[1]).parent == workdir / "exports"
    report = re.search(r"^report: (\S+)$", out, re.M)
    assert report and Path(report[1]).is_file() and workdir in Path(report[1]).parents
    text = Path(report[1]).read_text()
    assert "top1 (%)" in text and "irv2.onnx" in text and "irv2.mindir" in text
    run_folder = re.search(r"^run folder: (\S+)$", out, re.M)
    assert run_folder and (Path(run_folder[1]) / "final.ckpt").is_file()


def test_demo_again_is_served_from_the_cache(demo_runs):
    _, first, second = demo_runs
    states = _stage_states(second)
    assert {k: states.get(k) for k in HEAVY} == dict.fromkeys(HEAVY, "Cached"), states
    top = re.compile(r"^top-1 .*$", re.M)
    assert top.search(second)[0] == top.search(first)[0]

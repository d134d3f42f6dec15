"""Data-parallel training under msrun (2 CPU workers), and the launch helpers."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
from pathlib import Path

import pytest
from support.ports import free_port
from support.processes import wait_for
from support.training import assert_two_ranks_trained_one_model, smoke_args

from irv2_core.runtime.hold import HELD, HOLD_ENV, RELEASE
from irv2_core.runtime.io import read_json
from irv2_core.training.distributed import env_world, launch_env, msrun_command


def test_rank_and_size_come_from_the_launcher_environment(monkeypatch):
    for name in ("MS_ROLE", "RANK_TABLE_FILE", "OMPI_COMM_WORLD_SIZE", "RANK_SIZE", "RANK_ID"):
        monkeypatch.delenv(name, raising=False)
    assert (env_world().rank, env_world().size) == (0, 1)  # plain process: never init()
    monkeypatch.setenv("RANK_SIZE", "8")  # a stale variable alone is not a launch
    assert env_world().size == 1
    monkeypatch.setenv("MS_ROLE", "MS_WORKER")
    monkeypatch.setenv("MS_WORKER_NUM", "2")
    monkeypatch.setenv("RANK_ID", "1")
    assert (env_world().rank, env_world().size, env_world().is_master) == (1, 2, False)


def test_msrun_command_shape():
    cmd = msrun_command(4, ["train", "--data", "D"], master_port=9000, n_nodes=2, node_rank=1)
    assert cmd[0].endswith("msrun")
    assert {"--worker_num=8", "--local_worker_num=4", "--node_rank=1", "--master_port=9000"} <= set(
        cmd
    )
    assert cmd[-6:] == ["python", "-m", "irv2_core", "train", "--data", "D"]
    with pytest.raises(ValueError):
        msrun_command(0, [])


@pytest.mark.slow
def test_two_worker_msrun_training_keeps_ranks_in_step(smoke_train_only, tmp_path):
    data = smoke_train_only  # no val split: this test is about the gradient all-reduce
    run = tmp_path / "run"
    args = ["train", "--data", str(data), "--out", str(run), *smoke_args(), "--set", "epoch_size=1"]
    cmd = msrun_command(2, args, master_port=free_port(), log_dir=str(tmp_path / "log"))
    done = subprocess.run(cmd, env=launch_env(), capture_output=True, text=True, timeout=900)
    logs = "".join(p.read_text() for p in sorted((tmp_path / "log").glob("*.log")))
    assert done.returncode == 0, logs[-4000:]
    summary = read_json(run / "train_summary.json")
    assert (summary["rank_size"], summary["global_step"]) == (2, 2)
    assert_two_ranks_trained_one_model(run)


def _rank_pid(rank: int, run: Path) -> int | None:
    """The pid of msrun's worker *rank* that trains into *run*."""
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            env = (proc / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        ours = str(run).encode() in argv and b"MS_ROLE=MS_WORKER" in env
        if ours and f"RANK_ID={rank}".encode() in env:
            return int(proc.name)
    return None


@pytest.mark.slow
def test_sigterm_to_one_rank_stops_every_rank_after_the_same_step(smoke_train_only, tmp_path):
    """Only rank 1 gets SIGTERM (while rank 0 is held after step 1): both ranks stop after the
    same step (1, or 2 when rank 1 had already voted on step 1), rank 0 saves that step, and
    the job ends (no rank left waiting in a collective) with a status a task retries."""
    data, run, hold = smoke_train_only, tmp_path / "run", tmp_path / "hold"
    args = ["train", "--data", str(data), "--out", str(run), *smoke_args(), "--set", "epoch_size=2"]
    cmd = msrun_command(2, args, master_port=free_port(), log_dir=str(tmp_path / "log"))
    job = subprocess.Popen(cmd, env={**launch_env(), HOLD_ENV: f"1:{hold}"},
                           stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for("rank 0 held after step 1", lambda: (hold / HELD).exists(), 600, every_s=0.2)
        os.kill(_rank_pid(1, run), signal.SIGTERM)
        (hold / RELEASE).touch()
        rc = job.wait(timeout=300)
    finally:
        if job.poll() is None:
            job.kill()
    said = {}
    for rank in (0, 1):
        log = (tmp_path / "log" / f"worker_{rank}.log").read_text()
        said[rank] = re.findall(r"preempted: stopped on SIGTERM after step (\d+)", log)
    assert rc != 0 and said[0] == said[1] and said[0] in (["1"], ["2"]), (rc, said)
    step = int(said[0][0])
    assert read_json(run / "checkpoints" / "latest.json")["step"] == step  # rank 0 saved it
    assert not (run / "train_summary.json").exists()
    trained = [json.loads(r)["step"] for r in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(trained) == step < 4, trained

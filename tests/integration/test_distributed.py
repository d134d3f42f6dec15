"""Data-parallel training under msrun (2 CPU workers), and the launch helpers."""

from __future__ import annotations

import subprocess

import pytest
from support.ports import free_port
from support.training import assert_two_ranks_trained_one_model, smoke_args

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

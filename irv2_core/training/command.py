"""The training process's command line, as the train task and the train-node flow start it.

One device runs ``python -m irv2_core train``; several devices (or nodes) wrap the same arguments
in ``msrun``. With an object store, checkpoints are mirrored as written, so a fresh worker
resumes from them.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import yaml

from irv2_core.runtime.io import atomic_write_text
from irv2_core.storage.layout import run_prefix
from irv2_core.storage.lease import DEFAULT_TTL_S
from irv2_core.storage.publish import StoreRef

__all__ = ["train_command", "train_env", "write_requested_config"]


def train_env(node_rank: int | None = None) -> dict[str, str]:
    """The environment of a training process a pipeline stage starts: this interpreter first on
    PATH (msrun starts ``python``, which must be the one with irv2_core), unbuffered output,
    MindSpore logging errors only (the run log shows training lines), the scoped compile cache
    on unless someone chose otherwise, and the node's rank when given."""
    from irv2_core.runtime.compile_cache import worker_cache_env
    from irv2_core.training.distributed import NODE_RANK_ENV, launch_env

    env = worker_cache_env({**launch_env(), "PYTHONUNBUFFERED": "1"})
    env.setdefault("GLOG_v", "3")
    if node_rank is not None:
        env[NODE_RANK_ENV] = str(node_rank)
    return env


def write_requested_config(run_dir: Path, config: dict[str, Any]) -> Path:
    """Write the resolved *config* the training process reads into *run_dir*; return its path."""
    path = run_dir / "requested_config.yaml"
    atomic_write_text(path, yaml.safe_dump(config, sort_keys=True))
    return path


def train_command(
    data_dir: str,
    run_dir: Path,
    config_file: Path,
    launch: dict[str, Any],
    store: StoreRef | None = None,
    join_timeout_s: float = 600.0,
    accept_stack_change: bool = False,
) -> tuple[list[str], Path | None]:
    """argv of the training process, and rank 0's log file when msrun writes one.

    One device runs ``python -m irv2_core train``; ``device_num`` > 1 (or several nodes) wraps the
    same arguments in ``msrun --worker_num=N --local_worker_num=n``, whose cluster building gives
    up after *join_timeout_s* (the same bound the train task puts on node runs starting).
    """
    args = ["train", "--data", str(data_dir), "--out", str(run_dir)]
    args += ["--config", str(config_file), "--resume"]
    if accept_stack_change:  # a checkpoint from another software stack may be resumed
        args += ["--accept-stack-change"]
    if store:  # checkpoints mirrored as written; a fresh worker resumes from them
        mirror = f"{store['uri'].rstrip('/')}/{run_prefix(run_dir.name)}"
        args += ["--mirror-uri", mirror, "--compile-cache-uri", store["uri"]]
        if store.get("endpoint_url"):
            args += ["--endpoint-url", store["endpoint_url"]]
        # a worker that died leaves its lease until it expires: wait that out, not a live one
        args += ["--wait-for-lock", str(round(DEFAULT_TTL_S * 1.5))]
    device_num = int(launch.get("device_num", 1))
    num_nodes = int(launch.get("num_nodes", 1))
    if device_num <= 1 and num_nodes <= 1:
        return [sys.executable, "-m", "irv2_core", *args], None
    from irv2_core.training.distributed import DEFAULT_MASTER_PORT, msrun_command

    node_rank = int(launch.get("node_rank", 0))
    log_dir = run_dir / "msrun_log"
    if node_rank > 0:  # nodes may share the run folder: each keeps its own msrun logs
        log_dir = log_dir / f"node{node_rank}"
    command = msrun_command(
        device_num,
        args,
        master_addr=launch.get("master_addr", "127.0.0.1"),
        master_port=int(launch.get("master_port", DEFAULT_MASTER_PORT)),
        node_rank=node_rank,
        n_nodes=num_nodes,
        log_dir=str(log_dir),
        cluster_time_out=max(1, math.ceil(join_timeout_s)),
    )
    return command, (log_dir / "worker_0.log" if node_rank == 0 else None)

"""The ``train-node`` flow: one node's share of a multi-node msrun training job.

The train task of ``train-eval-export`` runs node 0 itself (the msrun scheduler and rank 0: its log
and progress stream into the train task) and starts nodes 1..N-1 as runs of a ``train-node``
deployment, one per machine of the work pool; each runs ``msrun --worker_num=N*device_num
--local_worker_num=device_num --node_rank=K --master_addr=<node 0>`` on the shared run folder under
the same supervised launch (own process group, killed on timeout or cancellation).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from irv2_core.training.distributed import NODE_RANK_ENV, launch_env
from tasks.launch import TrainingProcessError, run_supervised, worker_error_tail
from tasks.storage import StoreRef

__all__ = ["NODE_FLOW_NAME", "train_node"]

NODE_FLOW_NAME = "train-node"


@flow(name=NODE_FLOW_NAME, log_prints=True, validate_parameters=True)
def train_node(
    data_dir: str,
    run_dir: str,
    config_file: str,
    launch: dict[str, Any],
    store: StoreRef | None = None,
    timeout_s: float | None = None,
    join_timeout_s: float = 600.0,
) -> int:
    """Run node ``launch["node_rank"]`` (> 0) of the msrun job training into *run_dir*; msrun
    gives up after *join_timeout_s* when the cluster has not formed."""
    from tasks.training import train_command

    logger = get_run_logger()
    node_rank = int(launch.get("node_rank", 0))
    if node_rank < 1:
        raise ValueError(
            f"train-node runs nodes 1..N-1; node 0 is the train task (got {node_rank})"
        )
    command, _ = train_command(
        data_dir, Path(run_dir), Path(config_file), launch, store, join_timeout_s
    )
    logger.info("node %d launching: %s", node_rank, " ".join(command))
    env = {**launch_env(), "PYTHONUNBUFFERED": "1", NODE_RANK_ENV: str(node_rank)}
    env.setdefault("GLOG_v", "3")
    try:
        return run_supervised(command, on_line=logger.info, env=env, timeout_s=timeout_s)
    except TrainingProcessError as exc:
        tail = worker_error_tail(Path(run_dir) / "msrun_log" / f"node{node_rank}")
        raise TrainingProcessError(f"node {node_rank}: {exc}\n{tail}", exc.returncode) from None

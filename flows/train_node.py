"""The ``train-node`` flow: one node's share of a multi-node msrun training job.

The train task of ``train-eval-export`` runs node 0 itself (the msrun scheduler and rank 0: its log
and progress stream into the train task) and starts nodes 1..N-1 as runs of a ``train-node``
deployment, one per machine of the work pool; each runs ``msrun --worker_num=N*device_num
--local_worker_num=device_num --node_rank=K --master_addr=<node 0>`` under the same supervised
launch (own process group, killed on timeout or cancellation).

Nodes either share node 0's folders (a shared volume: the paths it passes are used as they are)
or, with the flow's object store, keep their own: the MindRecord conversion is fetched (verified)
from the store, the config written from the parameters, and every rank resumes from the store's
newest complete checkpoint. A deployment whose machines have their own disk elsewhere sets
``workdir``: the job's folders are then rebuilt under it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from irv2_core.errors import Irv2Error
from irv2_core.runtime.supervise import TrainingProcessError, run_supervised, worker_error_tail
from irv2_core.storage.publish import StoreRef
from irv2_core.training.command import train_command, train_env, write_requested_config
from tasks.data import fetch_conversion_task

__all__ = ["NODE_FLOW_NAME", "train_node"]

NODE_FLOW_NAME = "train-node"


def _node_folders(paths: tuple[Path, Path, Path], workdir: str | None) -> tuple[Path, Path, Path]:
    """The job's data folder, run folder and config file as this node sees them."""
    data, run, config_file = paths
    if not workdir:
        return data, run, config_file
    root = Path(workdir).resolve()
    run = root / "runs" / run.name
    return root / data.name, run, run / config_file.name


def _prepare(
    node_rank: int, data: Path, store: StoreRef | None, fingerprint: str | None, prefix: str | None
) -> None:
    """Fetch the job's MindRecord from the store when this node does not have it."""
    if store is not None and fingerprint and prefix:
        fetch_conversion_task(store, prefix, str(data), fingerprint)
    elif not (data / "classes.json").is_file():
        raise Irv2Error(
            f"node {node_rank}: no MindRecord conversion in {data}. The nodes of a job either "
            "share node 0's folders (a shared volume mounted at the same path) or fetch them "
            "from the flow's object store: set output_uri"
        )


@flow(name=NODE_FLOW_NAME, log_prints=True, validate_parameters=True)
def train_node(
    data_dir: str,
    run_dir: str,
    config_file: str,
    launch: dict[str, Any],
    store: StoreRef | None = None,
    timeout_s: float | None = None,
    join_timeout_s: float = 600.0,
    config: dict[str, Any] | None = None,
    mindrecord_fingerprint: str | None = None,
    data_prefix: str | None = None,
    workdir: str | None = None,
) -> int:
    """Run node ``launch["node_rank"]`` (> 0) of the msrun job training into *run_dir*; msrun
    gives up after *join_timeout_s* when the cluster has not formed. With a *store*, what this
    node lacks (MindRecord, *config*) is fetched or written first, under *workdir* if set."""
    logger = get_run_logger()
    node_rank = int(launch.get("node_rank", 0))
    if node_rank < 1:
        raise ValueError(
            f"train-node runs nodes 1..N-1; node 0 is the train task (got {node_rank})"
        )
    paths = (Path(data_dir), Path(run_dir), Path(config_file))
    data, run, config_path = _node_folders(paths, workdir)
    _prepare(node_rank, data, store, mindrecord_fingerprint, data_prefix)
    run.mkdir(parents=True, exist_ok=True)
    if config is not None and not config_path.is_file():
        config_path = write_requested_config(run, config)
    command, _ = train_command(str(data), run, config_path, launch, store, join_timeout_s)
    logger.info("node %d launching: %s", node_rank, " ".join(command))
    env = train_env(node_rank)
    try:
        return run_supervised(command, on_line=logger.info, env=env, timeout_s=timeout_s)
    except TrainingProcessError as exc:
        tail = worker_error_tail(run / "msrun_log" / f"node{node_rank}")
        raise TrainingProcessError(f"node {node_rank}: {exc}\n{tail}", exc.returncode) from None

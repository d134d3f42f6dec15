"""Data-parallel launch helpers: who am I (rank/size from the environment), init, msrun commands.

``msrun`` (and MindSpore's dynamic-cluster variables) start each worker with ``MS_ROLE=MS_WORKER``,
``MS_WORKER_NUM`` and ``RANK_ID``; Ascend rank-table launches set ``RANK_TABLE_FILE``/``RANK_SIZE``
and OpenMPI sets ``OMPI_COMM_WORLD_SIZE``. ``init()`` may only be called under such a launcher (in a
plain process it raises), so it is called only when the environment says there is more than one
worker.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

__all__ = [
    "NODE_RANK_ENV",
    "DistInfo",
    "env_world",
    "init_distributed",
    "is_scheduler",
    "launch_env",
    "msrun_command",
    "run_scheduler",
]

DEFAULT_MASTER_PORT = 8118


@dataclass(frozen=True)
class DistInfo:
    """Rank of this process, number of processes, and whether ``init()`` was called."""

    rank: int = 0
    size: int = 1
    initialized: bool = False

    @property
    def is_master(self) -> bool:
        """True on rank 0 (the process that writes the shared run-folder files)."""
        return self.rank == 0


def _int_env(*names: str) -> int | None:
    for name in names:
        raw = os.environ.get(name)
        if raw not in (None, ""):
            try:
                return int(raw)
            except ValueError:
                continue
    return None


def env_world() -> DistInfo:
    """Rank and size as the launcher's environment states them (no MindSpore call)."""
    if os.environ.get("MS_ROLE") == "MS_WORKER":
        size = _int_env("MS_WORKER_NUM", "RANK_SIZE") or 1
    elif os.environ.get("RANK_TABLE_FILE") or os.environ.get("OMPI_COMM_WORLD_SIZE"):
        size = _int_env("RANK_SIZE", "OMPI_COMM_WORLD_SIZE") or 1
    else:
        return DistInfo()
    rank = _int_env("RANK_ID", "MS_NODE_ID", "OMPI_COMM_WORLD_RANK") or 0
    return DistInfo(rank=rank, size=size)


def is_scheduler() -> bool:
    """True in the scheduler process msrun starts with the same command line as the workers."""
    return os.environ.get("MS_ROLE") == "MS_SCHED"


NODE_RANK_ENV = "IRV2_NODE_RANK"


def run_scheduler() -> None:
    """Serve as msrun's scheduler: ``init()`` coordinates the workers until they finish.

    msrun starts a scheduler on every node whose own address is ``master_addr``: when several
    nodes share one host (tests), only node 0 (``IRV2_NODE_RANK`` unset or 0) may serve; the
    others exit at once, else their scheduler fails on the taken port and fails the node.
    """
    from mindspore.communication import init

    if (_int_env(NODE_RANK_ENV) or 0) > 0:
        return

    init()


def init_distributed() -> DistInfo:
    """Call ``init()`` and set DATA_PARALLEL (gradients averaged) when launched with >1 worker.

    A single process returns rank 0 of 1 untouched. The rank and size reported by the
    communication library after ``init()`` win over the environment.
    """
    world = env_world()
    if world.size <= 1:
        return world
    import mindspore as ms
    from mindspore.communication import get_group_size, get_rank, init

    init()
    rank, size = get_rank(), get_group_size()
    ms.set_auto_parallel_context(
        parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True, device_num=size
    )
    return DistInfo(rank=rank, size=size, initialized=True)


def msrun_command(
    n_workers: int,
    args: list[str],
    master_addr: str = "127.0.0.1",
    master_port: int = DEFAULT_MASTER_PORT,
    node_rank: int = 0,
    n_nodes: int = 1,
    log_dir: str = "msrun_log",
    cluster_time_out: int = 600,
) -> list[str]:
    """argv that runs ``python -m irv2_core <args>`` under msrun with *n_workers* per node.

    *args* is the irv2 command line (e.g. ``["train", "--data", D, "--out", R]``); the total
    worker count is ``n_workers * n_nodes`` and node *node_rank* starts the scheduler when 0.
    msrun starts workers as ``python`` from PATH: run it with :func:`launch_env`.
    """
    if n_workers < 1 or n_nodes < 1:
        raise ValueError(f"n_workers and n_nodes must be >= 1, got {n_workers}, {n_nodes}")
    msrun = os.path.join(os.path.dirname(sys.executable), "msrun")
    return [
        msrun,
        f"--worker_num={n_workers * n_nodes}",
        f"--local_worker_num={n_workers}",
        f"--master_addr={master_addr}",
        f"--master_port={master_port}",
        f"--node_rank={node_rank}",
        f"--log_dir={log_dir}",
        "--join=True",
        f"--cluster_time_out={cluster_time_out}",
        "python",
        "-m",
        "irv2_core",
        *args,
    ]


def launch_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for msrun: *base* (default os.environ) with this interpreter's folder first on
    PATH, so the ``python`` msrun starts is the one that has irv2_core and MindSpore."""
    env = dict(os.environ if base is None else base)
    bindir = os.path.dirname(sys.executable)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    return env

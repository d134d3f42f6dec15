"""One pod of a gang job (``irv2 gang-pod``): its node's share of the multi-node msrun training.

The pods of a gang share nothing but the object store. Each waits until pod 0's name resolves
(pods start at different times), fetches the MindRecord conversion from the store (verified),
writes the run's config (``IRV2_GANG_CONFIG``, set by the train task) and runs the multi-node
msrun with its node rank (``VC_TASK_INDEX``); rank 0's checkpoints are mirrored to the run's
prefix as they are written, so a restarted gang resumes from the store. When training ends,
pod 0 publishes the run folder's outputs under ``gang/<run-id>`` (committed like any output),
from where the train task takes them and publishes the run as every route does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from irv2_core.data.local_copy import ensure_conversion
from irv2_core.errors import Irv2Error
from irv2_core.runtime.supervise import run_supervised
from irv2_core.storage import open_store
from irv2_core.storage.layout import gang_prefix
from irv2_core.storage.publish import COMMIT_MARKER, fetch_committed, publish_files, run_files
from irv2_core.storage.store import ObjectStore, join_key
from irv2_core.training.command import train_command, train_env, write_requested_config
from irv2_core.training.distributed import DEFAULT_MASTER_PORT
from irv2_core.training.gang import GangOptions, GangSpec

__all__ = ["CONFIG_ENV", "RANK_ENV", "PodJob", "collect_outputs", "gang_spec", "pod_config",
           "run_pod"]  # fmt: skip

CONFIG_ENV = "IRV2_GANG_CONFIG"  # the run's resolved config as JSON
RANK_ENV = "VC_TASK_INDEX"  # Volcano's env plugin: the pod's index in its task


@dataclass
class PodJob:
    """What every pod of one gang trains, and from where."""

    store_uri: str
    endpoint_url: str | None
    data_prefix: str
    fingerprint: str
    run_id: str
    workdir: Path
    nodes: int
    npus_per_node: int
    master_addr: str
    master_port: int = 8118
    join_timeout_s: float = 600.0
    stop_grace_s: float = 60.0
    accept_stack_change: bool = False

    def store(self) -> ObjectStore:
        return open_store(self.store_uri, self.endpoint_url)


def gang_spec(
    run_id: str, config: dict[str, Any], launch: dict[str, Any], store: dict[str, Any],
    data: tuple[str, str], options: GangOptions, limits: dict[str, Any],
) -> GangSpec:  # fmt: skip
    """The gang that trains run *run_id* with *config* on ``launch["num_nodes"]`` pods of
    ``device_num`` devices from the conversion *data* = (prefix, fingerprint) in *store*;
    *limits* holds ``join_timeout_s``, ``stop_grace_s`` and ``accept_stack_change``."""
    args = ["--store-uri", store["uri"], "--data-prefix", data[0], "--fingerprint", data[1],
            "--run-id", run_id, f"--stop-grace-s={limits['stop_grace_s']:g}"]  # fmt: skip
    if store.get("endpoint_url"):
        args += ["--endpoint-url", store["endpoint_url"]]
    if limits.get("accept_stack_change"):
        args += ["--accept-stack-change"]
    return GangSpec(
        name=f"irv2-{run_id}", image=options.image, nodes=int(launch["num_nodes"]),
        npus_per_node=int(launch.get("device_num", 1)), pod_args=args,
        namespace=options.namespace, queue=options.queue,
        master_port=int(launch.get("master_port", DEFAULT_MASTER_PORT)),
        join_timeout_s=round(limits["join_timeout_s"]), secret=options.object_store_secret,
        grace_s=round(limits["stop_grace_s"]) + 60,  # + the upload of the saved step
        env={CONFIG_ENV: json.dumps(config, sort_keys=True)},
    )  # fmt: skip


def pod_config(environ: dict[str, str] | None = None) -> dict[str, Any]:
    """The run's config from ``IRV2_GANG_CONFIG``; Irv2Error when it is missing or not JSON."""
    raw = (os.environ if environ is None else environ).get(CONFIG_ENV)
    try:
        config = json.loads(raw or "")
    except ValueError:
        config = None
    if not isinstance(config, dict):
        raise Irv2Error(f"{CONFIG_ENV} must hold the run's config as a JSON object (the train "
                        "task sets it in the gang's pods)")  # fmt: skip
    return config


def wait_for_master(addr: str, timeout_s: float) -> None:
    """Until *addr* resolves (pod 0's headless-Service name appears once pod 0 exists)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.getaddrinfo(addr, None)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise Irv2Error(f"the gang's master {addr} did not resolve within "
                                f"{timeout_s:g} s: pod 0 never started") from None  # fmt: skip
            time.sleep(1.0)


class _Stopped(BaseException):
    """SIGTERM to the pod: training gets its grace to save the step it is on."""


def _raise_stopped(signum, frame) -> None:
    raise _Stopped()


def run_pod(job: PodJob, node_rank: int, config: dict[str, Any],
            on_line: Callable[[str], None] = print) -> int:  # fmt: skip
    """Train node *node_rank* of *job*; pod 0 then publishes the outputs. Returns the exit
    status (143 when stopped by SIGTERM, after training saved its step)."""
    # PID 1 in a container ignores SIGTERM unless it handles it
    signal.signal(signal.SIGTERM, _raise_stopped)
    wait_for_master(job.master_addr, job.join_timeout_s)
    store = job.store()
    data = ensure_conversion(store, job.data_prefix, job.workdir / "mindrecord", job.fingerprint)
    run_dir = job.workdir / "runs" / job.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    config_file = write_requested_config(run_dir, config)
    launch = {"device_num": job.npus_per_node, "num_nodes": job.nodes, "node_rank": node_rank,
              "master_addr": job.master_addr, "master_port": job.master_port}  # fmt: skip
    ref = {"uri": job.store_uri, "endpoint_url": job.endpoint_url}
    command, rank0_log = train_command(str(data), run_dir, config_file, launch, ref,
                                       job.join_timeout_s, job.accept_stack_change)  # fmt: skip
    env = train_env(node_rank)
    on_line(f"node {node_rank} of {job.nodes}: {' '.join(command)}")
    try:
        run_supervised(command, on_line=on_line, rank0_log=rank0_log, env=env,
                       stop_grace_s=job.stop_grace_s)  # fmt: skip
    except _Stopped:
        on_line(f"node {node_rank}: stopped (SIGTERM); training saved its step")
        return 143
    if node_rank == 0:
        marker = publish_files(store, gang_prefix(job.run_id), run_files(run_dir),
                               meta={"run_id": job.run_id})  # fmt: skip
        on_line(f"published {len(marker['files'])} files under {gang_prefix(job.run_id)}")
    return 0


def collect_outputs(store: ObjectStore, run_id: str, run_dir: Path) -> Path:
    """Bring the gang's outputs (pod 0's run folder) into *run_dir*, verified; then drop them
    from the store, where the run's own prefix publishes them."""
    prefix = gang_prefix(run_id)
    marker = fetch_committed(store, prefix, run_dir)
    store.delete(join_key(prefix, COMMIT_MARKER))  # first: never a marker without its files
    for rel in marker["files"]:
        store.delete(join_key(prefix, rel))
    return run_dir

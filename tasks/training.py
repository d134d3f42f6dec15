"""Prefect task for ``train``: a supervised subprocess (``python -m irv2_core train`` or msrun).

The run folder is named after the cache digest (MindRecord fingerprint + resolved config + code
version + launch), so a retry of the same task finds its own checkpoints and resumes (``--resume``
is always passed; it is a no-op without a checkpoint), while new data or a new config starts a new
folder. Rank 0's log lines stream into the Prefect run log and ``progress.json`` drives a progress
artifact; a timeout, cancellation or crash of the flow process kills the whole process group.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from irv2_core.data.local_copy import ensure_conversion
from irv2_core.errors import Irv2Error
from irv2_core.records import TrainSummary
from irv2_core.runtime.cost import BudgetExceeded
from irv2_core.runtime.fingerprint import training_code_version
from irv2_core.runtime.io import read_json, sha256_json
from irv2_core.runtime.supervise import TrainingProcessError, run_supervised
from irv2_core.storage.layout import run_prefix
from irv2_core.storage.outputs import Made, StageOutput, produce_once
from irv2_core.storage.publish import SMALL_RUN_FILES, StoreRef, ensure_local, open_ref, run_files
from irv2_core.storage.stamps import stamped_key
from irv2_core.training.command import train_command, train_env, write_requested_config
from irv2_core.training.gang import GangOptions, VolcanoGang, kube_api
from irv2_core.training.gang_pod import collect_outputs, gang_spec
from irv2_core.training.gang_watch import GangLimits, run_gang
from tasks.caching import StagePolicy, current_cache_key
from tasks.common import PERSIST, retry_unless_user_error
from tasks.nodes import NODE_DEPLOYMENT, NodeRuns, check_node_deployment

__all__ = [
    "declare_train",
    "run_dir_for",
    "train_command",
    "train_task",
    "write_requested_config",
]

_OUTPUTS = ("final.ckpt", "train_summary.json", "config.yaml")


def _start_nodes(
    deployment: str, join_timeout_s: float, launch: dict[str, Any], common: dict[str, Any]
) -> NodeRuns:
    """Submit node runs 1..N-1 of this job, each with the train-node parameters *common* plus its
    own ``launch``. Fails first when the deployment is missing."""
    check_node_deployment(deployment)
    nodes = NodeRuns(deployment, join_timeout_s=join_timeout_s)
    nodes.submit(
        {
            rank: {**common, "launch": {**launch, "node_rank": rank}}
            for rank in range(1, int(launch["num_nodes"]))
        }
    )
    return nodes


def _train_content(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": "train",
        "mindrecord_fingerprint": params["mindrecord_fingerprint"],
        "config": params["config"],
        "code": training_code_version(),
        "launch": params.get("launch") or {},
    }


def run_dir_for(runs_dir: str | os.PathLike[str], params: dict[str, Any]) -> Path:
    """The run folder of these training inputs: ``RUNS_DIR/run-<12 hex of the content digest>``."""
    return declare_train({**params, "runs_dir": runs_dir}).anchor


def declare_train(params: dict[str, Any]) -> StageOutput:
    """The run folder ``RUNS_DIR/run-<12 hex of the content digest>``: keyed on the MindRecord
    data, the resolved config, the training code and the launch; published under
    ``runs/<run-id>``."""
    content = _train_content(params)
    run_dir = Path(params["runs_dir"]) / f"run-{sha256_json(content)[:12]}"
    return StageOutput("train", content, run_dir, run_prefix(run_dir.name), TrainSummary)


class _Progress:
    """Keeps one progress artifact per training task run up to date."""

    def __init__(self, key: str) -> None:
        self.artifact_id = create_progress_artifact(
            0.0, key=key, description="training: waiting for the first step"
        )

    def __call__(self, progress: dict[str, Any]) -> None:
        total = progress.get("total_steps") or 0
        step = progress.get("step") or 0
        pct = min(100.0, 100.0 * step / total) if total else 0.0
        text = (
            f"step {step}/{total}, epoch {progress.get('epoch')}, "
            f"loss {_fmt(progress.get('loss'))}, {_fmt(progress.get('img_per_s'))} img/s"
        )
        update_progress_artifact(self.artifact_id, pct, description=text)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) else "-"


class _Job:
    """One training job of the train task: its process (and node runs) under supervision."""

    def __init__(self, run_dir, data_dir, config, launch, store, limits: dict[str, Any]):
        self.run_dir, self.data_dir, self.config = run_dir, data_dir, config
        self.launch, self.store, self.limits = launch, store, limits
        self.timeout_s, self.join_timeout_s = limits["timeout_s"], limits["join_timeout_s"]
        self.stop_grace_s = limits["stop_grace_s"]
        self.accept_stack_change = limits["accept_stack_change"]
        self.budget_s = limits["budget_s"]

    def run(self, logger: Any, node_deployment: str, fingerprint: str, data_prefix) -> None:
        """Train into the run folder (resuming from its last checkpoint)."""
        run_dir = self.run_dir
        if (run_dir / "train_summary.json").exists():
            logger.warning("%s finished earlier but its outputs changed: training again", run_dir)
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        config_file = write_requested_config(run_dir, self.config)
        command, rank0_log = train_command(self.data_dir, run_dir, config_file, self.launch,
                                           self.store, self.join_timeout_s,
                                           self.accept_stack_change)  # fmt: skip
        nodes = None
        if int(self.launch.get("num_nodes", 1)) > 1:
            common = {  # the paths for nodes sharing this folder; the rest for nodes that fetch
                "data_dir": str(self.data_dir),
                "run_dir": str(run_dir),
                "config_file": str(config_file),
                "store": self.store,
                "timeout_s": self.timeout_s,
                "join_timeout_s": self.join_timeout_s,
                "config": self.config,
                "mindrecord_fingerprint": fingerprint,
                "data_prefix": data_prefix,
            }
            nodes = _start_nodes(node_deployment, self.join_timeout_s, self.launch, common)
            logger.info("started training nodes %s", {r: str(i) for r, i in nodes.ids.items()})
        logger.info("launching: %s", " ".join(command))
        self._supervise(command, rank0_log, nodes, logger)

    def run_gang(self, options: GangOptions, logger: Any, fingerprint: str, data_prefix) -> None:
        """Train on one Volcano gang of pods that fetch everything from the store
        (training/gang_pod.py), following rank 0's log; then take the gang's outputs."""
        if self.store is None or data_prefix is None:
            raise Irv2Error("a gang trains from the object store: set output_uri")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_requested_config(self.run_dir, self.config)
        spec = gang_spec(self.run_dir.name, self.config, self.launch, self.store,
                         (data_prefix, fingerprint), options, self.limits)  # fmt: skip
        limits = GangLimits(options.start_timeout_s, self.timeout_s, options.poll_s)
        run_gang(VolcanoGang(spec, kube_api()), limits, logger.info, check=self._checks(None))
        collect_outputs(open_ref(self.store), self.run_dir.name, self.run_dir)

    def _checks(self, nodes: NodeRuns | None):
        """What supervision checks each poll: the other nodes, and the device-hour budget."""
        deadline = None if self.budget_s is None else time.monotonic() + self.budget_s
        budget_s = self.budget_s

        def check() -> None:
            if nodes is not None:
                nodes.check()
            if deadline is not None and time.monotonic() > deadline:
                raise BudgetExceeded(
                    f"training stopped after {budget_s:.0f} s: the run's device-hour budget is "
                    "spent (parameter budget_device_hours); its last step is saved"
                )

        return check

    def _supervise(self, command, rank0_log, nodes: NodeRuns | None, logger: Any) -> None:
        env = train_env()
        try:
            run_supervised(
                command,
                on_line=logger.info,
                progress_file=self.run_dir / "progress.json",
                on_progress=_Progress(key="train-progress"),
                rank0_log=rank0_log,
                env=env,
                timeout_s=self.timeout_s,
                check=self._checks(nodes),
                stop_grace_s=self.stop_grace_s,
            )
            if nodes is not None:
                nodes.wait(timeout_s=self.join_timeout_s)
        except BaseException as exc:
            if nodes is None:
                raise
            try:
                if isinstance(exc, TrainingProcessError):
                    # node 0 failed: did another node fail first? Read the node states before
                    # cancelling them, else the nodes just cancelled would be blamed
                    nodes.check(force=True)
            finally:
                cancelled = nodes.cancel_unfinished()
                if cancelled:
                    logger.warning("cancelled training node runs %s", cancelled)
            raise


def _local(run_dir: Path, summary: TrainSummary | None = None) -> TrainSummary:
    """The run's TrainSummary (from its folder, or *summary*) with this worker's ``run_dir``
    and ``final_checkpoint`` paths."""
    data = summary.to_json() if summary else read_json(run_dir / "train_summary.json")
    update = {"run_dir": str(run_dir), "final_checkpoint": str(run_dir / "final.ckpt")}
    return TrainSummary.model_validate({**data, **update})


@task(
    name="train",
    cache_policy=StagePolicy(declare=declare_train),
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless_user_error,
    **PERSIST,
)
def train_task(
    data_dir: str,
    mindrecord_fingerprint: str,
    config: dict[str, Any],
    runs_dir: str,
    launch: dict[str, Any] | None = None,
    timeout_s: float | None = None,
    store: StoreRef | None = None,
    data_prefix: str | None = None,
    node_deployment: str = NODE_DEPLOYMENT,
    join_timeout_s: float = 600.0,
    stop_grace_s: float = 60.0,
    accept_stack_change: bool = False,
    budget_s: float | None = None,
    gang: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train on the MindRecord folder *data_dir* with the resolved *config*; return its
    TrainSummary (with ``run_dir``; with a store, its ``address``).

    *launch* holds ``device_num``, ``num_nodes``, ``node_rank``, ``master_addr`` (and
    ``master_port``). A retry resumes from the run folder's last checkpoint (weights, optimizer,
    step). With ``num_nodes`` N > 1 this task runs node 0 (scheduler and rank 0, at
    ``master_addr``) and starts nodes 1..N-1 as runs of the *node_deployment* (``train-node``),
    on the same run folder (a shared volume) or, with a *store*, on their own copies fetched from
    it; a node that fails, or has not started within *join_timeout_s*, cancels the others and
    fails the task with its log tail. When this task is stopped (cancelled, its pod evicted),
    training gets SIGTERM and *stop_grace_s* seconds to save the step it is on before SIGKILL.
    A resume from a checkpoint of another software stack fails unless *accept_stack_change*.
    Past *budget_s* seconds (what the run's device-hour budget leaves), training is stopped like
    a preempted one (its step saved) and the task fails with BudgetExceeded, not retried.
    With *gang* (GangOptions), the N nodes run as one Volcano gang of pods instead, which
    share nothing but the *store*; the Job is deleted when the task ends, however it ends.
    """
    logger = get_run_logger()
    launch = launch or {}
    params = {"mindrecord_fingerprint": mindrecord_fingerprint, "config": config,
              "launch": launch, "runs_dir": runs_dir}  # fmt: skip
    out = declare_train(params)
    run_dir, st = out.anchor, open_ref(store)

    def produce() -> Made[TrainSummary]:
        if stamped_key(run_dir, out.digest):  # intact outputs: Prefect's record was lost, or
            logger.info("%s: intact outputs found, not training again", run_dir)  # (with a
        else:  # store) they were trained before output_uri was set
            limits = {"timeout_s": timeout_s, "join_timeout_s": join_timeout_s,
                      "stop_grace_s": stop_grace_s, "budget_s": budget_s,
                      "accept_stack_change": accept_stack_change}  # fmt: skip
            job = _Job(run_dir, data_dir, config, launch, store, limits)
            if gang:
                options = GangOptions.model_validate(gang)
                job.run_gang(options, logger, mindrecord_fingerprint, data_prefix)
            else:
                job.run(logger, node_deployment, mindrecord_fingerprint, data_prefix)
        stamped = tuple(run_dir / n for n in _OUTPUTS)
        return Made(_local(run_dir), run_files(run_dir) if st else {}, stamped)

    def adopt(found: TrainSummary) -> TrainSummary:  # trained and published by another worker
        logger.info("train: %s already published at %s", run_dir.name, found.address.uri)
        ensure_local(st, out.prefix, run_dir, only=SMALL_RUN_FILES)
        return _local(run_dir, found)

    def fetch_inputs() -> None:
        ensure_conversion(st, data_prefix, Path(data_dir), mindrecord_fingerprint)

    record = produce_once(out, st, current_cache_key(), produce, fetch_inputs=fetch_inputs,
                          adopt=adopt)  # fmt: skip
    if record.address is not None:
        logger.info("train: %s published at %s", run_dir.name, record.address.uri)
    return record.to_json()

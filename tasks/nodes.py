"""Nodes 1..N-1 of a multi-node training job, as runs of the ``train-node`` deployment.

The train task submits one flow run per extra node (``run_deployment(..., timeout=0)``), then
watches them while it runs node 0 itself: a node run that fails, crashes or is cancelled, or one
that has not started within *join_timeout_s* (no worker took it), cancels every other node run and
fails the task with that node's last log lines.
"""

from __future__ import annotations

import time
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.client.schemas.sorting import LogSort
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling

from irv2_core.errors import Irv2Error
from irv2_core.runtime.supervise import TAIL_LINES

__all__ = ["NODE_DEPLOYMENT", "NodeFailedError", "NodeRuns", "check_node_deployment"]

NODE_DEPLOYMENT = "train-node/process"  # deployments/prefect.yaml: one node of a multi-node job

_BAD = ("FAILED", "CRASHED", "CANCELLED", "CANCELLING")
# how long a failed node's last log lines may take to reach the API after its final state
LOG_SETTLE_S = 10.0


class NodeFailedError(RuntimeError):
    """A node run of the training job failed or never started; the message has its log tail."""


def check_node_deployment(name: str) -> None:
    """Raise Irv2Error (not retried) when the ``train-node`` deployment *name* is not registered."""
    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except ObjectNotFound:
            raise Irv2Error(
                f"num_nodes > 1 needs the deployment {name!r}, which is not registered with the "
                "Prefect API; deploy it with `prefect --no-prompt deploy --prefect-file "
                f"deployments/prefect.yaml --name {NODE_DEPLOYMENT}` (or your cluster's "
                "train-node deployment) and start one worker per node on its work pool"
            ) from None


class NodeRuns:
    """The flow runs of nodes 1..N-1; :meth:`check` raises when one has gone wrong."""

    def __init__(self, deployment: str, join_timeout_s: float = 600.0, poll_s: float = 5.0):
        self.deployment, self.join_timeout_s, self.poll_s = deployment, join_timeout_s, poll_s
        self.ids: dict[int, Any] = {}  # node rank -> flow run id
        self.started = time.monotonic()
        self.last_poll = 0.0

    def submit(self, per_node: dict[int, dict[str, Any]]) -> None:
        """Start one run per node rank with its parameters (does not wait for them)."""
        self.started = time.monotonic()
        for rank, parameters in per_node.items():
            run = run_deployment(
                name=self.deployment,
                parameters=parameters,
                timeout=0,
                as_subflow=False,
                tags=["irv2-train-node", f"node-{rank}"],
            )
            self.ids[rank] = run.id

    def _states(self) -> dict[int, Any]:
        with get_client(sync_client=True) as client:
            return {rank: client.read_flow_run(i).state for rank, i in self.ids.items()}

    def check(self, force: bool = False) -> dict[int, Any]:
        """Raise NodeFailedError for a failed node run or one not running after the join timeout;
        polls the API at most every *poll_s* unless *force*. Returns the states read (or {})."""
        now = time.monotonic()
        if not force and now - self.last_poll < self.poll_s:
            return {}
        self.last_poll = now
        states = self._states()
        for rank, state in sorted(states.items()):
            if state is not None and state.type.value in _BAD:
                raise NodeFailedError(
                    f"training node {rank} (flow run {self.ids[rank]}) ended {state.name}: "
                    f"{state.message or ''}\nlast log lines of node {rank}:\n"
                    f"{self.tail(rank, since=state.timestamp)}"
                )
        waiting = sorted(
            r for r, s in states.items() if s is None or s.type.value in ("SCHEDULED", "PENDING")
        )
        if waiting and now - self.started > self.join_timeout_s:
            raise NodeFailedError(
                f"training node(s) {waiting} did not start within {self.join_timeout_s:.0f} s "
                f"(states: {[states[r].name if states[r] else None for r in waiting]}); is a "
                f"worker polling the work pool of {self.deployment!r} for each node?"
            )
        return states

    def wait(self, timeout_s: float) -> None:
        """After node 0 finished: wait until every node run completed, or raise."""
        deadline = time.monotonic() + timeout_s
        while True:
            states = self.check(force=True)
            if all(s is not None and s.type.value == "COMPLETED" for s in states.values()):
                return
            if time.monotonic() > deadline:
                raise NodeFailedError(
                    f"node 0 finished but node runs {[(r, s.name) for r, s in states.items()]} "
                    f"did not complete within {timeout_s:.0f} s"
                )
            time.sleep(min(self.poll_s, 2.0))

    def tail(self, rank: int, since: Any = None, lines: int = TAIL_LINES) -> str:
        """The last *lines* log lines of node *rank*'s flow run, from the API. A run's last lines
        reach the API after its final state (the worker ships logs in batches): with *since*
        (that state's time), wait up to LOG_SETTLE_S for a line logged at or after it."""
        deadline = time.monotonic() + LOG_SETTLE_S
        while True:
            try:
                with get_client(sync_client=True) as client:
                    logs = client.read_logs(
                        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[self.ids[rank]])),
                        sort=LogSort.TIMESTAMP_DESC,
                        limit=lines,
                    )
            except Exception as exc:  # the failure itself matters more than its log tail
                return f"(could not read its logs: {exc})"
            settled = since is None or any(log.timestamp >= since for log in logs)
            if settled or time.monotonic() > deadline:
                return "\n".join(log.message for log in reversed(logs))
            time.sleep(0.5)

    def cancel_unfinished(self) -> list[int]:
        """Ask every node run that has not finished to cancel (the worker kills its process
        group; the server cancels at once a scheduled run no worker has taken); return their
        node ranks."""
        cancelled = []
        with get_client(sync_client=True) as client:
            for rank, run_id in self.ids.items():
                state = client.read_flow_run(run_id).state
                if state is not None and state.is_final():
                    continue
                # not forced: the server's orchestration turns Scheduled -> Cancelling into
                # Cancelled when no worker has the run, else it would wait for one forever
                client.set_flow_run_state(run_id, Cancelling())
                cancelled.append(rank)
        return cancelled

"""Delete the Jobs of runs cancelled before their pod started, and mark those runs Cancelled.

Prefect 3.9's workers kill a cancelled run's infrastructure only while they are still submitting
it (``PREFECT_WORKER_ENABLE_CANCELLATION``); once a Kubernetes Job is created its run is no longer
theirs, and a run that ``pod-never-started.yaml`` moves to Cancelling because its pod is Pending
keeps its Job (and the pod keeps waiting for NPUs) forever. Found against a real API server
(tests/k8s_real). This does what the worker would: for every Cancelling run of the pool that
never started, the Kubernetes worker's own ``kill_infrastructure`` deletes its Job, then the run
is marked Cancelled. Run it beside the worker, with the same kubeconfig or service account:

    python -m deployments.k8s.reap --pool irv2-ascend-k8s            # every 60 s until stopped
    python -m deployments.k8s.reap --pool irv2-ascend-k8s --once     # one pass
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

__all__ = ["reap_once"]


async def _cancelling_runs(client: Any, pool: str) -> list[Any]:
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
        WorkPoolFilter,
        WorkPoolFilterName,
    )
    from prefect.client.schemas.objects import StateType

    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CANCELLING]))
        ),
        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
    )
    return [run for run in runs if run.start_time is None]  # a run that started stops itself


async def reap_once(pool: str) -> list[str]:
    """One pass over *pool*; the ids of the runs whose Jobs were deleted and marked Cancelled."""
    from prefect_kubernetes.worker import KubernetesWorker

    reaped = []
    async with KubernetesWorker(work_pool_name=pool, create_pool_if_not_found=False) as worker:
        await worker.sync_with_backend()
        for run in await _cancelling_runs(worker.client, pool):
            await worker._cancel_run(run.id)  # the worker's own path: kill_infrastructure, mark
            reaped.append(str(run.id))
    return reaped


async def _loop(pool: str, every_s: float, once: bool) -> None:
    while True:
        for run_id in await reap_once(pool):
            print(f"{pool}: deleted the Job of cancelled run {run_id}", flush=True)
        if once:
            return
        await asyncio.sleep(every_s)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pool", default="irv2-ascend-k8s", help="the Kubernetes work pool")
    p.add_argument("--every", type=float, default=60.0, help="seconds between passes")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    args = p.parse_args(argv)
    asyncio.run(_loop(args.pool, args.every, args.once))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``irv2 gang-pod``: what each pod of a gang job runs (training/gang_pod.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def _run_gang_pod(args: argparse.Namespace) -> int:
    from irv2_core.errors import Irv2Error
    from irv2_core.training.gang_pod import RANK_ENV, PodJob, pod_config, run_pod

    rank = args.node_rank if args.node_rank is not None else os.environ.get(RANK_ENV)
    if rank is None:
        raise Irv2Error(f"no node rank: {RANK_ENV} is unset (Volcano's env plugin sets it in "
                        "the gang's pods) and --node-rank was not given")  # fmt: skip
    job = PodJob(
        store_uri=args.store_uri, endpoint_url=args.endpoint_url, data_prefix=args.data_prefix,
        fingerprint=args.fingerprint, run_id=args.run_id, workdir=Path(args.workdir),
        nodes=args.nodes, npus_per_node=args.npus_per_node, master_addr=args.master_addr,
        master_port=args.master_port, join_timeout_s=args.join_timeout_s,
        stop_grace_s=args.stop_grace_s, accept_stack_change=args.accept_stack_change,
    )  # fmt: skip
    return run_pod(job, int(rank), pod_config(), on_line=lambda line: print(line, flush=True))


def add_gang_pod(subparsers: argparse._SubParsersAction) -> None:
    """Register ``irv2 gang-pod --nodes N --npus-per-node n --master-addr A ...``."""
    p = subparsers.add_parser(
        "gang-pod",
        help="one pod of a multi-node gang job (the train task submits the gang)",
        description="Fetch the MindRecord conversion from the store, run this node's multi-node "
        "msrun (rank from VC_TASK_INDEX, config from IRV2_GANG_CONFIG) and, on node 0, publish "
        "the run's outputs under gang/<run-id> in the store.",
    )
    p.add_argument("--nodes", type=int, required=True, help="pods in the gang")
    p.add_argument("--npus-per-node", type=int, required=True, help="devices per pod")
    p.add_argument("--master-addr", required=True, help="pod 0's address")
    p.add_argument("--master-port", type=int, default=8118)
    p.add_argument("--join-timeout-s", type=float, default=600.0)
    p.add_argument("--stop-grace-s", type=float, default=60.0)
    p.add_argument("--workdir", required=True, help="this pod's own folder")
    p.add_argument("--store-uri", required=True, help="the flow's output_uri")
    p.add_argument("--endpoint-url", help="S3-compatible endpoint (MinIO, OBS)")
    p.add_argument("--data-prefix", required=True, help="the conversion's prefix in the store")
    p.add_argument("--fingerprint", required=True, help="the conversion's fingerprint")
    p.add_argument("--run-id", required=True, help="the run folder's name (run-<digest>)")
    p.add_argument("--accept-stack-change", action="store_true",
                   help="resume a checkpoint written on another software stack")  # fmt: skip
    p.add_argument("--node-rank", type=int, help="default: VC_TASK_INDEX")
    p.set_defaults(func=_run_gang_pod)

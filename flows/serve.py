"""``irv2 serve``: serve the deployments of ``deployments/prefect.yaml`` from this process.

No work pool or worker is needed: Prefect's ``serve`` registers the deployments with the API
(``PREFECT_API_URL``, e.g. a ``prefect server start``) and runs their flow runs here, on schedule
or on ``prefect deployment run train-eval-export/<name>`` (or ``re-evaluate/evaluate`` ...).
``prefect.yaml`` (shipped in the ``deployments`` package) stays the one definition of names,
parameters and schedules.
"""

from __future__ import annotations

import argparse
from typing import Any

from prefect import serve
from prefect.schedules import Cron

from deployments import PREFECT_YAML, load_deployment_specs
from flows.rerun import re_evaluate, re_export, re_report
from flows.rollback import rollback_model
from flows.train_eval_export import train_eval_export
from flows.train_node import train_node

__all__ = [
    "PROCESS_POOL",
    "add_serve",
    "build_deployments",
    "flow_of",
    "serve_deployments",
    "served",
]

PROCESS_POOL = "irv2-process"  # the deployments irv2 serve runs itself (others: --only)
NODE_ENTRYPOINT = "train_node.py:train_node"  # a node needs its own machine: a worker per node
# the flow of each entrypoint that prefect.yaml names (train-eval-export when none matches)
FLOWS = {
    NODE_ENTRYPOINT: train_node,
    "rerun.py:re_evaluate": re_evaluate,
    "rerun.py:re_export": re_export,
    "rerun.py:re_report": re_report,
    "rollback.py:rollback_model": rollback_model,
}


def flow_of(spec: dict[str, Any]) -> Any:
    """The flow function of the prefect.yaml entry *spec* (by its entrypoint)."""
    entrypoint = spec.get("entrypoint", "")
    return next((f for e, f in FLOWS.items() if entrypoint.endswith(e)), train_eval_export)


def build_deployments(specs: list[dict[str, Any]]) -> list[Any]:
    """RunnerDeployments of the flow for prefect.yaml entries (name, parameters, cron)."""
    deployments = []
    for spec in specs:
        schedules = [
            Cron(s["cron"], timezone=s.get("timezone", "UTC"))
            for s in spec.get("schedules") or []
            if "cron" in s
        ]
        deployments.append(
            flow_of(spec).to_deployment(
                name=spec["name"],
                description=(spec.get("description") or "").strip() or None,
                parameters=spec.get("parameters") or {},
                schedules=schedules or None,
                concurrency_limit=spec.get("concurrency_limit"),
            )
        )
    return deployments


def serve_deployments(specs: list[dict[str, Any]], limit: int = 1) -> None:
    """Register the deployments with the API and run their flow runs here until interrupted."""
    serve(*build_deployments(specs), limit=limit)


def served(specs: list[dict[str, Any]], named: bool) -> list[dict[str, Any]]:
    """The specs this process serves: all that were *named* (``--only``), else those on the
    process work pool; a Kubernetes deployment is run by its pool's worker, not here, and a
    train-node deployment by one worker per node."""
    if named:
        return specs
    return [
        s
        for s in specs
        if (s.get("work_pool") or {}).get("name", PROCESS_POOL) == PROCESS_POOL
        and not s.get("entrypoint", "").endswith(NODE_ENTRYPOINT)
    ]


def _run_serve(args: argparse.Namespace) -> int:
    specs = load_deployment_specs(args.file, args.only)
    chosen = served(specs, bool(args.only))
    if args.list:
        for spec in specs:
            note = "" if spec in chosen else f" [work pool {spec['work_pool']['name']}: not served]"
            print(
                f"{spec['name']}: {(spec.get('description') or '').strip().split(chr(10))[0]}{note}"
            )
        return 0
    serve_deployments(chosen, limit=args.limit)
    return 0


def add_serve(subparsers: Any) -> None:
    """Register ``irv2 serve [--only NAME ...] [--file prefect.yaml] [--limit N] [--list]``."""
    p = subparsers.add_parser("serve", help="serve the Prefect deployments from this process")
    p.add_argument("--file", default=str(PREFECT_YAML), help="prefect.yaml with the deployments")
    p.add_argument("--only", nargs="+", metavar="NAME", help="serve only these deployments")
    p.add_argument("--limit", type=int, default=1, help="flow runs at a time (default 1)")
    p.add_argument("--list", action="store_true", help="list the deployments and exit")
    p.set_defaults(func=_run_serve)

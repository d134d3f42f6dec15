"""Serving the train-eval-export deployments from one process (what ``irv2 serve`` runs)."""

from __future__ import annotations

from typing import Any

from prefect import serve
from prefect.schedules import Cron

from flows.train_eval_export import train_eval_export

__all__ = ["build_deployments", "serve_deployments"]


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
            train_eval_export.to_deployment(
                name=spec["name"],
                description=(spec.get("description") or "").strip() or None,
                parameters=spec.get("parameters") or {},
                schedules=schedules or None,
            )
        )
    return deployments


def serve_deployments(specs: list[dict[str, Any]], limit: int = 1) -> None:
    """Register the deployments with the API and run their flow runs here until interrupted."""
    serve(*build_deployments(specs), limit=limit)

"""The Kubernetes work pool for Ascend 910 nodes: its base job template and an offline renderer.

``ascend-job-template.json`` is what ``prefect work-pool create irv2-ascend-k8s --type kubernetes
--base-job-template deployments/k8s/ascend-job-template.json`` takes; :mod:`deployments.k8s.render`
renders the Job that a Kubernetes worker would submit for a deployment of ``prefect.yaml``, without
an API server or a cluster (``python -m deployments.k8s.render``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["JOB_TEMPLATE"]

JOB_TEMPLATE = Path(__file__).resolve().with_name("ascend-job-template.json")

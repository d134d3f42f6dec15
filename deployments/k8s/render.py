"""Render, offline, the Kubernetes Job that the worker of ``irv2-ascend-k8s`` would submit.

The rendering is prefect-kubernetes' own: the base job template's defaults, overlaid with a
deployment's ``job_variables`` (as Prefect's server checks them, required variables included), go
through ``KubernetesWorkerJobConfiguration.from_template_and_values`` and ``prepare_for_flow_run``
with client-side Prefect objects standing in for the flow run, the deployment and the flow. No API
server and no cluster are contacted; a template that refers to ``prefect.blocks.*`` or
``prefect.variables.*`` would need the API and is refused.

    IRV2_IMAGE=REGISTRY/irv2/irv2-ascend:0.1.0 python -m deployments.k8s.render  # the Job, JSON
    python -m deployments.k8s.render --set image=REGISTRY/irv2/irv2-ascend:0.1.0 \\
        | kubectl apply --dry-run=server --validate=warn -f -   # a cluster's API server judges it

(``--validate=warn``: prefect-kubernetes puts ``parallelism``/``completions`` in the pod spec, which
the API server drops with a warning; the worker submits them the same way.)

The flow run id and name in the output are made up: use it to check the manifest, not to run it.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import sys
import uuid
from pathlib import Path
from typing import Any

from deployments import PREFECT_YAML, load_deployment_specs
from deployments.k8s import JOB_TEMPLATE
from irv2_core.errors import Irv2Error

__all__ = [
    "deployment_job_variables",
    "load_template",
    "render_job_manifest",
    "resolve_job_variables",
]

DEPLOYMENT = "ascend-8p-k8s"
FLOW_NAME = "train-eval-export"


def load_template(path: str | Path = JOB_TEMPLATE) -> dict[str, Any]:
    """The base job template (``{"job_configuration": ..., "variables": ...}``) in *path*."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise Irv2Error(f"cannot read {path}: {exc.strerror}") from None


def deployment_job_variables(
    name: str = DEPLOYMENT, prefect_yaml: str | Path = PREFECT_YAML
) -> dict[str, Any]:
    """``work_pool.job_variables`` of the deployment *name* in *prefect_yaml*, with ``{{ $VAR }}``
    placeholders filled from the environment as ``prefect deploy`` fills them (unset: empty)."""
    from prefect.utilities.templating import apply_values

    (spec,) = load_deployment_specs(prefect_yaml, [name])
    values = copy.deepcopy((spec.get("work_pool") or {}).get("job_variables") or {})
    return apply_values(values, {}, remove_notset=True)


def resolve_job_variables(template: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The template's defaults overlaid with *values*, checked as Prefect's server checks a flow
    run's job variables (types, and required variables such as ``image``); Irv2Error otherwise."""
    from prefect.utilities.schema_tools import ValidationError, is_valid_schema, validate

    schema = template["variables"]
    is_valid_schema(schema, preprocess=False)
    merged = {
        k: v["default"]
        for k, v in schema.get("properties", {}).items()
        if v.get("default") is not None
    }
    merged.update(values)
    try:
        validate(
            merged,
            schema,
            raise_on_error=True,
            preprocess=True,
            ignore_required=False,
            allow_none_with_default=True,
        )
    except ValidationError as exc:
        raise Irv2Error(f"job variables do not fit the work pool's template: {exc}") from None
    return merged


class _NoApi:
    """Stands in for the Prefect client: offline rendering must not look anything up."""

    def __getattr__(self, name: str) -> Any:
        raise Irv2Error(
            f"rendering offline, but the template needs the Prefect API ({name}); "
            "prefect.blocks.* and prefect.variables.* placeholders cannot be resolved here"
        )


def render_job_manifest(
    template: dict[str, Any],
    values: dict[str, Any],
    *,
    deployment_name: str = DEPLOYMENT,
    work_pool_name: str = "irv2-ascend-k8s",
) -> dict[str, Any]:
    """The Job manifest prefect-kubernetes builds from *template* and the job variables *values*."""
    from prefect.client.schemas.objects import Flow, FlowRun, WorkPool
    from prefect.client.schemas.responses import DeploymentResponse
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    resolve_job_variables(template, values)  # fail here, naming the variable, not in the cluster
    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            copy.deepcopy(template), copy.deepcopy(values), client=_NoApi()
        )
    )
    flow = Flow(id=uuid.uuid4(), name=FLOW_NAME)
    deployment = DeploymentResponse(id=uuid.uuid4(), name=deployment_name, flow_id=flow.id)
    flow_run = FlowRun(
        id=uuid.uuid4(), name="offline-render", flow_id=flow.id, deployment_id=deployment.id
    )
    work_pool = WorkPool(name=work_pool_name, type="kubernetes", base_job_template=template)
    config.prepare_for_flow_run(
        flow_run=flow_run,
        deployment=deployment,
        flow=flow,
        work_pool=work_pool,
        worker_name="offline-render",
    )
    return config.job_manifest


def _parse_set(items: list[str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise Irv2Error(f"--set expects NAME=VALUE, got {item!r}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            values[key] = raw  # a bare string
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m deployments.k8s.render",
        description="Print the Kubernetes Job a deployment would run as (JSON), offline.",
    )
    p.add_argument("--deployment", default=DEPLOYMENT, help=f"default {DEPLOYMENT}")
    p.add_argument("--prefect-file", default=str(PREFECT_YAML), help="prefect.yaml to read")
    p.add_argument("--template", default=str(JOB_TEMPLATE), help="base job template (JSON)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a job variable (VALUE as JSON, else a string); repeatable",
    )
    args = p.parse_args(argv)
    try:
        values = deployment_job_variables(args.deployment, args.prefect_file)
        values.update(_parse_set(args.set))
        manifest = render_job_manifest(
            load_template(args.template), values, deployment_name=args.deployment
        )
    except Irv2Error as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    json.dump(manifest, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Ascend Kubernetes work pool: its base job template, the ascend-8p-k8s deployment, the Job.

Offline: the Job is rendered by prefect-kubernetes' own job configuration code
(``deployments.k8s.render``) and checked against the official Kubernetes client's batch/v1 models
in strict mode (unknown field names and wrong types fail). No cluster and no Prefect API is used.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

# prefect-kubernetes and kubernetes are in the test extra: no skip when they are missing
from kubernetes.client import ApiClient, V1Affinity, V1Job, V1PersistentVolumeClaim
from pydantic import ValidationError as ModelError

from deployments import PREFECT_YAML, load_deployment_specs
from deployments.k8s import JOB_TEMPLATE
from deployments.k8s.render import (
    deployment_job_variables,
    load_template,
    main,
    render_job_manifest,
    resolve_job_variables,
)
from irv2_core.errors import Irv2Error

REPO = Path(__file__).resolve().parents[2]
NPU = "huawei.com/Ascend910"
# credentials a worker's environment might hold: none of them may reach the manifest
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAFAKEKEYID0123456",
    "AWS_SECRET_ACCESS_KEY": "fake-secret-Zx9Qw8Er7Ty6Ui5Op4",
    "AWS_SESSION_TOKEN": "fake-session-token-Lk3Jh2Gf1",
}


def _as_the_api_server_reads_it(manifest: dict) -> dict:
    """Two things prefect-kubernetes always produces, set straight for the client's models:
    - ``parallelism``/``completions`` in the pod spec: its manifest validator insists on them there
      (they are Job fields; the API server drops them from a pod spec with a warning);
    - NPU counts as JSON numbers: valid quantities for the API server, typed as strings there.
    """
    m = copy.deepcopy(manifest)
    pod = m["spec"]["template"]["spec"]
    assert (pod.pop("parallelism"), pod.pop("completions")) == (1, 1)
    for container in pod["containers"]:
        for kind in ("requests", "limits"):
            res = container.get("resources", {}).get(kind) or {}
            for key, value in res.items():
                if isinstance(value, int) and not isinstance(value, bool):
                    res[key] = str(value)
    return m


def strict_job(manifest: dict) -> V1Job:
    """*manifest* as the official client's V1Job, refusing unknown field names and wrong types.

    ``ApiClient().deserialize`` is not used: it drops unknown names silently (checked below).
    """
    return V1Job.model_validate(_as_the_api_server_reads_it(manifest))


@pytest.fixture(scope="module")
def template() -> dict:
    return load_template()


IMAGE = "registry.example.com/irv2/irv2-ascend:0.1.0"


@pytest.fixture(scope="module")
def job_vars() -> dict:
    """ascend-8p-k8s's job variables, deployed with IRV2_IMAGE set (prefect.yaml's image)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IRV2_IMAGE", IMAGE)
        return deployment_job_variables("ascend-8p-k8s")


@pytest.fixture(scope="module")
def rendered(template, job_vars):
    """The ascend-8p-k8s Job, rendered while the environment holds (fake) object-store keys."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in FAKE_CREDENTIALS.items():
            mp.setenv(key, value)
        manifest = render_job_manifest(template, job_vars)
    return manifest, strict_job(manifest)


def _pod(manifest: dict) -> dict:
    return manifest["spec"]["template"]["spec"]


def _container(manifest: dict) -> dict:
    (c,) = _pod(manifest)["containers"]
    return c


# --- the template as a work pool -------------------------------------------------------------


def test_template_is_accepted_for_a_kubernetes_work_pool(template):
    """What `prefect work-pool create --base-job-template` and the server check."""
    from prefect.server.api.validation import _validate_work_pool_job_variables
    from prefect.server.schemas.actions import WorkPoolCreate

    pool = WorkPoolCreate(name="irv2-ascend-k8s", type="kubernetes", base_job_template=template)
    assert pool.base_job_template["variables"]["required"] == ["image"]
    # the server's check of the defaults at work-pool creation (every default must fit its schema)
    asyncio.run(
        _validate_work_pool_job_variables(
            None, "irv2-ascend-k8s", template, ignore_required=True, ignore_invalid_defaults=False
        )
    )


def test_template_keeps_prefect_kubernetes_defaults(template):
    """Derived from the default: its job-configuration keys and variables are all still there."""
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    assert set(template["job_configuration"]) == set(default["job_configuration"])
    assert set(default["variables"]["properties"]) <= set(template["variables"]["properties"])


def test_the_worker_waits_for_a_large_image_longer_than_the_never_started_automation(template):
    """A CANN image takes minutes to pull: the worker's pod watch (60 s in prefect-kubernetes)
    outlasts the automation that cancels a pod that never starts, which acts first, saying why."""
    import yaml

    shipped = REPO / "deployments" / "k8s" / "pod-never-started.yaml"
    within = yaml.safe_load(shipped.read_text())["automations"][0]["trigger"]["within"]
    variables = template["variables"]["properties"]
    assert variables["pod_watch_timeout_seconds"]["default"] > within >= 600
    assert variables["termination_grace_period_seconds"]["default"] >= 120


# --- the rendered Job ------------------------------------------------------------------------


def test_rendered_job_is_a_valid_batch_v1_job(rendered):
    manifest, job = rendered
    assert (job.api_version, job.kind) == ("batch/v1", "Job")
    assert job.spec.template.spec.restart_policy == "Never"
    assert manifest["spec"]["backoffLimit"] == 0
    assert job.spec.template.spec.containers[0].args == ["prefect", "flow-run", "execute"]


def test_strict_check_fails_on_broken_manifests(rendered):
    manifest, _ = rendered
    typo = copy.deepcopy(manifest)
    _container(typo)["volumeMounts"][0]["mountpath"] = _container(typo)["volumeMounts"][0].pop(
        "mountPath"
    )
    wrong_type = copy.deepcopy(manifest)
    wrong_type["spec"]["backoffLimit"] = "0"
    no_name = copy.deepcopy(manifest)
    del _container(no_name)["name"]
    optional_typo = copy.deepcopy(manifest)
    del _container(optional_typo)["volumeMounts"][0]["readOnly"]
    _container(optional_typo)["volumeMounts"][0]["readonly"] = True
    not_a_list = copy.deepcopy(manifest)
    _pod(not_a_list)["volumes"] = {"name": "dshm"}
    for broken, where in [
        (typo, "volumeMounts.0.mountpath"),
        (optional_typo, "volumeMounts.0.readonly"),
        (wrong_type, "backoffLimit"),
        (no_name, "containers.0.name"),
        (not_a_list, "volumes"),
    ]:
        with pytest.raises(ModelError, match=re.escape(where)):
            strict_job(broken)
    # why model_validate and not ApiClient().deserialize: the latter drops the typo silently
    job = ApiClient().deserialize(
        json.dumps(_as_the_api_server_reads_it(optional_typo)), "V1Job", "application/json"
    )
    assert job.spec.template.spec.containers[0].volume_mounts[0].read_only is None


def test_npus_are_requested_and_limited_alike(rendered, job_vars):
    manifest, job = rendered
    res = job.spec.template.spec.containers[0].resources
    assert res.requests[NPU] == res.limits[NPU] == "8"
    assert _container(manifest)["resources"]["limits"][NPU] == job_vars["npu_count"] == 8
    assert (res.requests["cpu"], res.limits["cpu"]) == ("64", "96")
    assert (res.requests["memory"], res.limits["memory"]) == ("256Gi", "384Gi")


def test_driver_add_ons_shm_and_data_are_mounted(rendered):
    _, job = rendered
    pod = job.spec.template.spec
    volumes = {v.name: v for v in pod.volumes}
    mounts = {m.name: m for m in pod.containers[0].volume_mounts}
    assert set(volumes) == set(mounts) == {"ascend-driver", "ascend-add-ons", "dshm", "irv2-data"}
    for name, path in [
        ("ascend-driver", "/usr/local/Ascend/driver"),
        ("ascend-add-ons", "/usr/local/Ascend/add-ons"),
    ]:
        assert volumes[name].host_path.path == mounts[name].mount_path == path
        assert volumes[name].host_path.type == "Directory"
        assert mounts[name].read_only is True
    assert mounts["dshm"].mount_path == "/dev/shm"
    assert volumes["dshm"].empty_dir.medium == "Memory"
    assert volumes["dshm"].empty_dir.size_limit == "64Gi"
    assert volumes["irv2-data"].persistent_volume_claim.claim_name == "irv2-data"
    assert mounts["irv2-data"].mount_path == "/data/irv2"
    assert pod.security_context.fs_group == 1000


def test_object_store_credentials_come_only_from_the_secret(rendered):
    manifest, job = rendered
    container = job.spec.template.spec.containers[0]
    assert [e.secret_ref.name for e in container.env_from] == ["irv2-object-store"]
    env_names = {e.name for e in container.env}
    assert not env_names & set(FAKE_CREDENTIALS), env_names
    text = json.dumps(manifest)
    for key, value in FAKE_CREDENTIALS.items():
        assert value not in text, f"{key}'s value is in the rendered manifest"
    # nor in what is checked in
    for path in (JOB_TEMPLATE, PREFECT_YAML):
        assert not re.search(r"AWS_SECRET_ACCESS_KEY\s*[:=]", path.read_text()), path


def test_node_selector_and_image(rendered):
    _, job = rendered
    pod = job.spec.template.spec
    assert pod.node_selector == {"accelerator-type": "module"}
    assert pod.containers[0].image == IMAGE


def test_image_comes_from_irv2_image_at_deploy_time(monkeypatch, template):
    monkeypatch.delenv("IRV2_IMAGE", raising=False)
    values = deployment_job_variables("ascend-8p-k8s")
    assert values["image"] == ""  # what prefect deploy makes of an unset variable
    with pytest.raises(Irv2Error, match="Validation failed for field .image"):
        resolve_job_variables(template, values)


def test_optional_pod_fields_are_left_out_when_not_set(rendered):
    manifest, _ = rendered
    pod = _pod(manifest)
    for key in ("schedulerName", "affinity", "tolerations", "imagePullSecrets"):
        assert key not in pod, key
    assert "serviceAccountName" not in pod
    assert "ttlSecondsAfterFinished" not in manifest["spec"]


def test_scheduler_affinity_and_friends_when_set(template, job_vars):
    affinity = {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": "accelerator-type", "operator": "In", "values": ["card"]}
                        ]
                    }
                ]
            }
        }
    }
    values = {
        **job_vars,
        "scheduler_name": "volcano",
        "node_selector": {},
        "affinity": affinity,
        "tolerations": [{"key": "huawei.com/Ascend910", "operator": "Exists"}],
        "image_pull_secrets": [{"name": "ascendhub-pull"}],
        "service_account_name": "irv2-runner",
        "namespace": "irv2",
        "object_store_secret": "obs-keys",
        "shm_size": "128Gi",
        "npu_count": 4,
    }
    manifest = render_job_manifest(template, values)
    job = strict_job(manifest)
    pod = job.spec.template.spec
    assert pod.scheduler_name == "volcano"
    assert pod.affinity == V1Affinity.model_validate(affinity)
    assert pod.node_selector == {}
    assert pod.tolerations[0].key == NPU
    assert pod.image_pull_secrets[0].name == "ascendhub-pull"
    assert pod.service_account_name == "irv2-runner"
    assert job.metadata.namespace == "irv2"
    assert pod.containers[0].env_from[0].secret_ref.name == "obs-keys"
    assert pod.containers[0].resources.limits[NPU] == pod.containers[0].resources.requests[NPU]
    assert pod.containers[0].resources.limits[NPU] == "4"
    assert {v.name: v for v in pod.volumes}["dshm"].empty_dir.size_limit == "128Gi"


# --- required variables and bad values fail clearly ------------------------------------------


def test_missing_image_fails_clearly(template, job_vars):
    from prefect.server.api.validation import _validate_work_pool_job_variables
    from prefect.utilities.schema_tools import ValidationError

    values = {k: v for k, v in job_vars.items() if k != "image"}
    with pytest.raises(Irv2Error, match="'image' is a required property"):
        resolve_job_variables(template, values)
    with pytest.raises(Irv2Error, match="'image' is a required property"):
        render_job_manifest(template, values)
    # the same check Prefect's server makes when a flow run of the deployment is created
    with pytest.raises(ValidationError, match="'image' is a required property"):
        asyncio.run(
            _validate_work_pool_job_variables(
                None, "irv2-ascend-k8s", template, values, ignore_required=False
            )
        )
    # why it matters: prefect-kubernetes alone would quietly fall back to Prefect's own image
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = asyncio.run(
        KubernetesWorkerJobConfiguration.from_template_and_values(
            copy.deepcopy(template), values, client=object()
        )
    )
    assert "image" not in _container(config.job_manifest)


@pytest.mark.parametrize(
    ("name", "value"),
    [("npu_count", 0), ("npu_count", "8"), ("scheduler_name", ""), ("object_store_secret", ""),
     ("image", ""), ("node_selector", {"accelerator-type": 1})],
)  # fmt: skip
def test_bad_job_variables_fail_clearly(template, job_vars, name, value):
    with pytest.raises(Irv2Error, match=f"Validation failed for field .{name}"):
        resolve_job_variables(template, {**job_vars, name: value})


def test_render_cli(capsys, monkeypatch):
    monkeypatch.delenv("IRV2_IMAGE", raising=False)
    assert main(["--set", "image=reg.example/irv2:1", "--set", "npu_count=2"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert _container(manifest)["image"] == "reg.example/irv2:1"
    assert _container(manifest)["resources"]["requests"][NPU] == 2
    assert main(["--set", "npu_count=0"]) == 2
    assert "npu_count" in capsys.readouterr().err


# --- the deployment, the PVC and the images agree ---------------------------------------------


def test_deployment_runs_the_ascend_8p_recipe_on_the_k8s_pool(job_vars):
    specs = {s["name"]: s for s in load_deployment_specs()}
    k8s, process = specs["ascend-8p-k8s"], specs["ascend-8p"]
    assert k8s["work_pool"]["name"] == "irv2-ascend-k8s"
    assert k8s["entrypoint"] == process["entrypoint"]
    assert k8s["parameters"] == process["parameters"]
    assert job_vars["npu_count"] == k8s["parameters"]["device_num"]
    mount = "/data/irv2"  # data_mount_path's default
    assert k8s["parameters"]["workdir"].startswith(mount + "/")
    assert job_vars["env"]["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].startswith(mount + "/")
    (step,) = k8s["pull"]
    assert step["prefect.deployments.steps.set_working_directory"]["directory"] == "/opt/irv2"
    assert not any("AWS" in str(k) for k in job_vars.get("env", {}))


def test_data_pvc_manifest_is_valid_and_matches(template):
    pvc = V1PersistentVolumeClaim.model_validate(
        yaml.safe_load((REPO / "deployments" / "k8s" / "data-pvc.yaml").read_text())
    )
    assert pvc.metadata.name == template["variables"]["properties"]["data_pvc"]["default"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.ascend"])
def test_dockerfiles_put_the_code_where_the_pull_step_looks(dockerfile):
    text = (REPO / "docker" / dockerfile).read_text()
    assert "WORKDIR /opt/irv2" in text
    for part in ("irv2_core", "tasks", "flows", "deployments"):
        assert f"COPY {part} ./{part}" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and not users[-1].startswith(("root", "0")), users  # runs as non-root
    if dockerfile == "Dockerfile.cpu":
        assert "FROM python:3.11-slim" in text
        assert not re.search(r"^(ENTRYPOINT|CMD)", text, flags=re.M)
    else:
        assert re.search(r"^ARG BASE=\S+", text, flags=re.M)
        assert "FROM ${BASE}" in text


def test_ascend_entrypoint_is_valid_bash():
    script = REPO / "docker" / "ascend-entrypoint.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert 'exec "$@"' in script.read_text()

"""The Volcano gang: its manifest, the pods' command line as the pods parse it, following pod 0's
log, and how the train task's wait on it ends (irv2_core/training/gang*.py). Against a real API
server: tests/k8s_real/test_volcano_gang.py; the pods' training: tests/integration/
test_gang_pods.py."""

from __future__ import annotations

import json

import pytest

from flows.params import validate_params
from irv2_core.cli import build_parser
from irv2_core.errors import Irv2Error
from irv2_core.training.gang import GangOptions, GangSpec, master_addr, pod_command, volcano_job
from irv2_core.training.gang_pod import CONFIG_ENV, gang_spec, pod_config
from irv2_core.training.gang_watch import GangFailed, GangLimits, GangNotStarted, run_gang

STORE = {"uri": "s3://bucket/irv2", "endpoint_url": "http://obs.example.com"}
LIMITS = {"join_timeout_s": 300.0, "stop_grace_s": 60.0, "accept_stack_change": True}


def _spec(**kw) -> GangSpec:
    launch = {"device_num": 8, "num_nodes": 4, "master_port": 9000, **kw.pop("launch", {})}
    return gang_spec("run-0123456789ab", {"lr_max": 0.1, "batch_size": 32}, launch, STORE,
                     ("mindrecord/f00d", "fp-1"), GangOptions(image="reg/irv2:1", **kw),
                     LIMITS)  # fmt: skip


def test_the_gang_is_all_nodes_at_once_and_restarts_whole():
    job = volcano_job(_spec(queue="npu"))
    spec = job["spec"]
    assert job["apiVersion"] == "batch.volcano.sh/v1alpha1" and spec["minAvailable"] == 4
    assert (job["metadata"]["name"], spec["queue"]) == ("irv2-run-0123456789ab", "npu")
    assert {"event": "PodEvicted", "action": "RestartJob"} in spec["policies"]
    assert set(spec["plugins"]) == {"env", "svc"} and spec["tasks"][0]["replicas"] == 4
    pod = spec["tasks"][0]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"] == {"huawei.com/Ascend910": "8"}
    assert container["envFrom"] == [{"secretRef": {"name": "irv2-object-store"}}]
    # each pod its own scratch (no ReadWriteOnce claim shared by N nodes), time to save on SIGTERM
    assert {v["name"] for v in pod["volumes"]} == {"dshm", "scratch"}
    assert pod["terminationGracePeriodSeconds"] == 120


def test_the_pods_read_back_exactly_what_the_task_asked_for():
    spec = _spec()
    command = pod_command(spec)
    assert command[:4] == ["python", "-m", "irv2_core", "gang-pod"]
    args = build_parser("gang-pod").parse_args(command[3:])
    assert master_addr(spec) == "irv2-run-0123456789ab-worker-0.irv2-run-0123456789ab.default.svc.cluster.local"  # fmt: skip # noqa: E501
    assert (args.nodes, args.npus_per_node, args.master_addr, args.master_port) == (
        4, 8, master_addr(spec), 9000)  # fmt: skip
    assert (args.store_uri, args.endpoint_url) == (STORE["uri"], STORE["endpoint_url"])
    assert (args.data_prefix, args.fingerprint, args.run_id) == ("mindrecord/f00d", "fp-1",
                                                                 "run-0123456789ab")  # fmt: skip
    assert (args.join_timeout_s, args.stop_grace_s, args.accept_stack_change) == (300, 60, True)
    env = {e["name"]: e["value"] for e in volcano_job(spec)["spec"]["tasks"][0]["template"][
        "spec"]["containers"][0]["env"]}  # fmt: skip
    assert pod_config(env) == {"lr_max": 0.1, "batch_size": 32}
    assert "AWS_SECRET" not in json.dumps(volcano_job(spec))  # keys come from the Secret only


def test_a_pod_without_its_config_says_so():
    with pytest.raises(Irv2Error, match=f"{CONFIG_ENV} must hold the run's config"):
        pod_config({CONFIG_ENV: "[1, 2]"})
    with pytest.raises(Irv2Error, match=CONFIG_ENV):
        pod_config({})


@pytest.mark.parametrize("bad", [dict(name="Irv2_Job"), dict(name="x" * 60), dict(nodes=1)])
def test_a_gang_that_cannot_be_named_or_is_no_gang_is_refused(bad):
    base = dict(name="irv2-r1", image="reg/irv2:1", nodes=4, npus_per_node=8, pod_args=[])
    with pytest.raises(Irv2Error):
        GangSpec(**{**base, **bad})


def test_the_flow_refuses_a_gang_without_nodes_or_a_store(tmp_path):
    base = dict(source="s3://data/imagenet", gang={"image": "reg/irv2:1"})
    for values in ({}, {"num_nodes": 2}, {"output_uri": "s3://out/irv2"}):
        with pytest.raises(Irv2Error, match="gang: a gang trains num_nodes >= 2 pods"):
            validate_params(**base, **values)
    params = validate_params(**base, num_nodes=2, output_uri="s3://out/irv2")
    assert params.gang.start_timeout_s == 1800
    with pytest.raises(Irv2Error, match="gang.image"):
        validate_params(source="s3://d/i", num_nodes=2, output_uri="s3://o", gang={"queue": "q"})


class _Gang:
    """A gang whose API answers are scripted: phases in turn, pod 0's log as it grows."""

    def __init__(self, phases: list[str], logs: list[str] | None = None) -> None:
        self.spec = _spec()
        self.phases, self.logs = list(phases), list(logs or [])
        self.calls: list[str] = []

    def submit(self, replace_s: float = 0.0) -> dict:
        self.calls.append("submit")
        return {}

    def phase(self) -> str:
        return self.phases.pop(0) if len(self.phases) > 1 else self.phases[0]

    def pod_log(self, index: int = 0, since_s: int | None = None) -> str:
        return self.logs.pop(0) if self.logs else ""

    def pod_reasons(self) -> list[str]:
        return ["irv2-run-0123456789ab-worker-1: Unschedulable: 0/3 nodes are available"]

    def delete(self) -> None:
        self.calls.append("delete")


FAST = GangLimits(start_timeout_s=0.2, poll_s=0.01)


def test_pod_0s_log_reaches_the_task_once_each_line_across_overlapping_reads():
    # the API trims trailing zeros of the nanoseconds: .5 is later than .123456789
    logs = ["2026-12-06T10:00:00.123456789Z step 1\n2026-12-06T10:00:00.5Z step 2\n",
            "2026-12-06T10:00:00.5Z step 2\n2026-12-06T10:00:00.51Z step 3\n",
            "2026-12-06T10:00:00.51Z step 3\n2026-12-06T10:00:01Z step 4\n"
            "2026-12-06T10:00:01Z step 4b\n2026-12-06T10:00:01.2Z step 5\n"]  # fmt: skip
    gang, lines = _Gang(["Running", "Running", "Running", "Completed"], logs), []
    assert run_gang(gang, FAST, lines.append) == "Completed"
    steps = [x for x in lines if x.startswith("step")]
    assert steps == ["step 1", "step 2", "step 3", "step 4", "step 4b", "step 5"]
    assert gang.calls == ["submit", "delete"]


def test_a_gang_with_no_room_is_deleted_after_its_start_timeout_naming_why():
    gang = _Gang(["Pending"])
    with pytest.raises(GangNotStarted, match=r"still Pending after 0.2 s .*Unschedulable"):
        run_gang(gang, FAST, lambda line: None)
    assert gang.calls == ["submit", "delete"]


def test_a_failed_gang_fails_the_task_with_its_pods_reasons_and_is_deleted():
    gang = _Gang(["Running", "Failed"])
    with pytest.raises(GangFailed, match="Failed: irv2-run-0123456789ab-worker-1"):
        run_gang(gang, FAST, lambda line: None)
    assert gang.calls == ["submit", "delete"]


def test_whatever_stops_the_wait_deletes_the_gang():
    class Cancelled(BaseException):  # as Prefect's cancellation reaches the task
        pass

    def cancel() -> None:
        raise Cancelled()

    gang = _Gang(["Running"])
    with pytest.raises(Cancelled):
        run_gang(gang, FAST, lambda line: None, check=cancel)
    assert gang.calls == ["submit", "delete"]

"""The flows' parameters and the shipped deployments: field-named errors before any stage, and
every deployment's parameters pass the same validation."""

from __future__ import annotations

import pytest

from deployments import load_deployment_specs
from flows.params import validate_params
from flows.serve import build_deployments, served
from irv2_core.errors import Irv2Error


def test_invalid_parameters_name_the_field(tmp_path):
    with pytest.raises(Irv2Error) as exc:
        validate_params(
            source=str(tmp_path / "missing"),
            overrides={"batch_size": 0},
            export_formats=["ONNX", "PNG"],
            device_num=0,
        )
    text = str(exc.value)
    assert "source:" in text and "neither an s3:// URI nor an existing local folder" in text
    assert "export_formats.1:" in text and "device_num:" in text
    with pytest.raises(Irv2Error, match=r"overrides: .*batch_size"):
        validate_params(source=str(tmp_path), overrides={"batch_size": 0})
    with pytest.raises(Irv2Error, match="AIR needs device_target Ascend"):
        validate_params(source="s3://b/p", export_formats=["AIR"])
    ok = validate_params(source="s3://bucket/prefix", overrides={"batch_size": 2})
    assert ok.resolve_config().batch_size == 2 and ok.export_formats == ["MINDIR", "ONNX"]


def test_deployments_file_defines_the_deployments():
    specs = load_deployment_specs()
    names = ["local", "nightly-retrain", "ascend-8p", "ascend-8p-k8s", "ascend-2x8p-gang",
             "evaluate", "export", "report", "rollback", "process"]  # fmt: skip
    assert [s["name"] for s in specs] == names
    node_spec = specs.pop()  # train-node/process: one node of a multi-node job
    rollback = specs.pop()  # rollback: an earlier model back in service
    assert rollback in served(load_deployment_specs(), named=False)
    assert node_spec["entrypoint"] == "flows/train_node.py:train_node"
    assert node_spec not in served(load_deployment_specs(), named=False)
    reruns = specs[-3:]  # re-evaluate/evaluate, re-export/export, re-report/report
    assert all(s in served(load_deployment_specs(), named=False) for s in reruns)
    for spec in specs[:-3]:  # every deployment's parameters pass the flow's validation
        validate_params(**{"source": "s3://bucket/prefix", **spec["parameters"]})
    deployments = {d.name: d for d in build_deployments(specs)}
    assert {n: deployments[n].flow_name for n in ("evaluate", "export", "report")} == {
        "evaluate": "re-evaluate", "export": "re-export", "report": "re-report"}  # fmt: skip
    assert build_deployments([rollback])[0].flow_name == "rollback"
    assert deployments["nightly-retrain"].schedules[0].schedule.cron == "0 2 * * *"
    # one run of a deployment at a time: a second (schedule or manual) queues
    assert all(d.concurrency_limit == 1 for d in deployments.values())
    assert deployments["ascend-8p"].parameters["device_num"] == 8
    assert deployments["ascend-8p"].parameters["preset"] == "zoo-ascend-8p"
    gang = deployments["ascend-2x8p-gang"].parameters
    assert (gang["num_nodes"], gang["gang"]["image"]) == (2, "{{ $IRV2_IMAGE }}")
    assert deployments["local"].entrypoint.endswith("train_eval_export.py:train_eval_export")
    with pytest.raises(Irv2Error, match="no deployment named nope"):
        load_deployment_specs(names=["nope"])


def test_demo_settings_pass_the_flow_validation(tmp_path):
    from flows.demo import DEMO_PRESET

    params = validate_params(source=str(tmp_path), preset=DEMO_PRESET, device_target="CPU")
    cfg = params.resolve_config()
    assert cfg.image_size == 75 and cfg.device_target == "CPU" and cfg.amp_level == "O0"


def test_promotion_thresholds_out_of_range_fail_naming_the_parameter(tmp_path):
    with pytest.raises(Irv2Error) as exc:
        validate_params(source="s3://b/p", promote_alpha=0.7, promote_min_class_support=0)
    text = str(exc.value)
    assert "promote_alpha: Input should be less than 0.5" in text
    assert "promote_min_class_support:" in text
    with pytest.raises(Irv2Error, match="promote_approval"):
        validate_params(source="s3://b/p", promote_approval="sometimes")
    ok = validate_params(source="s3://b/p", promote_margin_points=1.0, promote_approval="always")
    assert ok.gate_rules().margin_points == 1.0 and ok.gate_rules().approval == "always"


def test_a_rate_card_or_budget_out_of_range_fails_naming_the_parameter(tmp_path):
    with pytest.raises(Irv2Error) as exc:
        validate_params(source=str(tmp_path), rate_card={"prices": {"tpu": 1.0, "cpu": -0.1}},
                        budget_device_hours=0)  # fmt: skip
    text = str(exc.value)
    assert "rate_card.prices: unknown device kinds ['tpu']" in text
    assert "budget_device_hours:" in text
    with pytest.raises(Irv2Error, match=r"negative prices for \['cpu'\]"):
        validate_params(source=str(tmp_path), rate_card={"prices": {"cpu": -0.1}})
    card = validate_params(source=str(tmp_path), rate_card={"prices": {"npu": 1.5}}).rate_card
    assert card.prices == {"npu": 1.5} and card.currency == "USD"


def test_the_meter_adds_device_hours_prices_them_and_keeps_the_budget():
    from irv2_core.runtime.cost import BudgetExceeded, Meter, RateCard, devices_held

    assert devices_held("Ascend", 8, nodes=2) == ("npu", 16)
    assert devices_held("CPU", 8)[0] == "cpu"
    meter = Meter(RateCard(prices={"npu": 2.0}), budget_device_hours=1.0)
    assert meter.record(1800, "npu", 1) == {"devices": "1 npu", "device_hours": 0.5, "cost": 1.0}
    assert meter.remaining_s(8) == pytest.approx(225.0)  # 0.5 h left over 8 devices
    meter.check("train")
    assert meter.record(3600, "cpu", 1)["cost"] == 0.0  # no price for cpu: free
    with pytest.raises(BudgetExceeded, match="1.5 device-hours spent, over the budget of 1"):
        meter.check("export-ONNX")
    assert meter.remaining_s(1) == 0.0
    assert Meter().totals() == {"device_hours": 0.0, "cost": None, "currency": None}


def test_the_rate_card_variable_is_read_and_checked(prefect_harness):
    """A workspace-wide rate card in a Prefect Variable (here under a name of this test's own:
    the session's server is shared with flow runs that must see none)."""
    import os

    from prefect.variables import Variable

    from tasks.costs import rate_card_variable

    name = f"irv2-rate-card-test-{os.getpid()}"
    assert rate_card_variable(name) is None
    Variable.set(name, {"prices": {"gpu": 2.5}, "currency": "CNY"})
    try:
        assert rate_card_variable(name).prices == {"gpu": 2.5}
        Variable.set(name, {"prices": {"tpu": 1}}, overwrite=True)
        with pytest.raises(Irv2Error, match=rf"Variable {name} is not a rate card.*tpu"):
            rate_card_variable(name)
    finally:
        Variable.unset(name)

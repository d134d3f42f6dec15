"""The train-eval-export flow on a real Prefect engine, with a tiny image set in a localhost S3.

One first run (whose training process gets SIGTERM mid-epoch, as a preempted pod's does: it
saves that step and exits, so the task's retry must resume there), then an unchanged second run
(all Cached), then a run after the MindRecord folder was deleted (convert runs again). 75 px,
3 classes, 6 training steps.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)
from support.flow_runs import (
    SignalTrainingAtHold,
    flow_result,
    flow_tables,
    publish_like_the_flow,
    resume_when_paused,
    task_runs,
    webhook_receiver,
)
from support.images import write_image_tree
from support.processes import wait_for
from support.training import FLOW_SMOKE, epoch_batch_digests, first_batches

from irv2_core.errors import Irv2Error
from irv2_core.runtime.hold import HELD, HOLD_ENV
from irv2_core.training.utilisation import EVERY_ENV as UTIL_EVERY_ENV

pytestmark = [pytest.mark.flow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BUCKET, PREFIX = "irv2-flow", "flowdata"
# One export format here: both (and their verification) are covered by test_export and test_demo
HEAVY = ("stage", "convert", "train", "evaluate", "export-MINDIR")
HOLD_STEP = 3  # the first run's training is held after this step (mid-epoch 2), then SIGTERMed


def train_eval_export_state(workdir: Path, endpoint: str, **extra):
    """The final state of a flow run on the test bucket (the smoke settings unless *extra*)."""
    from flows.train_eval_export import train_eval_export

    return train_eval_export(
        source=f"s3://{BUCKET}/{PREFIX}",
        workdir=str(workdir),
        endpoint_url=endpoint,
        return_state=True,
        **{"overrides": FLOW_SMOKE, "export_formats": ["MINDIR"], **extra},
    )


def _run_flow(workdir: Path, endpoint: str, **extra):
    state = train_eval_export_state(workdir, endpoint, **extra)
    return state, state.result()


@pytest.fixture(scope="module")
def dataset(s3_server, tmp_path_factory):
    import boto3

    s3_client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    root = tmp_path_factory.mktemp("flow-images")
    write_image_tree(root, 3, 8, seed=0, split="train")
    write_image_tree(root, 3, 3, seed=1, split="val")
    s3_client.create_bucket(Bucket=BUCKET)
    for f in sorted(root.rglob("*.jpg")):
        s3_client.upload_file(str(f), BUCKET, f"{PREFIX}/{f.relative_to(root).as_posix()}")
    return s3_server


@pytest.fixture(scope="module")
def first_run(prefect_harness, dataset, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("flow-work")
    hold = tmp_path_factory.mktemp("flow-hold")
    killer = SignalTrainingAtHold(workdir / "runs", hold)
    killer.start()
    started = time.perf_counter()
    try:
        with pytest.MonkeyPatch.context() as env:
            env.setenv(HOLD_ENV, f"{HOLD_STEP}:{hold}")
            env.setenv(UTIL_EVERY_ENV, "1")  # smoke training lasts seconds: sample every one
            state, summary = _run_flow(workdir, dataset)
    finally:
        killer.done.set()
    # later tests rerun the flow in this workdir and one replaces the current model: what this
    # run left is kept here, so no test's outcome depends on which of them ran before it
    return {
        "workdir": workdir,
        "state": state,
        "summary": summary,
        "seconds": time.perf_counter() - started,
        "stopped_at_step": killer.stopped_at_step,
        "current": json.loads((workdir / "models" / "default" / "current.json").read_text()),
        "report": Path(summary["report"]).read_text(),
    }


def test_flow_produces_metrics_exports_and_report(first_run, dataset):
    from irv2_core.data.stage import source_fingerprint

    summary, workdir = first_run["summary"], first_run["workdir"]
    # the numbers are eval.json's, over every one of the 9 val images (3 per class)
    evaluated = json.loads((Path(summary["run_dir"]) / "eval.json").read_text())
    assert evaluated["count"] == 9 and evaluated["classes"] == ["class_0", "class_1", "class_2"]
    assert [sum(row) for row in evaluated["confusion"]] == [3, 3, 3]
    hits = sum(evaluated["confusion"][k][k] for k in range(3))
    assert summary["top1"] == evaluated["top1"] == pytest.approx(hits / 9)
    assert summary["top5"] == evaluated["top5"] == 1.0  # 3 classes: always within the top 5
    assert [Path(p).name for p in summary["exports"]] == ["irv2.mindir"]
    for path in summary["exports"]:
        assert Path(path).is_file() and Path(path).parent == workdir / "exports"
    listing = source_fingerprint(f"s3://{BUCKET}/{PREFIX}", endpoint_url=dataset)
    assert summary["data_fingerprint"] == listing
    report = first_run["report"]
    assert summary["data_fingerprint"] in report and "irv2.mindir" in report
    # 3 classes at 75 px: the zoo's ImageNet-1k number is no reference for this run
    assert "No external reference applies" in report and "79.96" not in report
    # the first model of the deployment becomes the current one
    assert summary["promotion"]["promoted"], summary["promotion"]
    assert first_run["current"]["run_id"] == Path(summary["run_dir"]).name
    assert Path(summary["report_html"]).is_file()
    assert {k: v["state"] for k, v in summary["timings"].items() if k in HEAVY} == dict.fromkeys(
        HEAVY, "Completed"
    )
    # the UI's tables (README, "Running it with Prefect"): this run's metrics, exports, timings
    tables = flow_tables(first_run["state"].state_details.flow_run_id)
    assert sorted(tables) == ["irv2-exports", "irv2-final-metrics", "irv2-timings"], tables
    metrics = {row["metric"]: row["this run"] for row in tables["irv2-final-metrics"]}
    assert metrics["top1 (%)"] == pytest.approx(summary["top1"] * 100, abs=0.01), metrics
    exported = [(row["format"], row["path"]) for row in tables["irv2-exports"]]
    assert exported == list(zip(["MINDIR"], summary["exports"], strict=True))
    timed = [(row["stage"], row["state"]) for row in tables["irv2-timings"]]
    assert timed[:-1] == [(stage, "Completed") for stage in HEAVY], timed
    # device-hours: each stage's wall time x the CPU cores the run holds, and their total
    cores, total = len(os.sched_getaffinity(0)), tables["irv2-timings"][-1]
    train = summary["timings"]["train"]
    assert train["devices"] == f"{cores} cpu" and summary["cost"] is None  # no rate card
    assert train["device_hours"] == pytest.approx(train["seconds"] * cores / 3600, rel=0.01)
    rows_above = sum(row["device_hours"] for row in tables["irv2-timings"][:-1])
    assert total["stage"] == "total" and total["device_hours"] == pytest.approx(rows_above)
    assert summary["device_hours"] >= total["device_hours"]  # + the report and what came after
    # the report shows the software stack the model was trained on
    import mindspore as ms

    stack = report.split("Software stack", 1)[1][:600]
    assert "mindspore" in stack and ms.__version__ in stack, stack
    # ...and the CPU utilisation sampled while it trained, plotted beside img/s
    run_dir = Path(summary["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    util = [r for r in rows if r["kind"] == "util"]
    assert util and all(r["device"] == "cpu" and 0 <= r["util_pct"] <= 100 for r in util), util
    assert (
        max(r["util_pct"] for r in util) > 0 and (run_dir / "report" / "utilisation.png").is_file()
    )


def test_preempted_training_saves_its_step_and_the_retry_resumes_there(first_run):
    """SIGTERM mid-epoch (to the training process group, as Kubernetes stops a pod): training
    saves the step it was on and exits; the task's retry resumes at that step, not at the
    epoch's checkpoint, with the data stream where it was (no image twice, none skipped)."""
    summary, stopped_at = first_run["summary"], first_run["stopped_at_step"]
    assert stopped_at == HOLD_STEP, "training ended before it was held and signalled"
    assert HOLD_STEP % FLOW_SMOKE["max_steps_per_epoch"], "the signal must come mid-epoch"
    assert summary["resumed_from_step"] == HOLD_STEP  # the last words, not epoch 1's checkpoint
    run_dir = Path(summary["run_dir"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    once = [steps.count(s) for s in range(1, stopped_at + 1)]
    assert once == [1] * stopped_at, f"training restarted from an earlier step: {steps}"
    assert set(steps) == {1, 2, 3, 4, 5, 6} and summary["global_step"] == 6
    (preempted,) = [r for r in rows if r["kind"] == "preempt"]
    assert preempted["step"] == HOLD_STEP and preempted["saved_s"] > 0, preempted
    # epoch 2 as one process would have trained it: the signalled attempt's first batch
    # (step 3), then the retry's (step 4)
    firsts = {(r["epoch"], r["step"]): r for r in first_batches(run_dir, 0)}
    straight = epoch_batch_digests(run_dir, first_run["workdir"] / "mindrecord", epoch=2)
    assert [firsts[(2, 3)]["images_sha256"], firsts[(2, 4)]["images_sha256"]] == straight[:2]
    flow_run_id = first_run["state"].state_details.flow_run_id
    train_run = task_runs(flow_run_id)["train"]
    assert train_run.run_count == 2  # the killed attempt and the resuming retry
    # README: training retries itself twice, in the task and in what the flow ran
    from tasks.training import train_task

    assert train_task.retries == 2 and train_run.empirical_policy.retries == 2
    with get_client(sync_client=True) as client:
        progress = client.read_artifacts(  # this run's only: the session's database is shared
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=["train-progress"]),
                flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            )
        )
    # one progress artifact per attempt; the resumed attempt's ends at 100 %
    latest = max(progress, key=lambda a: a.created)
    assert len(progress) == 2 and float(latest.data) == 100.0
    assert latest.description.startswith("step 6/6")


def test_unchanged_second_run_is_all_cached(first_run, dataset):
    workdir = first_run["workdir"]
    ckpt = Path(first_run["summary"]["checkpoint"])
    before = ckpt.stat().st_mtime_ns
    started = time.perf_counter()
    _, summary = _run_flow(workdir, dataset)
    seconds = time.perf_counter() - started
    states = {k: v["state"] for k, v in summary["timings"].items()}
    assert {k: states[k] for k in HEAVY} == dict.fromkeys(HEAVY, "Cached"), states
    assert summary["top1"] == first_run["summary"]["top1"]
    assert ckpt.stat().st_mtime_ns == before
    print(f"first run {first_run['seconds']:.1f} s, cached second run {seconds:.1f} s")


def test_deleted_mindrecord_folder_is_converted_again(first_run, dataset):
    workdir = first_run["workdir"]
    shutil.rmtree(workdir / "mindrecord")
    _, summary = _run_flow(workdir, dataset)
    states = {k: v["state"] for k, v in summary["timings"].items()}
    assert states["stage"] == "Cached" and states["convert"] == "Completed", states
    assert (workdir / "mindrecord" / "conversion.json").is_file()
    # the rebuilt folder has the same content fingerprint, so training stays cached
    assert summary["mindrecord_fingerprint"] == first_run["summary"]["mindrecord_fingerprint"]
    assert states["train"] == "Cached"


def test_a_run_past_its_device_hour_budget_is_cancelled_while_training(
    first_run, dataset, monkeypatch, tmp_path
):
    """A budget that the (cached) data stages fit in but training does not (held after its
    first step, never released): training is stopped once it would spend past it, not retried,
    and the run ends Cancelled, saying why; the rate card prices what was spent."""
    monkeypatch.setenv(HOLD_ENV, f"1:{tmp_path / 'hold'}")
    cores = len(os.sched_getaffinity(0))
    budget = cores * 30 / 3600  # 30 s of this machine's cores
    state = train_eval_export_state(first_run["workdir"], dataset, budget_device_hours=budget,
                                    rate_card={"prices": {"cpu": 0.5}, "currency": "EUR"},
                                    overrides={**FLOW_SMOKE, "epoch_size": 5},
                                    stop_grace_s=30)  # fmt: skip
    assert state.is_cancelled() and "device-hour budget is spent" in state.message, state
    train = task_runs(state.state_details.flow_run_id)["train"]
    assert train.state.is_failed() and train.run_count == 1  # not retried
    spent = state.result(raise_on_failure=False)
    assert {"stage", "convert", "train"} <= set(spent["timings"]) and spent["currency"] == "EUR"
    assert spent["cost"] == pytest.approx(spent["device_hours"] * 0.5, rel=0.01)
    # stopped at the limit plus at most stop_grace_s (and the cached stages' seconds)
    assert budget < spent["device_hours"] < 3 * budget, spent


def test_sigterm_to_the_flow_run_lets_training_save_the_step_it_is_on(
    first_run, dataset, prefect_server, tmp_path
):
    """The flow run's own process gets SIGTERM (a worker cancelling it, Kubernetes stopping
    its pod): Prefect raises in the flow, the train task's supervision passes SIGTERM on to the
    training process group and gives it stop_grace_s, and training saves the step it is on:
    what the rescheduled run resumes from. Nothing is left running."""
    hold, workdir = tmp_path / "hold", first_run["workdir"]
    call = (f"train_eval_export(source='s3://{BUCKET}/{PREFIX}', workdir={str(workdir)!r}, "
            f"endpoint_url={dataset!r}, export_formats=['MINDIR'], "
            f"overrides={ {**FLOW_SMOKE, 'epoch_size': 4}!r})")  # fmt: skip
    script = f"from flows.train_eval_export import train_eval_export\n{call}\n"
    env = {**os.environ, "PREFECT_API_URL": prefect_server["api_url"],
           "PREFECT_LOCAL_STORAGE_PATH": str(tmp_path / "results"),
           HOLD_ENV: f"1:{hold}", "PYTHONPATH": str(REPO)}  # fmt: skip
    log = tmp_path / "flow.log"
    with log.open("w") as out:
        flow_process = subprocess.Popen([sys.executable, "-c", script], env=env, cwd=REPO,
                                        stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_for("training held after step 1", lambda: (hold / HELD).exists(), 600, every_s=0.2)
        flow_process.send_signal(signal.SIGTERM)  # no release: the SIGTERM ends the hold
        rc = flow_process.wait(timeout=180)
    finally:
        if flow_process.poll() is None:
            flow_process.kill()
    held_pid = json.loads((hold / HELD).read_text())["pid"]
    assert not psutil.pid_exists(held_pid), "training outlived the flow run"
    (run,) = [p.parent for p in (workdir / "runs").glob("run-*/config.yaml")
              if "epoch_size: 4" in p.read_text()]  # fmt: skip
    output = log.read_text()
    assert rc != 0 and "aborted by a termination signal" in output, output[-3000:]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "preempt"] == [1], output[-3000:]
    assert json.loads((run / "checkpoints" / "latest.json").read_text())["step"] == 1


def test_invalid_parameters_fail_before_staging(prefect_harness, tmp_path):
    from flows.train_eval_export import train_eval_export

    workdir = tmp_path / "never"
    with pytest.raises(Irv2Error) as exc:
        train_eval_export(
            source="s3://bucket/prefix",
            workdir=str(workdir),
            overrides={"batch_size": 0, "no_such_key": 1},
            export_formats=["ONNX", "GIF"],
        )
    text = str(exc.value)
    assert "export_formats.1" in text
    state = train_eval_export(
        source="s3://bucket/prefix",
        workdir=str(workdir),
        overrides={"batch_size": 0},
        return_state=True,
    )
    assert state.is_failed() and "batch_size" in state.message + str(
        state.result(raise_on_failure=False)
    )
    assert task_runs(state.state_details.flow_run_id) == {}
    assert not workdir.exists()


def _perfect_in_service(first_run) -> dict:
    """The first run's record of the model in service, as if another run, right on every image
    the candidate was evaluated on: with one image per class counting, the candidate (wrong on
    at least one) breaks a class, whatever its accuracy on this CPU."""
    from irv2_core.runtime.arrays import pack_bools

    assert first_run["summary"]["top1"] < 0.99, "the smoke run must leave room below perfect"
    in_service = {**json.loads(json.dumps(first_run["current"])), "run_id": "run-in-service"}
    per_image = in_service["eval"]["per_image"]
    per_image["top1"] = pack_bools([True] * per_image["count"])
    in_service["eval"]["top1"] = 1.0
    return in_service


def test_a_worse_model_is_not_promoted_and_the_current_one_stays(first_run, dataset):
    workdir = first_run["workdir"]
    path = workdir / "models" / "default" / "current.json"
    original = path.read_text()
    in_service = _perfect_in_service(first_run)
    path.write_text(json.dumps(in_service))
    try:
        state, rerun = _run_flow(workdir, dataset, promote_min_class_support=1)
        assert state.name == "Not promoted" and "broken" in state.message, state
        assert not rerun["promotion"]["promoted"]
        assert json.loads(path.read_text()) == in_service  # never overwritten
        report = Path(rerun["report"]).read_text()
        assert "current model (run-in-service)" in report  # the comparison names the baseline
        aliases = json.loads((workdir / "models" / "default" / "aliases.json").read_text())
        challenger = aliases["aliases"]["challenger"]  # the newest candidate not in service
        assert challenger["run_id"] == Path(rerun["run_dir"]).name, challenger
        assert challenger["decision"] == "reject" and "broken" in challenger["reason"]
        with get_client(sync_client=True) as client:
            (comparison,) = client.read_artifacts(  # the comparison a person would decide on
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["irv2-promotion"]),
                    flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
                )
            )
        assert "McNemar exact p" in comparison.data and "| recall in service |" in comparison.data
    finally:
        path.write_text(original)  # the module's workdir again holds the first run's model


def test_a_model_in_service_without_per_image_results_is_evaluated_again(first_run, dataset):
    """A record of the model in service from an older release (no per-image outcomes, no
    checkpoint named) is never guessed at: its run's checkpoint is evaluated on the candidate's
    images first, then compared."""
    workdir = first_run["workdir"]
    path = workdir / "models" / "default" / "current.json"
    original = path.read_text()
    older = {**json.loads(original), "run_id": "run-older-release"}
    del older["eval"]["per_image"], older["checkpoint"]
    path.write_text(json.dumps(older))
    try:
        state, rerun = _run_flow(workdir, dataset)
        assert rerun["timings"]["evaluate-in-service"]["state"] == "Completed"
        # the same weights under another name: no image differs, so it is not worse
        assert rerun["promotion"]["outcome"] == "promote", rerun["promotion"]
        assert "within 0.5 points" in rerun["promotion"]["reason"]
    finally:
        path.write_text(original)


# --- rerun one stage of the finished run (flows/rerun.py) ----------------------------------------


def test_re_evaluate_on_another_split_trains_nothing_and_is_cached_again(first_run):
    from flows.rerun import re_evaluate

    run_dir = Path(first_run["summary"]["run_dir"])
    ckpt, own_eval = run_dir / "final.ckpt", (run_dir / "eval.json").read_bytes()
    before = ckpt.stat().st_mtime_ns
    result, tasks = flow_result(re_evaluate(run=str(run_dir), split="train",
                                             return_state=True))  # fmt: skip
    assert tasks == {"evaluate"}, tasks  # no stage, convert or train task ran
    assert result["timings"]["evaluate"]["state"] == "Completed"
    out = Path(result["eval"])
    assert out.parent.parent == run_dir / "reruns" and out.parent.name == result["rerun"]
    assert result["rerun"].startswith("evaluate-zoo-train-")
    record = json.loads(out.read_text())
    assert record["protocol"] == "zoo" and record["count"] == 24  # 3 classes x 8 train images
    assert 0.0 <= result["top1"] <= result["top5"] <= 1.0
    again = re_evaluate(run=str(run_dir), split="train")
    assert again["timings"]["evaluate"]["state"] == "Cached" and again["eval"] == str(out)
    assert ckpt.stat().st_mtime_ns == before and (run_dir / "eval.json").read_bytes() == own_eval
    # final.ckpt records that its weights expect the run's protocol: another one is refused
    with pytest.raises(Irv2Error, match=r"trained with the 'zoo'.*eval_protocol 'inception'"):
        re_evaluate(run=str(run_dir), eval_protocol="inception")


def test_re_export_writes_a_verified_export_beside_the_run(first_run):
    from flows.rerun import re_export

    run_dir, workdir = Path(first_run["summary"]["run_dir"]), first_run["workdir"]
    own = {p: p.stat().st_mtime_ns for p in (workdir / "exports").iterdir()}
    result, tasks = flow_result(re_export(run=str(run_dir), export_formats=["ONNX"],
                                           return_state=True))  # fmt: skip
    assert tasks == {"export"}, tasks
    (export,) = result["exports"]
    assert Path(export["path"]) == run_dir / "reruns" / "export-onnx" / "irv2.onnx"
    assert "onnxruntime" in export["verified_with"] and export["max_abs_diff"] is not None
    assert {p: p.stat().st_mtime_ns for p in (workdir / "exports").iterdir()} == own
    with pytest.raises(Irv2Error, match="AIR needs device_target Ascend"):
        re_export(run=str(run_dir), export_formats=["AIR"])


def test_re_report_rebuilds_the_report_on_the_re_evaluation(first_run):
    from flows.rerun import re_evaluate, re_report

    run_dir = Path(first_run["summary"]["run_dir"])
    own_report = (run_dir / "report" / "report.md").read_bytes()
    name = re_evaluate(run=str(run_dir), split="train")["rerun"]  # Cached
    result = re_report(run=str(run_dir), evaluation=name)
    report = Path(result["report"])
    assert report == run_dir / "reruns" / f"report-{name}" / "report" / "report.md"
    assert "zoo protocol" in report.read_text() and Path(result["report_html"]).is_file()
    assert (run_dir / "report" / "report.md").read_bytes() == own_report
    with pytest.raises(Irv2Error, match="has no re-evaluation 'evaluate-zoo-train-0'"):
        re_report(run=str(run_dir), evaluation="evaluate-zoo-train-0")


def test_a_rerun_of_no_finished_run_fails_before_any_task(prefect_harness, tmp_path):
    from flows.rerun import re_evaluate, re_export

    state = re_evaluate(run=str(tmp_path / "runs" / "run-nope"), return_state=True)
    text = str(state.result(raise_on_failure=False))
    assert state.is_failed() and "run: " in text and "is not a folder" in text
    assert "runs/run-<digest>" in text  # how to fix it
    assert task_runs(state.state_details.flow_run_id) == {}
    (tmp_path / "half").mkdir()
    with pytest.raises(Irv2Error, match="holds no final.ckpt") as exc:
        re_export(run=str(tmp_path / "half"), export_formats=["GIF"])
    assert "export_formats.0" in str(exc.value)
    with pytest.raises(Irv2Error, match="expected <output_uri>/runs/<run-id>"):
        re_evaluate(run="s3://bucket/prefix/run-x")


def test_reruns_of_a_published_run_are_published_beside_it(first_run, dataset, tmp_path):
    import boto3

    from flows.rerun import re_evaluate, re_report

    run_dir, workdir = Path(first_run["summary"]["run_dir"]), first_run["workdir"]
    uri = publish_like_the_flow(run_dir, workdir / "mindrecord", f"s3://{BUCKET}/out", dataset)
    s3 = boto3.client("s3", endpoint_url=dataset, region_name="us-east-1")
    own_eval = s3.get_object(Bucket=BUCKET, Key=f"out/runs/{run_dir.name}/eval/_COMMITTED.json")
    away = dict(run=uri, endpoint_url=dataset, workdir=str(tmp_path / "other-machine"))
    result = re_evaluate(**away, split="train")
    assert result["timings"]["evaluate"]["state"] == "Completed"  # its first time in this store
    assert Path(result["eval"]).is_relative_to(tmp_path / "other-machine" / "runs")
    reported = re_report(**away, evaluation=result["rerun"])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"]}
    for name in (result["rerun"], f"report-{result['rerun']}"):
        assert f"out/runs/{run_dir.name}/reruns/{name}/_COMMITTED.json" in keys, name
    assert reported["uri"] == f"{uri}/reruns/report-{result['rerun']}"
    again = s3.get_object(Bucket=BUCKET, Key=f"out/runs/{run_dir.name}/eval/_COMMITTED.json")
    assert again["Body"].read() == own_eval["Body"].read()  # the run's own evaluation stays


def test_re_evaluate_on_another_split_of_another_mindrecord_folder(first_run, tmp_path):
    from flows.rerun import re_evaluate
    from irv2_core.data.convert import convert

    run_dir = Path(first_run["summary"]["run_dir"])
    images = tmp_path / "other-images"  # the run's 3 classes, 2 training images each
    write_image_tree(images, 3, 2, seed=5, split="train")
    write_image_tree(images, 3, 1, seed=6, split="val")
    data = tmp_path / "other" / "mindrecord"
    other = convert(images, data)
    result = re_evaluate(run=str(run_dir), split="train", data=str(data))
    record = json.loads(Path(result["eval"]).read_text())
    # 6 images: the other folder's train split (its val split holds 3, the run's own 24 and 9)
    assert (record["count"], result["rerun"]) == (
        6,
        f"evaluate-{record['protocol']}-train-{other.fingerprint[:8]}",
    ), result
    assert Path(result["eval"]).parent == run_dir / "reruns" / result["rerun"]


def test_a_rejected_model_is_still_published_with_the_given_result_storage(
    first_run, dataset, tmp_path
):
    """README: with output_uri, a model rejected by the promotion gate (a class broken) is
    still reported and published, the run ends Not promoted and current.json is left as it was;
    task results and cache records go to the result_storage block given."""
    from prefect.filesystems import LocalFileSystem

    store, results = tmp_path / "store", tmp_path / "results"
    in_service = _perfect_in_service(first_run)
    current = store / "models" / "default" / "current.json"
    current.parent.mkdir(parents=True)
    current.write_text(json.dumps(in_service))
    LocalFileSystem(basepath=str(results)).save("irv2-flow-test-results", overwrite=True)
    state, rerun = _run_flow(
        first_run["workdir"],
        dataset,
        output_uri=str(store),
        export_formats=["MINDIR"],
        result_storage="local-file-system/irv2-flow-test-results",
        promote_min_class_support=1,
    )
    run_id = Path(rerun["run_dir"]).name
    markers = [f"runs/{run_id}/_COMMITTED.json", f"runs/{run_id}/run.json",
               f"runs/{run_id}/eval/_COMMITTED.json", f"runs/{run_id}/report/_COMMITTED.json",
               f"exports/{run_id}/mindir/_COMMITTED.json"]  # fmt: skip
    seen = {
        "state": state.name,
        "a class broken": "broken" in (state.message or ""),
        "current": json.loads(current.read_text()),
        "published": [m for m in markers if (store / m).is_file()],
        "run_uri": rerun["run_uri"],
        "results in the block": any(p.is_file() for p in results.rglob("*")),
        "results under output_uri/prefect": (store / "prefect").exists(),
    }
    assert seen == {
        "state": "Not promoted",
        "a class broken": True,
        "current": in_service,
        "published": markers,
        "run_uri": f"{store}/runs/{run_id}",
        "results in the block": True,
        "results under output_uri/prefect": False,
    }, state.message
    assert "current model (run-in-service)" in Path(rerun["report"]).read_text()


# --- a person decides in the Prefect UI when the gate asks -----------------------------------


def _asked(first_run, tmp_path) -> tuple[Path, dict]:
    """A store whose model in service is the first run's, as another run: the same outcome on
    every image, so the gate would promote; with promote_approval=always it asks."""
    store = tmp_path / "store"
    in_service = {**json.loads(json.dumps(first_run["current"])), "run_id": "run-in-service"}
    current = store / "models" / "default" / "current.json"
    current.parent.mkdir(parents=True)
    current.write_text(json.dumps(in_service))
    return store, in_service


def test_a_run_that_asks_is_promoted_when_a_person_approves(first_run, dataset, tmp_path):
    store, in_service = _asked(first_run, tmp_path)
    done = threading.Event()
    answer = {"approve": True, "comment": "checked the confusions", "reviewer": "ana"}
    resumer = resume_when_paused(str(store), answer, done)
    try:
        state, rerun = _run_flow(first_run["workdir"], dataset, output_uri=str(store),
                                 promote_approval="always", approval_timeout_s=120)  # fmt: skip
    finally:
        done.set()
    resumer.join(timeout=30)
    current = json.loads((store / "models" / "default" / "current.json").read_text())
    run_id = Path(rerun["run_dir"]).name
    assert state.is_completed() and state.name != "Not promoted", state
    assert rerun["promotion"]["promoted"] and rerun["promotion"]["outcome"] == "approve"
    assert (current["run_id"], current["decided_by"], current["reason"]) == (
        run_id, "ana", "checked the confusions")  # fmt: skip
    assert current["history"][0]["run_id"] == "run-in-service"
    run_json = json.loads((store / "runs" / run_id / "run.json").read_text())
    assert run_json["promotion"]["gate"]["outcome"] == "ask"
    assert run_json["promotion"]["decided_by"] == "ana"


def test_a_run_left_alone_past_its_approval_timeout_is_not_promoted(first_run, dataset, tmp_path):
    """...and the shipped notifications (deployments/promotion-notifications.yaml, installed as
    `irv2 notify URL` does) tell a webhook that it asked, and that it was not promoted."""
    from flows.notify import install_notifications
    from flows.train_eval_export import train_eval_export

    store, in_service = _asked(first_run, tmp_path)
    with webhook_receiver() as (url, received):
        automation = install_notifications(url, name=f"irv2-test-{os.getpid()}")
        try:
            state, rerun = _run_flow(first_run["workdir"], dataset, output_uri=str(store),
                                     promote_approval="always", approval_timeout_s=3)  # fmt: skip
            wait_for("two notifications", lambda: len(received) >= 2, 120, every_s=0.5)
            failed = train_eval_export(source=f"s3://{BUCKET}/{PREFIX}", promote_alpha=2.0,
                                       workdir=str(tmp_path / "never"),
                                       return_state=True)  # fmt: skip
            failed_id = str(failed.state_details.flow_run_id)
            wait_for("the failure's notification", lambda: any(
                failed_id in r["body"] for r in received), 120, every_s=0.5)  # fmt: skip
        finally:
            with get_client(sync_client=True) as client:
                client.delete_automation(automation)
    subjects = sorted(r["subject"] for r in received)
    assert any(s.endswith("is Paused") for s in subjects), received
    assert any(s.endswith("is Not promoted") for s in subjects), received
    assert any("no decision within 3 s" in r["body"] for r in received), received
    assert failed.is_failed() and any(
        r["subject"].endswith("is Failed") and failed_id in r["body"] for r in received
    ), received
    current = json.loads((store / "models" / "default" / "current.json").read_text())
    assert state.name == "Not promoted" and "no decision within 3 s" in state.message, state
    assert current == in_service  # never overwritten
    assert rerun["promotion"]["outcome"] == "reject"

"""Runs that survive the machine: separate "machines" that share nothing but the object store.

Each machine is its own process with its own workdir and its own Prefect home (an ephemeral API and
database, its own local result storage); the only thing they share is a bucket on a localhost S3
server (SeaweedFS). Machine 1 is killed with its training once its first checkpoint has reached the
store (training is held there: IRV2_TEST_HOLD); machine 2 reruns the same parameters and resumes
that training; machine 3 then finds every heavy task in the cache that lives in the store. The
machines hold S3 credentials of their own, which must appear nowhere they leave traces (README,
"Object storage").
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from support.images import write_image_tree
from support.seaweedfs import OTHER_S3_CREDENTIALS
from support.training import FLOW_SMOKE

from irv2_core.runtime.hold import HELD, HOLD_ENV

pytestmark = [pytest.mark.flow, pytest.mark.slow]

BUCKET, DATA, OUT = "irv2-machines", "images", "irv2"
HEAVY = ("stage", "convert", "train", "evaluate", "export-MINDIR")
# 3 epochs x 2 steps, a checkpoint every epoch; machine 1 is held after step 2, once its
# checkpoint is complete in the store, and killed there: machine 2 resumes at step 2, always
MACHINE_SMOKE = {**FLOW_SMOKE, "epoch_size": 3, "save_checkpoint_epochs": 1}
HOLD_STEP, TOTAL_STEPS = 2, 6
DRIVER = (
    "import json, sys\n"
    "from flows.train_eval_export import train_eval_export\n"
    "summary = train_eval_export(**json.loads(sys.argv[1]))\n"
    "print('SUMMARY ' + json.dumps(summary), flush=True)\n"
    # what the machine's Prefect API holds, while it is still up: every log line and block
    "from prefect.client.orchestration import get_client\n"
    "with get_client(sync_client=True) as c:\n"
    "    logs, page = [], True\n"
    "    while page:\n"
    "        page = c.read_logs(limit=200, offset=len(logs))\n"
    "        logs += [rec.message for rec in page]\n"
    "    blocks = [d.data for d in c.read_block_documents(include_secrets=True)]\n"
    "with open(sys.argv[2], 'w') as f:\n"
    "    json.dump({'logs': logs, 'blocks': blocks}, f, default=str)\n"
)
# S3 credentials only the machines hold: the server's second identity; checked against every
# trace they leave. No session token: SeaweedFS checks one as an STS token and rejects a made-up
# one, and a token travels exactly as the key id and secret do (environment to boto3)
MACHINE_CREDENTIALS = OTHER_S3_CREDENTIALS
TRACE_SCAN_MAX_BYTES = 64 << 20  # checkpoints (~650 MB of float tensors) are not scanned


@pytest.fixture(scope="module")
def bucket(s3_server, tmp_path_factory):
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    root = tmp_path_factory.mktemp("machine-images")
    write_image_tree(root, 3, 8, seed=0, split="train")
    write_image_tree(root, 3, 3, seed=1, split="val")
    for f in sorted(root.rglob("*.jpg")):
        client.upload_file(str(f), BUCKET, f"{DATA}/{f.relative_to(root).as_posix()}")
    return client


def _machine(root: Path, endpoint: str) -> tuple[list[str], dict[str, str], Path]:
    """(command prefix, environment, workdir) of a machine of its own under *root*."""
    (root / "prefect-home").mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(root / "prefect-home"),
        PREFECT_LOCAL_STORAGE_PATH=str(root / "prefect-results"),
        PREFECT_SERVER_EPHEMERAL_ENABLED="true",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="INFO",
        IRV2_LEASE_TTL_S="20",  # a dead machine's lease expires within the test's patience
        PYTHONUNBUFFERED="1",
        **MACHINE_CREDENTIALS,
    )
    params = {
        "source": f"s3://{BUCKET}/{DATA}",
        "workdir": str(root / "work"),
        "endpoint_url": endpoint,
        "overrides": MACHINE_SMOKE,
        "export_formats": ["MINDIR"],
        "output_uri": f"s3://{BUCKET}/{OUT}",
    }
    dump = str(root / "prefect-api.json")
    return [sys.executable, "-c", DRIVER, json.dumps(params), dump], env, root / "work"


def _summary(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("SUMMARY ")]
    assert lines, stdout[-3000:]
    return json.loads(lines[-1].removeprefix("SUMMARY "))


def _keys(client, prefix: str = "") -> dict[str, int]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return {o["Key"]: o["Size"] for page in pages for o in page.get("Contents", [])}


def _training_groups(workdir: Path) -> list[int]:
    """Process groups of training processes of the run folders under *workdir*."""
    groups = set()
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if b"irv2_core" in argv and str(workdir).encode() in b" ".join(argv):
                groups.add(os.getpgid(int(proc.name)))
        except (OSError, ValueError):
            continue
    return sorted(groups)


class _KillWhenHeld(threading.Thread):
    """Kills a machine (its flow process group and its training group) once its training holds
    after its first checkpoint, which is then complete in the store (runtime/hold.py)."""

    def __init__(self, proc: subprocess.Popen, workdir: Path, hold: Path) -> None:
        super().__init__(daemon=True)
        self.proc, self.workdir, self.hold, self.killed = proc, workdir, hold, False

    def run(self) -> None:
        deadline = time.monotonic() + 1200
        while self.proc.poll() is None and time.monotonic() < deadline:
            if (self.hold / HELD).exists():
                for group in [self.proc.pid, *_training_groups(self.workdir)]:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(group, signal.SIGKILL)
                self.killed = True
                return
            time.sleep(0.1)


@pytest.fixture(scope="module")
def machines(bucket, s3_server, tmp_path_factory):
    """Machine 1 killed mid-training, machine 2 resuming it, machine 3 finding it all cached."""
    root = tmp_path_factory.mktemp("machines")
    cmd, env, work1 = _machine(root / "m1", s3_server)
    env[HOLD_ENV] = f"{HOLD_STEP}:{root / 'm1-hold'}"
    m1 = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, start_new_session=True)  # fmt: skip
    killer = _KillWhenHeld(m1, work1, root / "m1-hold")
    killer.start()
    m1_out, _ = m1.communicate(timeout=1500)
    killer.join(timeout=5)
    assert killer.killed, f"machine 1 ended before its training held at step 2:\n{m1_out}"
    in_store = [k for k in _keys(bucket, f"{OUT}/runs/") if k.endswith(".ckpt.sha256")]
    results = {"in_store_at_kill": in_store, "root": root, "console": [m1_out]}
    for name in ("m2", "m3"):
        cmd, env, _ = _machine(root / name, s3_server)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500)
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
        results[name] = _summary(done.stdout)
        results["console"] += [done.stdout, done.stderr]
    return results


def test_a_fresh_machine_resumes_the_killed_machines_training(machines):
    assert [k.rsplit("/", 1)[1] for k in machines["in_store_at_kill"]] == [
        f"irv2-e1-s{HOLD_STEP}.ckpt.sha256"
    ]
    summary = machines["m2"]
    assert summary["resumed_from_step"] == HOLD_STEP, summary  # from the store, mid-run
    assert summary["global_step"] == TOTAL_STEPS and summary["run_uri"]


def test_every_published_sha256_matches_its_object(machines, bucket):
    run_uri = machines["m2"]["run_uri"]
    run_prefix = run_uri.removeprefix(f"s3://{BUCKET}/")
    record = json.loads(
        bucket.get_object(Bucket=BUCKET, Key=f"{run_prefix}/run.json")["Body"].read()
    )
    objects = [record["checkpoint"], *record["exports"]]
    assert [e["format"] for e in record["exports"]] == ["MINDIR"]
    for obj in objects:
        body = bucket.get_object(Bucket=BUCKET, Key=f"{OUT}/{obj['key']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
    keys = _keys(bucket, f"{OUT}/")
    for marker in ("runs/{id}/_COMMITTED.json", "runs/{id}/eval/_COMMITTED.json",
                   "runs/{id}/report/_COMMITTED.json", "runs/{id}/run.json"):  # fmt: skip
        assert f"{OUT}/" + marker.format(id=record["run_id"]) in keys
    assert any(k.startswith(f"{OUT}/mindrecord/") and k.endswith("_COMMITTED.json") for k in keys)
    assert any(k.startswith(f"{OUT}/prefect/") for k in keys)  # Prefect's results live there
    assert record["metrics"]["top1"] == machines["m2"]["top1"]
    assert record["resumed_from_step"] == machines["m2"]["resumed_from_step"]


def test_a_third_machine_gets_every_heavy_task_from_the_store(machines):
    states = {k: v["state"] for k, v in machines["m3"]["timings"].items()}
    assert {k: states[k] for k in HEAVY} == dict.fromkeys(HEAVY, "Cached"), states
    assert machines["m3"]["top1"] == machines["m2"]["top1"]


def test_an_unwritable_output_uri_fails_before_staging(bucket, s3_server, tmp_path):
    cmd, env, work = _machine(tmp_path / "m4", s3_server)
    params = json.loads(cmd[-2])
    params["output_uri"] = "s3://no-such-bucket-for-irv2/out"
    done = subprocess.run([*cmd[:-2], json.dumps(params), cmd[-1]], env=env, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0
    text = done.stdout + done.stderr
    assert "no-such-bucket-for-irv2" in text and "does not exist" in text
    assert not (work / "data").exists()  # nothing was staged
    assert env["AWS_SECRET_ACCESS_KEY"] not in text


def test_pull_brings_back_a_run_that_predict_uses(machines, s3_server, tmp_path, capsys):
    from irv2_core.cli import main

    dest = tmp_path / "pulled"
    assert main(["pull", machines["m2"]["run_uri"], str(dest), "--endpoint-url", s3_server]) == 0
    for name in ("final.ckpt", "classes.json", "config.yaml", "eval.json", "run.json"):
        assert (dest / name).is_file(), name
    record = json.loads((dest / "run.json").read_text())
    digest = hashlib.sha256((dest / "final.ckpt").read_bytes()).hexdigest()
    assert digest == record["checkpoint"]["sha256"]
    assert (dest / "exports" / "irv2.mindir").is_file()
    image = tmp_path / "img"
    write_image_tree(image, 1, 1, seed=3, split="x")
    capsys.readouterr()
    jpg = next(image.rglob("*.jpg"))
    assert main(["predict", "--model", str(dest / "final.ckpt"), str(jpg), "--json"]) == 0
    top = json.loads(capsys.readouterr().out)[0]["top"]
    assert top[0]["name"].startswith("class_")  # names from the pulled classes.json


def _needles(secret: str) -> list[bytes]:
    """*secret* as raw bytes and as it would read inside base64 (Prefect's pickled results),
    at each of the three alignments; partial edge characters are dropped."""
    raw = secret.encode()
    found = [raw]
    for pad in range(3):
        enc = base64.b64encode(b"\0" * pad + raw)
        # only the characters whose 6 bits all come from the secret's bytes
        found.append(enc[-(-8 * pad // 6) : 8 * (pad + len(raw)) // 6])
    return found


def leaked_credentials(blobs: dict[str, bytes]) -> list[str]:
    """``name: credential`` for every blob that holds one of MACHINE_CREDENTIALS' values."""
    needles = {k: _needles(v) for k, v in MACHINE_CREDENTIALS.items()}
    return [
        f"{name}: {key}"
        for name, blob in blobs.items()
        for key, forms in needles.items()
        if any(form in blob for form in forms)
    ]


def test_leak_scan_finds_a_credential_raw_and_inside_base64():
    secret = MACHINE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"].encode()
    blobs = {f"b64-{pad}": base64.b64encode(b"x" * pad + secret + b"y") for pad in range(3)}
    blobs |= {"log": b"INFO key=" + secret + b"\n", "clean": b"AWS_SECRET_ACCESS_KEY=***"}
    assert sorted(leaked_credentials(blobs)) == sorted(
        f"{n}: AWS_SECRET_ACCESS_KEY" for n in ("b64-0", "b64-1", "b64-2", "log")
    )


def test_credentials_reach_no_log_file_result_or_published_object(machines, bucket):
    """The machines' consoles, their Prefect logs and blocks (read from their APIs), every file
    they wrote (Prefect databases and local results, manifests, run folders, reports) and every
    object in the store (Prefect's results under <output_uri>/prefect, run.json, records, report)
    are free of the S3 credentials. (The rendered k8s manifest: tests/unit/test_k8s_job_template.)
    """
    root: Path = machines["root"]
    blobs = {f"console {i}": out.encode() for i, out in enumerate(machines["console"])}
    dumps = sorted(root.glob("m*/prefect-api.json"))
    assert len(dumps) == 2, dumps  # machines 2 and 3 finished and read their APIs
    for dump in dumps:
        api = json.loads(dump.read_text())
        assert any("train" in line for line in api["logs"]), "the flow's logs were not read"
        assert api["blocks"], "the result-storage blocks were not read"
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    assert any(p.name.endswith(".db") for p in files)  # the Prefect databases are scanned
    skipped = 0
    for path in files:
        if path.stat().st_size > TRACE_SCAN_MAX_BYTES:
            skipped += 1
            continue
        blobs[str(path.relative_to(root))] = path.read_bytes()
    keys = _keys(bucket, f"{OUT}/")
    assert any(k.startswith(f"{OUT}/prefect/") for k in keys)
    for key, size in keys.items():
        if size <= TRACE_SCAN_MAX_BYTES:
            blobs[f"s3 {key}"] = bucket.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert skipped <= 20 and len(blobs) > 50, (skipped, len(blobs))  # the scan saw the traces
    assert not leaked_credentials(blobs)

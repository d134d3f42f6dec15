"""What a stage rerun starts from: a finished run's files, config, data and report facts.

A run folder is used where it is. A published run (``<output_uri>/runs/<run-id>``) is checked
(``run.json`` and commit marker) and its small files are fetched, verified, into
``<workdir>/runs/<run-id>``; the weights and the MindRecord shards are fetched by the task that
needs them, and only when it runs (a cached rerun downloads nothing heavy).

Rerun outputs go to ``<run>/reruns/<name>/`` (and, for a published run, are published under
``runs/<run-id>/reruns/<name>/`` with a commit marker): never over the run's own files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flows.rerun_params import RerunParams
from irv2_core.config import load_config
from irv2_core.data.local_copy import conversion_fingerprint
from irv2_core.errors import Irv2Error
from irv2_core.lineage import RunRecord
from irv2_core.report import PIPELINE_FILE
from irv2_core.runtime.io import read_json
from irv2_core.storage.layout import eval_prefix, rerun_prefix
from irv2_core.storage.publish import StoreRef
from irv2_core.storage.pull import split_run_uri
from tasks.finished_run import conversion_prefix_task, fetch_task, read_run_task

__all__ = ["FinishedRun", "eval_data", "open_run", "report_facts", "run_config"]

RERUNS = "reruns"


@dataclass(frozen=True)
class FinishedRun:
    """A finished run as a rerun sees it: a local folder, and its store for a published run."""

    run_dir: Path
    run_id: str
    store: StoreRef | None = None  # the store root (output_uri) of a published run
    run_key: str | None = None  # runs/<run-id> in that store
    record: RunRecord | None = None  # its run.json

    @property
    def checkpoint(self) -> str:
        """Where final.ckpt is (or will be fetched to)."""
        return str(self.run_dir / "final.ckpt")

    @property
    def checkpoint_sha256(self) -> str | None:
        """final.ckpt's published sha256 (None for a run folder: the task hashes the file)."""
        return self.record.checkpoint.sha256 if self.record else None

    def out(self, name: str) -> Path:
        """The local folder of the rerun *name*."""
        return self.run_dir / RERUNS / name

    def publish_prefix(self, name: str) -> str | None:
        """Where the rerun *name* is published (None for a run folder)."""
        return rerun_prefix(self.run_id, name) if self.store else None

    def uri(self, name: str) -> str | None:
        """The published URI of the rerun *name* (None for a run folder)."""
        return f"{self.store['uri']}/{self.publish_prefix(name)}" if self.store else None


def open_run(params: RerunParams, files: list[str]) -> FinishedRun:
    """The run *params* name, with *files* of a published run fetched (verified) locally."""
    if not params.published:
        run_dir = Path(params.run).expanduser().resolve()
        return FinishedRun(run_dir, run_dir.name)
    root, key = split_run_uri(params.run)
    store = {"uri": root, "endpoint_url": params.endpoint_url}
    run_id = key.rsplit("/", 1)[1]
    run_dir = Path(params.workdir).expanduser().resolve() / "runs" / run_id
    record = read_run_task(store, key, str(run_dir), files)
    return FinishedRun(run_dir, run_id, store, key, record)


def run_config(run: FinishedRun, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The run's resolved config (its config.yaml) with *overrides*, as a task parameter."""
    return load_config(path=run.run_dir / "config.yaml", overrides=overrides).to_dict()


def eval_data(run: FinishedRun, data: str | None, workdir: str) -> tuple[str, str, str | None]:
    """``(MindRecord folder, its fingerprint, its store prefix or None)`` to evaluate on: *data*
    when given, else the conversion the run trained on."""
    if data is not None:
        folder = Path(data).expanduser().resolve()
        return str(folder), conversion_fingerprint(folder), None
    if run.record is not None:  # published: the store's conversion with the run's fingerprint
        fingerprint = run.record.mindrecord_fingerprint
        prefix = conversion_prefix_task(run.store, run.record)
        if prefix is None:
            raise Irv2Error(
                f"{run.store['uri']} holds no committed MindRecord conversion {fingerprint[:12]} "
                f"(the data {run.run_id} trained on); pass data=<a MindRecord folder>"
            )
        folder = Path(workdir).expanduser().resolve() / "mindrecord"
        if conversion_fingerprint(folder) not in (
            None,
            fingerprint,
        ):  # another conversion lives there
            folder = folder.with_name(f"mindrecord-{fingerprint[:12]}")
        return str(folder), fingerprint, prefix
    folder = run.run_dir.parent.parent / "mindrecord"  # the flow's <workdir>/mindrecord
    found = conversion_fingerprint(folder)
    trained_on = _pipeline(run.run_dir).get("mindrecord_fingerprint")
    if found is None or (trained_on and found != trained_on):
        state = "does not exist" if found is None else "holds another conversion than the run's"
        raise Irv2Error(
            f"{folder} {state}, so the data {run.run_id} trained on is unknown here; pass "
            "data=<a MindRecord folder written by irv2 convert>"
        )
    return str(folder), found, None


def report_facts(run: FinishedRun, evaluation: str | None) -> dict[str, Any]:
    """The report's facts: the run's own (pipeline.json, or run.json for a published run) with
    the evaluation replaced by the re-evaluation *evaluation* when one is named."""
    facts = _pipeline(run.run_dir) or _published_facts(run)
    if evaluation is None:
        source, folder = (eval_prefix(run.run_id), run.run_dir)
    else:
        source, folder = (rerun_prefix(run.run_id, evaluation), run.out(evaluation))
    if run.store is not None:
        fetch_task(run.store, source, str(folder), ["eval.json"])
    if (folder / "eval.json").is_file():
        facts["evaluation"] = read_json(folder / "eval.json")
    elif evaluation is not None:
        made = sorted(p.name for p in (run.run_dir / RERUNS).glob("evaluate-*"))
        raise Irv2Error(
            f"{folder} holds no eval.json: {run.run_id} has no re-evaluation {evaluation!r} "
            f"(it has: {made or 'none'}); run re-evaluate first, or leave evaluation out"
        )
    return facts


def _published_facts(run: FinishedRun) -> dict[str, Any]:
    record = run.record
    if record is None:
        return {}
    return {
        "data_fingerprint": record.source_fingerprint,
        "mindrecord_fingerprint": record.mindrecord_fingerprint,
        "exports": [
            {"format": e.format, "path": e.key, "sha256": e.sha256} for e in record.exports
        ],
    }


def _pipeline(run_dir: Path) -> dict[str, Any]:
    path = run_dir / PIPELINE_FILE
    return read_json(path) if path.is_file() else {}

"""Where each stage's outputs live under ``output_uri`` — the one home of the store's layout.

::

    mindrecord/<convert digest>/   train.mindrecord*, val.mindrecord*, classes.json, conversion.json
    runs/<run-id>/                 config.yaml, classes.json, final.ckpt, metrics.jsonl,
                                   train_summary.json (+ checkpoints/, mirrored while training)
    runs/<run-id>/eval/            eval.json
    runs/<run-id>/report/          report.md, report.html, CSVs, plots
    runs/<run-id>/run.json         the lineage, written last: the run is complete
    runs/<run-id>/reruns/<name>/   one stage rerun on the finished run (re-evaluate, re-export,
                                   re-report), beside the run's own outputs, never over them
    exports/<run-id>/<format>/     irv2.mindir, irv2.onnx ...
    compile-cache/<scope>/rank_<r>/ MindSpore's compile cache of one training scope and rank
    gang/<run-id>/                 a gang job's outputs, from its pod 0 to the train task, which
                                   publishes them under runs/<run-id> and removes these
    prefect/                       Prefect's persisted results and cache records

Each prefix is trusted only through its commit marker (``storage.publish``).
"""

from __future__ import annotations

__all__ = [
    "COMPILE_CACHE",
    "MINDRECORD",
    "PREFECT_RESULTS",
    "RUN_RECORD",
    "compile_cache_prefix",
    "convert_prefix",
    "eval_prefix",
    "export_prefix",
    "gang_prefix",
    "report_prefix",
    "rerun_prefix",
    "run_prefix",
]

RUN_RECORD = "run.json"
PREFECT_RESULTS = "prefect"
MINDRECORD = "mindrecord"
COMPILE_CACHE = "compile-cache"


def convert_prefix(digest: str) -> str:
    """A MindRecord conversion, by the digest of its inputs and options."""
    return f"{MINDRECORD}/{digest[:16]}"


def run_prefix(run_id: str) -> str:
    """A training run (its checkpoints are mirrored there while it trains)."""
    return f"runs/{run_id}"


def eval_prefix(run_id: str) -> str:
    """The evaluation of a run."""
    return f"{run_prefix(run_id)}/eval"


def report_prefix(run_id: str) -> str:
    """The report of a run."""
    return f"{run_prefix(run_id)}/report"


def export_prefix(run_id: str, fmt: str) -> str:
    """One export format of a run."""
    return f"exports/{run_id}/{fmt.lower()}"


def rerun_prefix(run_id: str, name: str) -> str:
    """One stage rerun of a finished run (``evaluate-<protocol>-<split>-<data>``, ...)."""
    return f"{run_prefix(run_id)}/reruns/{name}"


def gang_prefix(run_id: str) -> str:
    """A gang job's outputs on their way from its pod 0 to the train task."""
    return f"gang/{run_id}"


def compile_cache_prefix(scope: str, rank: int) -> str:
    """One rank's compile cache of the training scope *scope* (its local folder's name)."""
    return f"{COMPILE_CACHE}/{scope}/rank_{rank}"

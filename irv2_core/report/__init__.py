"""The run report: pandas tables written as CSV, Markdown and HTML, with PNG plots.

``build_report(run_dir)`` reads what ``train`` leaves in a run folder (``config.yaml``,
``metrics.jsonl``, ``train_summary.json``) plus the pipeline facts the flow adds (evaluation with
its confusion matrix and misclassified samples, exports, data fingerprint, per-stage timings, the
previous accepted model's evaluation; from ``extra`` or the run folder's ``pipeline.json``) and
writes ``report.md`` (plots linked by file name), ``report.html`` (plots embedded: one
self-contained file), one CSV per table and the plots: accuracy per epoch, confusion matrix,
misclassified images, loss and learning rate. :func:`artifact_markdown` is the Markdown with the
plots embedded as data URIs, for the Prefect UI. The model zoo's ImageNet accuracy is shown only
for a 1000-class run at 299 px. Pure: pandas, matplotlib and Pillow, so ``irv2 report RUN_DIR``
works without Prefect (and without MindSpore).

Modules by concern: ``inputs`` (run folder and pipeline facts), ``tables`` (per class, pairs,
exports, timings), ``compare`` (zoo reference rule, previous accepted model), ``plots``
(matplotlib), ``render`` (Markdown, HTML, data-URI embedding) and ``build`` (``build_report``).
"""

from irv2_core.report.build import build_report
from irv2_core.report.compare import ZOO_REFERENCE, reference_applies
from irv2_core.report.inputs import PIPELINE_FILE, load_metrics
from irv2_core.report.render import artifact_markdown, embed_images, png_data_uri
from irv2_core.report.tables import PIPELINE_ORDER, confused_pairs, per_class_table

__all__ = [
    "PIPELINE_FILE",
    "PIPELINE_ORDER",
    "ZOO_REFERENCE",
    "artifact_markdown",
    "build_report",
    "confused_pairs",
    "embed_images",
    "load_metrics",
    "per_class_table",
    "png_data_uri",
    "reference_applies",
]

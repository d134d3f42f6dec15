"""Typed records of what each stage returns (and, where it writes one, of its JSON file).

One model per stage: :class:`StageRecord`, :class:`ConversionRecord` (``conversion.json``),
:class:`TrainSummary` (``train_summary.json``), :class:`EvalRecord` (``eval.json``),
:class:`ExportRecord` and :class:`ReportRecord`, plus :class:`PipelineFacts` (``pipeline.json``,
what the flow adds to a run folder for its report). The core functions return these; the Prefect
tasks persist ``record.model_dump(mode="json")`` (plain JSON, no class names) and the flow reads
them back with ``Record.model_validate``. Field names are the JSON keys, so files written before
these models existed still read. ``docs/contracts.md`` holds tables generated from these models
(``python scripts/contracts.py``; a unit test checks they are current).

Only pydantic and the standard library are imported here, so any layer may import this module.
"""

from __future__ import annotations

import functools
import hashlib
import json
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

__all__ = [
    "RECORDS",
    "Address",
    "Item",
    "ConversionRecord",
    "EvalMetrics",
    "EvalRecord",
    "ExportRecord",
    "Misclassified",
    "PerImage",
    "PipelineFacts",
    "Record",
    "ReportRecord",
    "StageRecord",
    "StageTiming",
    "TrainSummary",
    "schema_digest",
]


class Item(BaseModel):
    """A small nested object of a record (a list entry or a sub-dict)."""

    model_config = ConfigDict(extra="ignore")


class Address(Item):
    """Where a published output lives: its store, its prefix there and what it was made from."""

    uri: str = Field(description="`<output_uri>/<prefix>`: the published folder")
    prefix: str = Field(description="its key prefix in the store (e.g. `mindrecord/<digest>`)")
    digest: str = Field(description="the content digest it was published for (its cache key)")


class Record(BaseModel):
    """Base of every stage record: unknown keys (from newer or older files) are ignored."""

    model_config = ConfigDict(extra="ignore")

    # Fields a record carries in memory and in task results but not in its file (they describe
    # where the file is, or how the call ended, which the file itself must not pin down).
    FILE_EXCLUDE: ClassVar[frozenset[str]] = frozenset()

    address: Address | None = Field(
        default=None, description="where the stage published it (null: not published)"
    )

    def to_json(self) -> dict[str, Any]:
        """The JSON-safe dict a task persists and a command prints (an unpublished record's
        empty address left out, so it prints as its file reads)."""
        return self.model_dump(mode="json", exclude={"address"} if self.address is None else None)

    def file_content(self) -> dict[str, Any]:
        """The JSON-safe dict the stage writes as its file (without :attr:`FILE_EXCLUDE` and
        the address, which the file cannot know before it is published)."""
        return self.model_dump(mode="json", exclude={"address", *self.FILE_EXCLUDE})


# --- stage ------------------------------------------------------------------------------------


class RejectedKey(Item):
    key: str = Field(description="the object's key at the source")
    reason: str = Field(description="why it was not written")


class StageRecord(Record):
    """What ``stage`` returns (the ``stage`` task persists the same)."""

    dest: str = Field(description="the local folder (absolute)")
    fingerprint: str = Field(description="sha256 of the sorted (key, size, etag) listing")
    objects: int = Field(description="objects mirrored")
    downloaded: int = Field(description="objects fetched by this call")
    unchanged: int = Field(description="objects already there (same key, size, etag)")
    removed: int = Field(description="local files removed because the source deleted them")
    rejected: list[RejectedKey] = Field(description="keys never written (hostile or reserved)")
    bytes: int = Field(description="size of the mirrored set")
    bytes_downloaded: int = Field(description="bytes fetched by this call")
    folder_markers: int = Field(description="zero-byte 'folder/' keys skipped")
    wall_s: float = Field(description="seconds this call took")


# --- convert ----------------------------------------------------------------------------------


class SkippedFile(Item):
    path: str = Field(description="path relative to the data folder")
    reason: str = Field(description="why it was skipped")


class ConvertOptions(Item):
    shards: int
    val_fraction: float
    seed: int
    full_decode: bool


class PageSizes(Item):
    header_size: int
    page_size: int


class MindRecordLayout(Item):
    shards: int = Field(description="files per split")
    sizes: dict[str, PageSizes] = Field(description="per split")


class ConversionRecord(Record):
    """What ``convert`` returns: ``conversion.json`` plus ``out_dir``."""

    FILE_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"out_dir"})

    fingerprint: str = Field(description="the MindRecord folder's cache key")
    input_fingerprint: str = Field(description="of the images converted")
    input_fingerprint_source: str = Field(description="`manifest` or `content`")
    converter_version: int
    data_dir: str = Field(description="the image folder converted (absolute)")
    options: ConvertOptions
    layout: str = Field(description="how the image folder was read (split folders or bare)")
    num_classes: int
    counts: dict[str, dict[str, int]] = Field(description="{split: {class: images}}")
    totals: dict[str, int] = Field(description="{split: images}")
    skipped: list[SkippedFile] = Field(description="broken or oversized files, not converted")
    stored: dict[str, int] = Field(description="images per how they were stored (as-is, ...)")
    ignored_files: int = Field(description="non-image files ignored")
    mindrecord: MindRecordLayout
    files: dict[str, int] = Field(description="{file name: bytes} of the folder's outputs")
    wall_s: float
    img_per_s: float | None
    out_dir: str | None = Field(default=None, description="the MindRecord folder (absolute)")


# --- train ------------------------------------------------------------------------------------


class EvalMetrics(Item):
    """Accuracy and loss over a split (fractions; loss is plain cross-entropy)."""

    top1: float
    top5: float
    loss: float
    count: int = Field(description="images evaluated")


class TrainSummary(Record):
    """What ``train`` returns: ``train_summary.json`` plus ``run_dir`` and ``stopped``."""

    FILE_EXCLUDE: ClassVar[frozenset[str]] = frozenset({"run_dir", "stopped"})

    final_checkpoint: str | None = Field(
        default=None, description="`final.ckpt` (null on ranks > 0 and when stopped early)"
    )
    final_sha256: str | None = Field(default=None, description="sha256 of `final.ckpt`")
    global_step: int
    total_steps: int
    epochs: int
    steps_per_epoch: int
    wall_s: float
    img_per_s: float | None = Field(description="mean over steps, the first (compile) left out")
    last_loss: float | None
    rank_size: int = Field(description="workers that trained together")
    resumed_from_step: int = Field(
        default=0, description="global step the last process resumed from (0: a fresh start)"
    )
    eval: EvalMetrics | None = Field(default=None, description="the last evaluation, if any")
    stack: dict[str, str | None] | None = Field(
        default=None, description="the software stack it trained on (`runtime.stack`)"
    )
    run_dir: str | None = Field(default=None, description="the run folder")
    stopped: bool = Field(
        default=False,
        description="stopped at `stop_after_steps` before the end (no summary file then)",
    )


# --- evaluate ---------------------------------------------------------------------------------


class Misclassified(Item):
    """One misclassified image of the split, kept for the report's strip."""

    index: int = Field(description="position in the split's evaluation (file) order")
    file_name: str | None = Field(
        default=None, description="the MindRecord `file_name` (null for an image-folder split)"
    )
    label: int = Field(description="true class index")
    pred: int = Field(description="predicted (top-1) class index")
    confidence: float = Field(description="softmax probability of `pred`")
    thumbnail: str | None = Field(
        default=None, description="a small JPEG of the image as a `data:image/jpeg;base64` URI"
    )


class PerImage(Item):
    """Each image's outcome, in the split's order: what a paired comparison of two models on the
    same images needs. Arrays are base64 (bits packed with numpy's ``packbits``; labels int32)."""

    split_key: str | None = Field(
        description="identity of the images and their order (MindRecord fingerprint + split); "
        "two evaluations compare only when it is the same"
    )
    count: int
    labels: str = Field(description="true class per image (base64 int32)")
    top1: str = Field(description="top-1 right per image (base64 packed bits)")
    top5: str = Field(description="top-5 right per image (base64 packed bits)")


class EvalRecord(Record):
    """What ``evaluate`` returns and writes to ``--out`` (the flow: ``RUN_DIR/eval.json``)."""

    top1: float
    top5: float
    loss: float
    count: int = Field(description="images evaluated (every one: no dropped remainder)")
    protocol: str = Field(description="evaluation preprocessing: `zoo` or `inception`")
    checkpoint: str
    image_size: int
    classes: list[str] = Field(
        default_factory=list, description="class names by index (classes.json); [] in older files"
    )
    confusion: list[list[int]] | None = Field(
        default=None,
        description="K x K image counts, row = true class, column = predicted; sums to `count`; "
        "null in older files",
    )
    misclassified: list[Misclassified] = Field(
        default_factory=list, description="a few misclassified images, most confident first"
    )
    per_image: PerImage | None = Field(
        default=None, description="each image's outcome (null in files of older releases)"
    )


# --- export -----------------------------------------------------------------------------------


class ExportRecord(Record):
    """What ``export_model`` returns for one written, verified model file."""

    format: str = Field(description="MINDIR, ONNX or AIR")
    path: str
    bytes: int
    sha256: str
    image_size: int
    num_classes: int
    checkpoint: str = Field(description="the checkpoint exported")
    verified_with: str = Field(description="what ran the file, or why it was not verified")
    max_abs_diff: float | None = Field(
        description="vs the network on a fixed input; null if not run"
    )
    input_shape: list[int | None] = Field(description="NCHW; null = dynamic batch")
    batch: str = Field(description="`dynamic` or `static 1`")
    input_contract: dict[str, Any] | None = Field(
        default=None, description="what the model takes (uint8 RGB pixels, protocol, mean/std)"
    )
    contract_path: str | None = Field(
        default=None, description="`<file>.json` beside the export, holding input_contract"
    )


# --- report -----------------------------------------------------------------------------------


class ReportRecord(Record):
    """What ``build_report`` returns: the files it wrote (``tables`` stays in memory)."""

    markdown: str = Field(description="report.md")
    html: str = Field(description="report.html")
    csv: list[str] = Field(description="one CSV per table")
    plots: list[str] = Field(description="PNG files")
    tables: dict[str, list[dict[str, Any]]] = Field(
        default_factory=dict,
        exclude=True,
        description="rows of each table (for UI artifacts); never dumped, the CSVs hold them",
    )


def _partial(model: type[BaseModel], required: tuple[str, ...] = ()) -> type[BaseModel]:
    """*model* with every field but *required* optional (None when absent): for facts that may
    hold only some of a record's fields."""
    fields: dict[str, Any] = {
        name: (info.annotation, Field(description=info.description))
        if name in required
        else (info.annotation | None, Field(default=None, description=info.description))
        for name, info in model.model_fields.items()
        if not info.exclude
    }
    return create_model(f"Partial{model.__name__}", __config__=ConfigDict(extra="ignore"), **fields)


EvalFacts = _partial(EvalRecord)
ExportFacts = _partial(ExportRecord, required=("path",))


class StageTiming(Item):
    """One stage's wall time and final Prefect state (Completed, Cached, ...)."""

    seconds: float
    state: str = ""
    devices: str | None = Field(default=None, description="what it held, e.g. `8 npu`")
    device_hours: float | None = Field(default=None, description="seconds x devices / 3600")
    cost: float | None = Field(default=None, description="device-hours x the rate card's price")

    @model_validator(mode="before")
    @classmethod
    def _from_seconds(cls, value: Any) -> Any:
        return {"seconds": value} if isinstance(value, int | float) else value


class PipelineFacts(Record):
    """``RUN_DIR/pipeline.json``: what the flow adds for the report (``irv2 report --extra``).

    Written by the flow from the task records; read by ``build_report``. An older or hand-written
    file may hold only some fields of an evaluation or export (e.g. top1/top5), so each of their
    fields is optional here; a timing may be bare seconds. ``baseline`` (a whole ``EvalRecord``)
    is the previous accepted model's evaluation the report compares with.
    """

    evaluation: EvalFacts | None = Field(
        default=None, description="an `EvalRecord`, any of its fields"
    )
    exports: list[ExportFacts] = Field(
        default_factory=list, description="`ExportRecord`s, any of their fields but `path`"
    )
    data_fingerprint: str | None = Field(default=None, description="the staged data's")
    mindrecord_fingerprint: str | None = None
    timings: dict[str, StageTiming] = Field(default_factory=dict, description="per stage")
    baseline: EvalRecord | None = Field(
        default=None,
        description="the previous accepted model's `EvalRecord`, to compare with; null if none",
    )
    baseline_label: str | None = Field(
        default=None, description="what `baseline` is (e.g. its run id), shown in the report"
    )
    promotion: str | None = Field(
        default=None, description="the promotion gate's verdict (Markdown), shown in the report"
    )


RECORDS: tuple[type[Record], ...] = (
    StageRecord,
    ConversionRecord,
    TrainSummary,
    EvalRecord,
    ExportRecord,
    ReportRecord,
    PipelineFacts,
)


@functools.cache
def schema_digest(model: type[BaseModel]) -> str:
    """16 hex of the model's JSON schema: put in a cache key, so a stored result of another shape
    is never handed back as this record."""
    schema = json.dumps(model.model_json_schema(), sort_keys=True)
    return hashlib.sha256(schema.encode()).hexdigest()[:16]

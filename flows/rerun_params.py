"""Parameters of the stage-rerun flows (``re-evaluate``, ``re-export``, ``re-report``).

Every rerun takes an existing run: a run folder (``<workdir>/runs/run-<digest>``, what the train
stage wrote) or a published run (``<output_uri>/runs/run-<digest>``, ``s3://`` or ``file://``).
A bad value fails before any task runs, naming the field, the value and how to fix it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flows.params import ExportFormat, unique_formats
from irv2_core.errors import Irv2Error
from irv2_core.models.metadata import EVAL_PROTOCOLS
from irv2_core.storage.pull import split_run_uri
from irv2_core.storage.s3client import check_endpoint_url

__all__ = ["ReEvaluateParams", "ReExportParams", "ReReportParams", "RerunParams"]

STORE_SCHEMES = ("s3://", "file://")
RUN_HINT = (
    "pass the folder the train stage wrote (e.g. ./irv2-work/runs/run-<digest>) or a published "
    "run (s3://bucket/prefix/runs/run-<digest>)"
)


class RerunParams(BaseModel):
    """What every rerun takes: the run, and where a published run's files are fetched to."""

    model_config = ConfigDict(extra="forbid")

    run: str = Field(
        min_length=1,
        description="a run folder (<workdir>/runs/run-<digest>) or a published run "
        "(s3://bucket/prefix/runs/run-<digest>, file:///store/runs/run-<digest>)",
    )
    endpoint_url: str | None = Field(None, description="S3-compatible endpoint of a published run")
    workdir: str = Field(
        "./irv2-work",
        min_length=1,
        description="where a published run's files are fetched to (<workdir>/runs/<run-id>)",
    )

    @field_validator("run")
    @classmethod
    def _a_finished_run(cls, value: str) -> str:
        if value.startswith(STORE_SCHEMES):
            try:
                split_run_uri(value)
            except Irv2Error as exc:
                raise ValueError(str(exc)) from None
            return value
        folder = Path(value).expanduser()
        if not folder.is_dir():
            raise ValueError(f"{value!r} is not a folder; {RUN_HINT}")
        if not (folder / "final.ckpt").is_file():
            raise ValueError(
                f"{value!r} holds no final.ckpt, so it is not a finished run folder (training "
                f"did not finish there, or this is not a run folder); {RUN_HINT}"
            )
        return value

    @field_validator("endpoint_url")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        return check_endpoint_url(value)

    @property
    def published(self) -> bool:
        """Whether *run* names a published run in an object store."""
        return self.run.startswith(STORE_SCHEMES)


class ReEvaluateParams(RerunParams):
    """``re-evaluate``: the run's final.ckpt on another protocol, split or MindRecord folder."""

    eval_protocol: Literal[tuple(EVAL_PROTOCOLS)] | None = Field(  # type: ignore[valid-type]
        None, description="evaluation preprocessing; default: the run's own (config.yaml)"
    )
    split: Literal["train", "val"] = "val"
    data: str | None = Field(
        None,
        description="a MindRecord folder (irv2 convert's output) to evaluate on; default: the "
        "one the run trained on (<workdir>/mindrecord, or the store's conversion)",
    )

    @field_validator("data")
    @classmethod
    def _a_mindrecord_folder(cls, value: str | None) -> str | None:
        if value is not None and not (Path(value).expanduser() / "conversion.json").is_file():
            raise ValueError(
                f"{value!r} is not a MindRecord folder (no conversion.json); pass the folder "
                "`irv2 convert` wrote, or leave data out to use the run's own"
            )
        return value


class ReExportParams(RerunParams):
    """``re-export``: the run's final.ckpt in other formats, each verified."""

    export_formats: list[ExportFormat] = Field(min_length=1, description="e.g. [ONNX]")

    @field_validator("export_formats")
    @classmethod
    def _unique_formats(cls, value: list[str]) -> list[str]:
        return unique_formats(value)


class ReReportParams(RerunParams):
    """``re-report``: the run's report rebuilt from its files (optionally on a re-evaluation)."""

    evaluation: str | None = Field(
        None,
        description="a re-evaluation of this run to report on: its name under <run>/reruns/ "
        "(e.g. evaluate-inception-val-1a2b3c4d); default: the run's own evaluation",
    )

    @field_validator("evaluation")
    @classmethod
    def _a_rerun_name(cls, value: str | None) -> str | None:
        if value is not None and (not value.startswith("evaluate-") or "/" in value):
            raise ValueError(
                f"expected the name of a re-evaluation (evaluate-<protocol>-<split>-<data>, "
                f"as re-evaluate returns it), got {value!r}"
            )
        return value

"""The flow's parameters, validated by pydantic before any stage runs.

Errors name the field (``overrides.batch_size``, ``export_formats`` ...), and the training config
is resolved here (preset + overrides + device target) so that a bad value never reaches a worker.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from irv2_core.config import PRESETS, Config, ConfigError, load_config
from irv2_core.errors import Irv2Error
from irv2_core.export import FORMATS, air_needs_ascend
from irv2_core.promotion.gate import GateRules
from irv2_core.runtime.cost import RateCard
from irv2_core.storage.s3client import check_endpoint_url
from irv2_core.training.gang import GangOptions
from tasks.nodes import NODE_DEPLOYMENT

__all__ = [
    "ExportFormat",
    "FlowParams",
    "flow_signature",
    "unique_formats",
    "validate_model",
    "validate_params",
    "with_signature",
]

M = TypeVar("M", bound=BaseModel)
GATE_PARAMS = ("alpha", "margin_points", "max_class_drop_points", "min_class_support", "approval")


def _gate_field(name: str) -> Any:
    """A flow parameter ``promote_<name>`` with GateRules' default and description (its range is
    checked by GateRules itself, in one place)."""
    rule = GateRules.model_fields[name]
    return Field(rule.default, description=f"promotion gate: {rule.description}")


ExportFormat = Literal[tuple(FORMATS)]  # type: ignore[valid-type]


def unique_formats(value: list[str]) -> list[str]:
    """*value* unchanged; ValueError when it names a format twice (export_formats validators)."""
    if len(set(value)) != len(value):
        raise ValueError(f"lists a format twice: {value}")
    return value


class FlowParams(BaseModel):
    """Parameters of ``train-eval-export`` (the Prefect UI shows the flow's own signature)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(min_length=1, description="s3://bucket/prefix or a local folder")
    workdir: str = Field("./irv2-work", min_length=1)
    preset: str = "cpu-smoke"
    overrides: dict[str, Any] = Field(default_factory=dict)
    endpoint_url: str | None = None
    device_target: Literal["CPU", "GPU", "Ascend"] | None = None
    device_num: int = Field(1, ge=1, le=4096)
    export_formats: list[ExportFormat] = Field(default_factory=lambda: ["MINDIR", "ONNX"])
    num_nodes: int = Field(1, ge=1)
    node_rank: int = Field(0, ge=0)
    master_addr: str = Field(
        "127.0.0.1", description="address of node 0 (the flow's machine) that the other nodes reach"
    )
    master_port: int = Field(8118, ge=1, le=65535)
    node_deployment: str = Field(
        NODE_DEPLOYMENT,
        description="the train-node deployment that runs nodes 1..num_nodes-1 (num_nodes > 1)",
    )
    gang: GangOptions | None = Field(
        None,
        description="num_nodes > 1: train as one Volcano gang of pods (image, namespace, queue, "
        "...) instead of train-node runs; needs output_uri",
    )
    node_join_timeout_s: float = Field(
        600.0,
        gt=0,
        description="num_nodes > 1: seconds every node has to start and join the msrun cluster "
        "before the job fails naming the missing nodes",
    )
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    shards: int = Field(1, ge=1, le=1000)
    train_timeout_s: float | None = Field(None, gt=0)
    rate_card: RateCard | None = Field(
        None,
        description="price of a device-hour by kind (npu, gpu, cpu) for the report's cost; "
        "default: the Prefect Variable irv2-rate-card, else device-hours only",
    )
    budget_device_hours: float | None = Field(
        None, gt=0, description="stop the run (Cancelled) once it would spend more device-hours"
    )
    accept_stack_change: bool = Field(
        False, description="resume a checkpoint written on another software stack"
    )
    stop_grace_s: float = Field(
        60.0, gt=0, le=3600, description="seconds training gets to save its step when stopped"
    )
    # the promotion gate's rules: declared (defaults, ranges, descriptions) in GateRules
    promote_alpha: float = _gate_field("alpha")
    promote_margin_points: float = _gate_field("margin_points")
    promote_max_class_drop_points: float = _gate_field("max_class_drop_points")
    promote_min_class_support: int = _gate_field("min_class_support")
    promote_approval: Literal["auto", "always"] = _gate_field("approval")
    approval_timeout_s: float = Field(
        3600.0, gt=0, description="seconds a person has to decide in the UI; then: rejected"
    )
    output_uri: str | None = Field(
        None,
        description="where every output is published (s3://bucket/prefix or a folder); "
        "workers that share it share the cache and resume each other's training",
    )
    output_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint of output_uri (default: endpoint_url)"
    )
    result_storage: str | None = Field(
        None,
        description="a saved Prefect storage block (e.g. 's3-bucket/irv2-results') for task "
        "results and cache records; default: <output_uri>/prefect",
    )

    @field_validator("source")
    @classmethod
    def _source_exists(cls, value: str) -> str:
        if value.startswith("s3://"):
            if len(value) <= len("s3://") or value[len("s3://") :].startswith("/"):
                raise ValueError(f"expected s3://bucket[/prefix], got {value!r}")
            return value
        folder = Path(value.removeprefix("file://")).expanduser()
        if not folder.is_dir():
            raise ValueError(
                f"{value!r} is neither an s3:// URI nor an existing local folder; "
                "pass s3://bucket/prefix or the folder that holds the class folders"
            )
        return value

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str) -> str:
        if value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose one of: {', '.join(PRESETS)}")
        return value

    @field_validator("endpoint_url", "output_endpoint_url")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        return check_endpoint_url(value)

    @field_validator("output_uri")
    @classmethod
    def _store_uri(cls, value: str | None) -> str | None:
        if value is None or value.startswith("s3://"):
            if value is not None and not value[len("s3://") :].split("/")[0]:
                raise ValueError(f"expected s3://bucket[/prefix], got {value!r}")
            return value
        if "://" in value.removeprefix("file://"):
            raise ValueError(f"expected s3://bucket[/prefix] or a local folder, got {value!r}")
        return value

    @field_validator("export_formats")
    @classmethod
    def _unique_formats(cls, value: list[str]) -> list[str]:
        return unique_formats(value)

    def gate_rules(self) -> GateRules:
        """The promotion gate's rules these parameters set."""
        return GateRules(**{k: getattr(self, f"promote_{k}") for k in GATE_PARAMS})

    @model_validator(mode="after")
    def _consistent(self) -> FlowParams:
        if self.node_rank >= self.num_nodes:
            raise ValueError(f"node_rank ({self.node_rank}) must be < num_nodes ({self.num_nodes})")
        if self.gang is not None and (self.num_nodes < 2 or self.output_uri is None):
            raise ValueError("gang: a gang trains num_nodes >= 2 pods that share nothing but "
                             "the object store: set num_nodes and output_uri")  # fmt: skip
        cfg = self.resolve_config()
        try:
            self.gate_rules()
        except ValidationError as err:  # named as the flow's parameters, not GateRules' fields
            named = (f"promote_{e['loc'][0]}: {e['msg']}" for e in err.errors())
            raise ValueError("; ".join(named)) from None
        if reason := air_needs_ascend(self.export_formats, cfg.device_target, "the config"):
            raise ValueError(reason)
        return self

    def resolve_config(self) -> Config:
        """The training config: preset, then overrides, then device_target if given."""
        overrides = dict(self.overrides)
        if self.device_target is not None:
            overrides["device_target"] = self.device_target
        try:
            return load_config(self.preset, overrides=overrides)
        except ConfigError as exc:
            raise ValueError(f"overrides: {exc}") from None

    def store(self) -> dict[str, Any] | None:
        """The object store the outputs go to, as a JSON-safe task parameter (or None)."""
        if self.output_uri is None:
            return None
        return {
            "uri": self.output_uri,
            "endpoint_url": self.output_endpoint_url or self.endpoint_url,
        }

    def launch(self) -> dict[str, Any]:
        """How training is started: device and node counts for msrun (the port only across nodes,
        so that single-node run folders keep their names)."""
        launch = {
            "device_num": self.device_num,
            "num_nodes": self.num_nodes,
            "node_rank": self.node_rank,
            "master_addr": self.master_addr,
        }
        if self.num_nodes > 1:
            launch["master_port"] = self.master_port
        return launch


def validate_params(**values: Any) -> FlowParams:
    """Build FlowParams or raise Irv2Error listing each bad field with its message."""
    return validate_model(FlowParams, values)


def validate_model(model: type[M], values: dict[str, Any]) -> M:
    """Build the parameters *model* from *values* or raise Irv2Error listing each bad field."""
    try:
        return model(**values)
    except ValidationError as err:
        lines = ["invalid flow parameters:"]
        for e in err.errors():
            msg = e["msg"].removeprefix("Value error, ")
            # whole-model checks already start with the field they are about
            field = ".".join(str(p) for p in e["loc"])
            lines.append(f"  - {field}: {msg}" if field else f"  - {msg}")
        raise Irv2Error("\n".join(lines)) from None


def flow_signature(model: type[BaseModel] = FlowParams) -> inspect.Signature:
    """The flow function's signature, made from the parameters *model* (their one declaration):
    Prefect builds the UI's parameter form and the deployment schema from it."""
    params = []
    for name, field in model.model_fields.items():
        default = inspect.Parameter.empty
        if not field.is_required():
            default = field.get_default(call_default_factory=True)
        params.append(
            inspect.Parameter(
                name,
                inspect.Parameter.KEYWORD_ONLY,
                default=default,
                annotation=field.annotation,
            )
        )
    return inspect.Signature(params, return_annotation=dict[str, Any])


def with_signature(signature: inspect.Signature) -> Callable[[Callable], Callable]:
    """Decorator: give a ``**kwargs`` function *signature* (what Prefect reads for the flow's
    parameter schema), keeping its name so the deployment entrypoint names the flow."""

    def apply(fn: Callable) -> Callable:
        fn.__signature__ = signature
        return fn

    return apply

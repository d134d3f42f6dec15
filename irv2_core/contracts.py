"""The record tables of ``docs/contracts.md``, generated from the models in ``irv2_core.records``
(``python scripts/contracts.py``; a unit test checks the page is current)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from irv2_core.lineage import LINEAGE_RECORDS
from irv2_core.records import RECORDS

# every model with a table in docs/contracts.md, in page order
TABLED = (*RECORDS, *LINEAGE_RECORDS)

__all__ = ["TABLED", "contract_tables"]


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    for prefix in ("typing.", "irv2_core.records.", "pydantic.main.", "Partial"):
        text = text.replace(prefix, "")
    return text.replace("NoneType", "None")


def _rows(model: type[BaseModel], prefix: str = "") -> list[str]:
    rows = []
    for name, info in model.model_fields.items():
        if info.exclude:
            continue
        ann = info.annotation
        notes = [info.description] if info.description else []
        if name == "address" or name in getattr(model, "FILE_EXCLUDE", ()):
            notes.append("not in the file")
        type_name = _type_name(ann).replace("|", "\\|")
        rows.append(f"| `{prefix}{name}` | `{type_name}` | {'; '.join(notes)} |")
        nested = _nested_model(ann)
        # a record of its own (e.g. PipelineFacts.baseline) has its own table
        if (
            nested is not None
            and not nested.__name__.startswith("Partial")
            and nested not in TABLED
        ):
            sub = f"{prefix}{name}[]." if _is_list(ann) else f"{prefix}{name}."
            if _is_dict(ann):
                sub = f"{prefix}{name}.<key>."
            rows += _rows(nested, sub)
    return rows


def _args(annotation: Any) -> tuple[Any, ...]:
    return getattr(annotation, "__args__", ()) or ()


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in _args(annotation):
        found = _nested_model(arg)
        if found is not None:
            return found
    return None


def _is_list(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is list


def _is_dict(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) is dict


def contract_tables() -> str:
    """Markdown tables of every record's fields (the generated part of docs/contracts.md)."""
    parts = []
    for model in TABLED:
        doc = " ".join((model.__doc__ or "").split("\n\n")[0].split())
        parts += [f"### `{model.__name__}`", "", doc, ""]
        parts += ["| field | type | notes |", "|---|---|---|", *_rows(model), ""]
    return "\n".join(parts).rstrip() + "\n"

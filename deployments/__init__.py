"""The Prefect deployments of the project, shipped inside the installed package.

``prefect.yaml`` beside this file is the one definition of deployment names, parameters, schedules
and work pools: ``prefect deploy --prefect-file deployments/prefect.yaml`` reads it from a checkout,
and ``irv2 serve`` reads it from the installed package (a wheel works as well as a checkout).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from irv2_core.errors import Irv2Error

__all__ = ["PREFECT_YAML", "load_deployment_specs"]

PREFECT_YAML = Path(__file__).resolve().with_name("prefect.yaml")


def load_deployment_specs(
    path: str | Path = PREFECT_YAML, names: list[str] | None = None
) -> list[dict[str, Any]]:
    """The ``deployments`` entries of a prefect.yaml, optionally only those called *names*."""
    path = Path(path)
    try:
        specs = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("deployments") or []
    except OSError as exc:
        raise Irv2Error(f"cannot read {path}: {exc.strerror}; pass --file PREFECT_YAML") from None
    known = [s.get("name") for s in specs]
    unknown = sorted(set(names or []) - set(known))
    if unknown:
        raise Irv2Error(f"no deployment named {', '.join(unknown)} in {path}; it has: {known}")
    return [s for s in specs if not names or s.get("name") in names]

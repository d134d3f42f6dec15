"""``irv2 serve``: serve the deployments of ``deployments/prefect.yaml`` from this process.

No work pool or worker is needed: Prefect's ``serve`` registers the deployments with the API
(``PREFECT_API_URL``, e.g. a ``prefect server start``) and runs their flow runs here, on schedule
or on ``prefect deployment run train-eval-export/<name>``. ``prefect.yaml`` stays the one
definition of names, parameters and schedules. Prefect is used only through ``flows.serving``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from irv2_core.errors import Irv2Error

__all__ = ["DEFAULT_FILE", "add_cli", "build_deployments", "load_deployment_specs"]

DEFAULT_FILE = Path(__file__).resolve().parents[1] / "deployments" / "prefect.yaml"


def load_deployment_specs(
    path: str | Path = DEFAULT_FILE, names: list[str] | None = None
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


def _serving() -> Any:
    try:
        from flows import serving
    except ImportError as exc:
        raise Irv2Error(
            f"irv2 serve needs Prefect and the project's flows ({exc}); install the project "
            "with `pip install -e .` from the repository root"
        ) from None
    return serving


def build_deployments(specs: list[dict[str, Any]]) -> list[Any]:
    """RunnerDeployments of the train-eval-export flow for each spec (name, parameters, cron)."""
    return _serving().build_deployments(specs)


def _run(args: argparse.Namespace) -> int:
    _serving().serve_deployments(load_deployment_specs(args.file, args.only), limit=args.limit)
    return 0


def add_cli(subparsers: Any) -> None:
    """Register ``irv2 serve [--only NAME ...] [--file prefect.yaml] [--limit N]``."""
    p = subparsers.add_parser("serve", help="serve the Prefect deployments from this process")
    p.add_argument("--file", default=str(DEFAULT_FILE), help="prefect.yaml with the deployments")
    p.add_argument("--only", nargs="+", metavar="NAME", help="serve only these deployments")
    p.add_argument("--limit", type=int, default=1, help="flow runs at a time (default 1)")
    p.set_defaults(func=_run)

"""The ``irv2`` console script: the library's verbs plus the orchestration ones.

``irv2_core.cli`` holds the core verbs (stage ... report) and works without Prefect; this adds
``irv2 demo`` (the whole flow on the digits image set) and ``irv2 serve`` (the deployments).
"""

from __future__ import annotations

from irv2_core import cli as core_cli

__all__ = ["COMMANDS", "main"]

COMMANDS: dict[str, core_cli.Command] = {
    **core_cli.COMMANDS,
    "demo": ("flows.demo", "add_demo", "run the whole flow locally on a small real image set"),
    "serve": ("flows.serve", "add_serve", "serve the Prefect deployments from this process"),
    "notify": ("flows.notify", "add_notify", "tell a webhook when a run needs a person"),
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``irv2`` console script."""
    return core_cli.main(argv, COMMANDS)

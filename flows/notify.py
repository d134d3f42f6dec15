"""``irv2 notify URL``: send a person the promotion decisions that need them, and failures.

Saves a Prefect custom-webhook notification block that POSTs ``{"subject", "body"}`` as JSON to
*URL*, and creates the automation shipped in ``deployments/promotion-notifications.yaml`` with
that block: a train-eval-export run that asks for approval, ends Not promoted or fails is sent
there. Run it again to point the notifications elsewhere (the block and automation are replaced).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from irv2_core.errors import Irv2Error
from irv2_core.storage.s3client import check_endpoint_url

__all__ = ["NOTIFICATIONS_YAML", "add_notify", "install_notifications"]

NOTIFICATIONS_YAML = (
    Path(__file__).resolve().parents[1] / "deployments" / ("promotion-notifications.yaml")
)


def _automation_spec(path: Path = NOTIFICATIONS_YAML) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))["automations"][0]


def install_notifications(url: str, name: str = "irv2-promotion-webhook") -> str:
    """Save the webhook block *name* for *url* and (re)create the automation; its id."""
    from prefect.automations import Automation
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    try:
        check_endpoint_url(url)
    except ValueError as exc:
        raise Irv2Error(f"webhook URL {exc}") from None
    block = CustomWebhookNotificationBlock(
        name=name, url=url, method="POST", json_data={"subject": "{{subject}}", "body": "{{body}}"}
    )
    block_id = block.save(name, overwrite=True)
    spec = _automation_spec()
    spec["actions"][0]["block_document_id"] = str(block_id)
    if name != "irv2-promotion-webhook":  # one automation per block
        spec["name"] = f"{spec['name']}-{name}"
    with get_client(sync_client=True) as client:
        for old in client.read_automations_by_name(spec["name"]):
            client.delete_automation(old.id)
    return str(Automation.model_validate(spec).create().id)


def _run_notify(args: argparse.Namespace) -> int:
    automation = install_notifications(args.url, args.block_name)
    print(f"notifications of train-eval-export go to {args.url} (automation {automation})")
    return 0


def add_notify(subparsers) -> None:
    """Register ``irv2 notify URL [--block-name NAME]``."""
    p = subparsers.add_parser(
        "notify",
        help="notify a webhook when a run asks for approval, is not promoted, or fails",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("url", help="the webhook to POST {subject, body} to (http:// or https://)")
    p.add_argument("--block-name", default="irv2-promotion-webhook", help="the block's name")
    p.set_defaults(func=_run_notify)

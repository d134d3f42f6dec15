"""Approving and rejecting a promotion in the Prefect UI, in a real browser.

A served run of ``train-eval-export`` whose deployment asks for approval (``promote_approval``
always) pauses after its report; the flow-run page's Resume button opens the form the run asked
for (approve, comment, reviewer) below the gate's comparison. Filled in and submitted in
Chromium, it decides the promotion: approved, the run's model is put in service with the
reviewer and comment recorded; rejected, the model in service stays as it was. (A run left alone
past its timeout is rejected: tests/flow/test_flow.py.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from irv2_core.lineage import ServiceRecord
from irv2_core.records import EvalRecord

from .uikit import DEPLOYMENT, Api, poll_page, run_deployment, wait_for

pytestmark = [pytest.mark.ui, pytest.mark.slow]

RUN_S = 900  # training and compiling on a shared 2-core machine (the second run is cached)
STATE_S = 180


def _workdir(served: dict[str, Any]) -> Path:
    """This module's own workdir: the other UI tests' run must train, not find one cached."""
    return served["workdir"].parent / "approval-work"


def _in_service(workdir: Path) -> Path:  # the deployment's own record: models/<deployment>
    """A model in service from elsewhere (top-1 0.5), so the served run is a new candidate."""
    evaluation = EvalRecord(top1=0.5, top5=1.0, loss=1.0, count=6, protocol="zoo",
                            checkpoint="elsewhere/final.ckpt", image_size=75)  # fmt: skip
    record = ServiceRecord(run_id="run-in-service", run_uri="elsewhere", eval=evaluation)
    path = workdir / "models" / DEPLOYMENT / "current.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record.file_content()))
    return path


def _decide_in_the_ui(served: dict[str, Any], page: Any, approve: bool, comment: str) -> str:
    """Start a run that asks, wait for its pause, and answer the form in the browser."""
    api: Api = served["api"]
    run_id = run_deployment(served["env"], promote_approval="always", approval_timeout_s=1800,
                            workdir=_workdir(served))  # fmt: skip
    wait_for("the run to pause for approval", lambda: api.state(run_id) == "Paused", RUN_S,
             every_s=2, log=served["serve_log"])  # fmt: skip
    url = f"{served['ui']}/runs/flow-run/{run_id}"
    poll_page(page, url, "the Resume button", lambda t: "Resume" in t and t, STATE_S)
    page.get_by_role("button", name="Resume").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Promotion of").first.wait_for()  # the gate's comparison, above the form
    switch = dialog.get_by_role("switch").first
    if (switch.get_attribute("aria-checked") == "true") != approve:  # as the form shows it
        switch.click()
    assert switch.get_attribute("aria-checked") == ("true" if approve else "false")
    # the form's labels name no input (their `for` matches no id): the text boxes in field order
    comment_box, reviewer_box = dialog.locator("textarea").nth(0), dialog.locator("textarea").nth(1)
    comment_box.fill(comment)
    reviewer_box.fill("ana in the browser")
    dialog.get_by_role("button", name="Submit").click()
    ended = ("Completed", "Not promoted", "Failed", "Crashed")
    wait_for("the run to end", lambda: api.state(run_id) in ended, RUN_S, every_s=2,
             log=served["serve_log"])  # fmt: skip
    return run_id


def test_a_run_approved_in_the_browser_is_promoted(served, new_page):
    current = _in_service(_workdir(served))
    run_id = _decide_in_the_ui(served, new_page(), True, "checked it")
    record = ServiceRecord.model_validate_json(current.read_text())
    assert served["api"].state(run_id) == "Completed"
    assert record.decided_by == "ana in the browser" and record.reason == "checked it"
    assert record.decision == "approve" and record.history[0].run_id == "run-in-service"


def test_a_run_rejected_in_the_browser_leaves_the_model_in_service(served, new_page):
    current = _in_service(_workdir(served))
    before = current.read_text()
    page = new_page()
    run_id = _decide_in_the_ui(served, page, False, "too many confusions")
    assert served["api"].state(run_id) == "Not promoted"
    assert current.read_text() == before
    url = f"{served['ui']}/runs/flow-run/{run_id}"
    shown = poll_page(page, url, "the state Not promoted", lambda t: "Not promoted" in t, STATE_S)
    assert shown

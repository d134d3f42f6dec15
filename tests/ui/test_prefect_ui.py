"""The Prefect UI in a real browser, on one served flow run of ``train-eval-export``.

The run is started with ``prefect deployment run``; once training has written its first checkpoint
the flow-run process (``python -m prefect.engine``, a child of ``irv2 serve``) is SIGKILLed; the UI
must show the run Crashed, and Retry (button, then the dialog's confirm button) must finish it with
stage and convert Cached and training resumed from the checkpoint. Meanwhile a second browser reads
the ``train-progress`` artifact page over and over, recording each value it shows.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import pytest

from .conftest import CHROMIUM, TOTAL_STEPS
from .uikit import Api, flow_run_process, page_text, poll_page, run_deployment, wait_for

pytestmark = [pytest.mark.ui, pytest.mark.slow]

RUN_S = 900  # one attempt of the flow run, compile included, on a shared 2-core machine
STATE_S = 180  # a state change reaching the API and the page
STAGES = ("stage", "convert", "train", "evaluate", "export-MINDIR", "report")
STEP = re.compile(r"step (\d+)/(\d+)")


class ProgressWatcher(threading.Thread):
    """Reads the run's newest ``train-progress`` artifact page in its own headless Chromium about
    every second, recording each new ``step N/M`` it shows, until stopped."""

    def __init__(self, ui: str, api_url: str, flow_run_id: str) -> None:
        super().__init__(daemon=True, name="progress-watcher")
        self.ui, self.api, self.flow_run_id = ui, Api(api_url), flow_run_id
        self.values: list[str] = []  # distinct consecutive values, as the page showed them
        self.pages_read = 0
        self.error: BaseException | None = None
        self.stopped = threading.Event()

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(
                    executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
                )
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                while not self.stopped.is_set():
                    self._read_once(page)
                    self.stopped.wait(1.0)
                browser.close()
        except BaseException as exc:  # reported by the test that reads the values
            self.error = exc

    def _read_once(self, page: Any) -> None:
        try:
            found = self.api.artifacts(self.flow_run_id, "train-progress")
            if not found:
                return
            page.goto(f"{self.ui}/artifacts/artifact/{found[0]['id']}", timeout=60_000)
            page.get_by_text(STEP).first.wait_for(timeout=10_000)
            match = STEP.search(page_text(page))
        except Exception:  # not created / not rendered yet, or a page load raced a restart
            return
        self.pages_read += 1
        if match and (not self.values or self.values[-1] != match.group(0)):
            self.values.append(match.group(0))

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=120)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _first_checkpoint(workdir: Path) -> dict[str, Any] | None:
    for latest in workdir.glob("runs/run-*/checkpoints/latest.json"):
        return json.loads(latest.read_text())
    return None


@pytest.fixture(scope="module")
def retried_run(served, new_page) -> dict[str, Any]:
    """One flow run: killed after its first checkpoint, seen Crashed, retried from the UI, and
    waited for until Completed. Returns what was observed on the way."""
    import psutil

    api: Api = served["api"]
    run_id = run_deployment(served["env"])
    url = f"{served['ui']}/runs/flow-run/{run_id}"
    watcher = ProgressWatcher(served["ui"], api.url, run_id)
    watcher.start()
    try:
        checkpoint = wait_for(
            "training's first checkpoint",
            lambda: _first_checkpoint(served["workdir"]),
            RUN_S,
            every_s=0.2,
            log=served["serve_log"],
        )
        engine = wait_for("the flow-run process", lambda: flow_run_process(run_id), 60)
        descendants = engine.children(recursive=True)
        engine.kill()
        _, survivors = psutil.wait_procs(descendants, timeout=60)
        for proc in survivors:  # reported by the test; not left running into the retry
            proc.kill()

        page = new_page()
        crashed_page = poll_page(
            page, url, "the state badge Crashed", lambda t: "Crashed" in _lines(t) and t, STATE_S
        )
        page.get_by_role("button", name="Retry").first.click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_text("Any task runs without a persisted result").wait_for()
        dialog.get_by_role("button", name="Retry").click()

        def completed() -> bool:
            state = api.state(run_id)
            # the killed attempt's state lasts until the retry is scheduled: fail on a second end
            ended = state in ("Failed", "Crashed", "Cancelled")
            if ended and api.get(f"/flow_runs/{run_id}").get("run_count", 0) >= 2:
                pytest.fail(f"the retried run ended {state}")
            return state == "Completed"

        log = served["serve_log"]
        wait_for("the retried run to complete", completed, RUN_S, every_s=2, log=log)
    finally:
        watcher.stop()
    return {
        "id": run_id,
        "url": url,
        "page": page,
        "checkpoint": checkpoint,
        "survivors": [p.pid for p in survivors],
        "crashed_page": crashed_page,
        "progress": watcher,
        "served": served,
    }


def _task_runs_tab(page: Any, url: str, names: list[str]) -> str:
    """The Task Runs tab's text once it lists every task run in *names*."""

    def listed(_: str) -> str | None:
        tab = page.get_by_text("Task Runs", exact=True).first
        tab.click()
        text = page_text(page)
        return text if all(name in text for name in names) else None

    return poll_page(page, url, f"task runs {names} in the Task Runs tab", listed, STATE_S)


def test_flow_run_page_lists_the_stages_and_shows_training_progress(retried_run):
    api: Api = retried_run["served"]["api"]
    runs = api.task_runs(retried_run["id"])
    names = sorted({r["name"] for r in runs})
    text = _task_runs_tab(retried_run["page"], retried_run["url"], names)
    for stage in STAGES:
        assert re.search(rf"^{re.escape(stage)}(-\w+)?$", text, re.M), f"no {stage} task run"

    watcher: ProgressWatcher = retried_run["progress"]
    assert watcher.error is None, f"the progress watcher broke: {watcher.error!r}"
    steps = {int(STEP.match(v).group(1)) for v in watcher.values}
    assert len(steps) >= 2, (
        f"the train-progress artifact page showed {watcher.values} in {watcher.pages_read} reads"
    )
    assert all(v.endswith(f"/{TOTAL_STEPS}") for v in watcher.values), watcher.values


def test_crashed_run_retried_from_the_ui_completes_and_resumes_training(retried_run):
    assert retried_run["survivors"] == [], "training outlived its killed flow-run process"
    page = retried_run["page"]
    badge = "the state badge Completed"
    poll_page(page, retried_run["url"], badge, lambda t: "Completed" in _lines(t), STATE_S)

    api: Api = retried_run["served"]["api"]
    runs = api.task_runs(retried_run["id"])
    cached = {r["name"] for r in runs if (r.get("state") or {}).get("name") == "Cached"}
    text = _task_runs_tab(page, retried_run["url"], sorted(cached))
    lines = _lines(text)
    for stage in ("stage", "convert"):
        rows = [i for i, line in enumerate(lines) if re.fullmatch(rf"{stage}-\w+", line)]
        assert any("Cached" in lines[i : i + 4] for i in rows), (
            f"no {stage} task run shown Cached in the Task Runs tab"
        )

    killed_at = retried_run["checkpoint"]["step"]
    logs = poll_page(
        page,
        retried_run["url"],
        "the training log line 'resume: restored step'",
        lambda t: re.search(r"resume: restored step (\d+)/(\d+)", t),
        STATE_S,
    )
    assert 0 < int(logs.group(1)) == killed_at, logs.group(0)
    assert int(logs.group(2)) == TOTAL_STEPS
    # the server's own PostgreSQL database holds the run, completed after the retry
    db = retried_run["served"]["db"]
    rows = db.query(f"select state_name, run_count from flow_run where id = '{retried_run['id']}'")
    assert len(rows) == 1 and rows[0][0] == "Completed" and int(rows[0][1]) >= 2, rows


def test_report_artifact_page_shows_its_plots(retried_run, new_page):
    api: Api = retried_run["served"]["api"]
    found = api.artifacts(retried_run["id"], "irv2-report")
    if not found:
        pytest.fail("no irv2-report artifact")
    page = new_page()
    url = f"{retried_run['served']['ui']}/artifacts/artifact/{found[0]['id']}"
    # every image of the page is the report's (the UI's own logo and icons are inline SVG)
    plots = page.locator("img")
    poll_page(page, url, "the report's images", lambda _: plots.count() > 0, STATE_S)
    wait_for(
        "the report's images to finish loading",
        lambda: all(plots.nth(i).evaluate("img => img.complete") for i in range(plots.count())),
        60,
        every_s=0.5,
    )
    widths = {
        plots.nth(i).get_attribute("alt"): plots.nth(i).evaluate("img => img.naturalWidth")
        for i in range(plots.count())
    }
    assert all(w > 0 for w in widths.values()), f"plots that did not load (naturalWidth): {widths}"

"""Fixtures of the UI tier: ``irv2 serve`` against the session's Prefect server (on PostgreSQL:
tests/support/prefect_server.py) with one deployment of ``train-eval-export`` on a few digit
images, and headless Chromium (Debian's ``/usr/bin/chromium``) driven by Playwright for Python.

Only public interfaces: the server and ``irv2 serve`` are subprocesses, each in its own process
group (killed at teardown, also after a failure), and runs start with ``prefect deployment run``.
Without Playwright or the browser the whole tier is skipped with the reason, or fails when ``CI``
is set (tests/support/prerequisites.py: there a missing one is an install bug). A failure (setup or
test) saves a screenshot and the HTML of every open page into a folder named in the report;
``IRV2_UI_ARTIFACTS`` chooses that folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from support.prerequisites import missing

from .uikit import (
    DEPLOYMENT,
    FLOW_NAME,
    Api,
    kill_process_group,
    start_serve,
    tail,
    wait_for,
)

CHROMIUM = os.environ.get("IRV2_UI_CHROMIUM", "/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]

# 3 digit classes x 8 images at 75 px; 3 epochs x 3 steps of 4 images with a checkpoint after
# every epoch (so one exists long before the end), one evaluation at the end, MINDIR only.
PER_CLASS = 8
KEEP_CLASSES = ("0", "1", "2")
OVERRIDES = {
    "batch_size": 4,
    "epoch_size": 3,
    "max_steps_per_epoch": 3,
    "save_checkpoint_epochs": 1,
    "keep_checkpoint_max": 1,
    "drop_rate": 0.0,
    "eval_every_epochs": 0,
    "eval_batch_size": 4,
    "log_every_steps": 1,
    "work_nums": 2,
}
TOTAL_STEPS = OVERRIDES["epoch_size"] * OVERRIDES["max_steps_per_epoch"]
STARTUP_S = 300  # a cold `irv2 serve` on a busy 2-core machine

_OPEN_PAGES: list[Any] = []  # pages the failure hook screenshots


def pytest_collection_modifyitems(items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(pytest.mark.ui)


@pytest.fixture(scope="package", autouse=True)
def _ui_prerequisites() -> None:
    """Skip the tier (fail it with CI set), saying what is missing, without Playwright or the
    system Chromium."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing(
            "ui tier: Playwright for Python",
            "pip install -e '.[test]' (or: pip install playwright)",
        )
    if not os.access(CHROMIUM, os.X_OK):
        missing(f"ui tier: Chromium at {CHROMIUM}", "apt-get install -y chromium")


# --- failure artifacts --------------------------------------------------------------------------


@pytest.fixture(scope="package")
def failure_dir(request) -> Path:
    """Where failures leave screenshots: not under pytest's basetemp, which other pytest runs on
    the machine rotate away (only the last three are kept); made on the first failure."""
    folder = Path(
        os.environ.get("IRV2_UI_ARTIFACTS")
        or Path(tempfile.gettempdir())
        / "irv2-ui-failures"
        / f"{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    )
    request.config._irv2_ui_failure_dir = folder
    return folder


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        folder = _save_pages(item, rep.when)
        if folder is not None:
            rep.sections.append(("ui failure artifacts", f"screenshots and page HTML in {folder}"))
            with contextlib.suppress(Exception):  # also in the one-line summary (-ra)
                rep.longrepr.addsection("ui failure artifacts", str(folder))


def _save_pages(item, when: str) -> Path | None:
    root = getattr(item.config, "_irv2_ui_failure_dir", None)
    if root is None or not _OPEN_PAGES:
        return None
    folder = Path(root) / re.sub(r"[^\w.-]+", "_", f"{item.name}-{when}")
    folder.mkdir(parents=True, exist_ok=True)
    for i, page in enumerate(list(_OPEN_PAGES)):
        with contextlib.suppress(Exception):
            (folder / f"page{i}.url.txt").write_text(page.url, encoding="utf-8")
            (folder / f"page{i}.html").write_text(page.content(), encoding="utf-8")
            page.screenshot(path=str(folder / f"page{i}.png"), full_page=True, timeout=30_000)
    return folder


# --- server, image set, served deployment -------------------------------------------------------


@pytest.fixture(scope="package")
def image_set(tmp_path_factory) -> Path:
    """Real digit JPEGs from the demo's generator: classes 0-2, 8 images each, 75 px."""
    from irv2_core.data.digits import make_digits_dataset

    root = tmp_path_factory.mktemp("ui-images") / "digits"
    make_digits_dataset(root, per_class=PER_CLASS, image_size=75)
    for folder in root.iterdir():
        if folder.name not in KEEP_CLASSES:
            shutil.rmtree(folder)
    return root


@pytest.fixture(scope="package")
def served(prefect_server, image_set, tmp_path_factory) -> Iterator[dict[str, Any]]:
    """``irv2 serve --file prefect.yaml`` of one deployment, in its own process group."""
    base = tmp_path_factory.mktemp("ui-serve")
    workdir = base / "work"
    spec = {
        "name": "irv2-ui-tests",
        "deployments": [
            {
                "name": DEPLOYMENT,
                "description": "UI tests: 3 digit classes, 9 steps at 75 px, MINDIR only",
                "entrypoint": "flows/train_eval_export.py:train_eval_export",
                "parameters": {
                    "source": str(image_set),
                    "workdir": str(workdir),
                    "preset": "cpu-smoke",
                    "device_target": "CPU",
                    "export_formats": ["MINDIR"],
                    "overrides": OVERRIDES,
                },
            }
        ],
    }
    prefect_yaml = base / "prefect.yaml"
    prefect_yaml.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    env = prefect_server["env"]
    api: Api = prefect_server["api"]
    log = base / "serve.log"
    proc = start_serve(prefect_yaml, env, base, log)
    try:

        def registered() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"irv2 serve exited ({proc.returncode}):\n{tail(log)}")
            return bool(api.get(f"/deployments/name/{FLOW_NAME}/{DEPLOYMENT}").get("id"))

        wait_for("irv2 serve to register its deployment", registered, STARTUP_S, log=log)
        yield {**prefect_server, "workdir": workdir, "serve_log": log}
    finally:
        kill_process_group(proc)


# --- the browser --------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser(failure_dir) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"], headless=True
        )
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="package")
def new_page(browser) -> Iterator[Callable[[], Any]]:
    """Opens 1600x1100 pages that a failure screenshots; they close at the end of the session."""
    context = browser.new_context(viewport={"width": 1600, "height": 1100})
    context.set_default_timeout(60_000)

    def open_page() -> Any:
        page = context.new_page()
        _OPEN_PAGES.append(page)
        return page

    try:
        yield open_page
    finally:
        _OPEN_PAGES.clear()
        context.close()

"""A wheel built from the repository carries the deployments: ``irv2 serve`` works from it.

The wheel is installed without dependencies into a fresh virtual environment that borrows the test
environment's site-packages (MindSpore, Prefect ...) through a path file, and is run from outside
the checkout, so only the wheel's own files can provide ``irv2_core``, ``flows``, ``tasks`` and
``deployments``.
"""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing from the checkout
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp), str(REPO)], tmp)
    wheel = next(tmp.glob("irv2_train_eval_export-*.whl"))
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    purelib = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    # borrow the dependencies; this is a plain path entry, so the checkout's editable-install
    # finder (a .pth hook in that folder) is not run
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    _run(
        [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install",
         "--no-deps", "-q", str(wheel)],
        tmp,
    )  # fmt: skip
    return venv, tmp, purelib


def test_the_wheel_ships_the_deployments(wheel_venv):
    venv, tmp, purelib = wheel_venv
    shipped = purelib / "deployments" / "prefect.yaml"
    assert shipped.is_file()
    assert shipped.read_bytes() == (REPO / "deployments" / "prefect.yaml").read_bytes()
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import deployments, flows; "
         "print(deployments.PREFECT_YAML); print(flows.__file__)"],
        tmp,
    ).stdout.split()  # fmt: skip
    assert all(Path(p).is_relative_to(venv) for p in where), where


def test_irv2_serve_help_and_list_work_from_the_wheel(wheel_venv):
    venv, tmp, _ = wheel_venv
    irv2 = str(venv / "bin" / "irv2")
    assert "--only" in _run([irv2, "serve", "--help"], tmp).stdout
    listed = _run([irv2, "serve", "--list"], tmp, timeout=300).stdout
    names = [line.split(":")[0] for line in listed.splitlines()]
    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text(encoding="utf-8"))
    declared = [d["name"] for d in spec["deployments"]]  # every one, in the file's order
    assert {"local", "ascend-8p-k8s", "process", "evaluate"} <= set(declared)
    assert names == declared, listed
    assert "usage: irv2 train" in _run([irv2, "train", "--help"], tmp).stdout

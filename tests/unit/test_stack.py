"""The software stack recorded in checkpoints and run.json, and how two are compared."""

from __future__ import annotations

import pytest

from irv2_core.runtime import stack
from irv2_core.runtime.stack import IMAGE_ENV, software_stack, stack_differences


def test_the_stack_names_mindspore_python_the_code_and_the_packages(monkeypatch):
    import platform

    import mindspore as ms

    monkeypatch.setenv(IMAGE_ENV, "registry.example.com/irv2:0.1@sha256:abc")
    now = software_stack("CPU")
    assert now["mindspore"] == ms.__version__ and now["python"] == platform.python_version()
    assert now["device_target"] == "CPU" and now["image"].endswith("@sha256:abc")
    assert len(now["code"]) == len(now["packages"]) == 16
    assert software_stack("CPU") == now  # stable within a process


def test_cann_and_driver_versions_are_read_from_the_ascend_install(tmp_path, monkeypatch):
    """The files an Ascend install has (``version.cfg`` of the toolkit as CANN 7/8 write it,
    the driver's ``version.info``); absent files give None, never a guess."""
    toolkit, driver = tmp_path / "toolkit", tmp_path / "version.info"
    toolkit.mkdir()
    (toolkit / "version.cfg").write_text(
        "# version: 1.0\nruntime_running_version=[7.0.0.5.242:7.0.RC1]\nversion=7.0.RC1\n"
    )
    driver.write_text("Version=23.0.rc2\nascendhal_version=7.35.19\n")
    monkeypatch.setattr(stack, "_ASCEND", toolkit)
    monkeypatch.setattr(stack, "_ASCEND_DRIVER", driver)
    now = software_stack("Ascend")
    assert (now["cann"], now["driver"]) == ("7.0.RC1", "23.0.rc2")
    monkeypatch.setattr(stack, "_ASCEND", tmp_path / "none")
    assert software_stack("Ascend")["cann"] is None


@pytest.mark.parametrize(
    "saved,now,changes",
    [
        ({"mindspore": "2.10.0"}, {"mindspore": "2.10.0"}, []),
        ({"mindspore": "2.9.0", "cann": None}, {"mindspore": "2.10.0", "cann": "8.0"},
         ["cann: None -> 8.0", "mindspore: 2.9.0 -> 2.10.0"]),
        ({"mindspore": "2.10.0"}, {"mindspore": "2.10.0", "image": "x"}, []),  # older record
    ],
)  # fmt: skip
def test_stack_differences_name_each_changed_part(saved, now, changes):
    assert stack_differences(saved, now) == changes

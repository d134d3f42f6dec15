"""Device-utilisation sampling: the Ascend and GPU tools' outputs parsed (recorded outputs in
tests/data, written from the tools' documented formats), and the CPU sampler for real."""

from __future__ import annotations

import time
from pathlib import Path

from irv2_core.training.utilisation import UtilSampler, parse_npu_smi, parse_nvidia_smi

DATA = Path(__file__).resolve().parents[1] / "data"


def test_npu_smi_info_gives_ai_core_and_hbm_per_npu():
    npus = parse_npu_smi((DATA / "npu-smi-info.txt").read_text())
    assert [n["util_pct"] for n in npus] == [96.0, 94.0, 0.0]  # the process table is not a chip
    assert npus[0] == {"util_pct": 96.0, "mem_used_mib": 29873.0, "mem_total_mib": 32768.0}


def test_nvidia_smi_query_gives_utilisation_and_memory_per_gpu():
    gpus = parse_nvidia_smi((DATA / "nvidia-smi-query.csv").read_text())
    assert gpus == [  # the GPU reporting [N/A] is left out, not read as 0 %
        {"util_pct": 87.0, "mem_used_mib": 30512.0, "mem_total_mib": 81559.0},
        {"util_pct": 91.0, "mem_used_mib": 30498.0, "mem_total_mib": 81559.0},
    ]
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate") == []


def test_the_cpu_sampler_writes_rows_while_this_process_works():
    rows, lines = [], []
    sampler = UtilSampler("CPU", lambda: 7, rows.append, lines.append, every_s=0.2)
    sampler.start()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:  # busy: the samples see CPU time
        sum(i * i for i in range(10_000))
    sampler.stopped.set()
    sampler.join(timeout=5)
    assert len(rows) >= 3 and not lines, (rows, lines)
    assert all(r["kind"] == "util" and r["device"] == "cpu" and r["step"] == 7 for r in rows)
    assert max(r["util_pct"] for r in rows) > 0 and rows[-1]["mem_used_mib"] > 10


def test_a_missing_tool_is_said_once_and_training_goes_on(monkeypatch):
    from irv2_core.training.utilisation import start_sampler

    monkeypatch.setenv("PATH", "/nonexistent")
    lines: list[str] = []
    assert start_sampler("Ascend", lambda: 0, lambda row: None, lines.append) is None
    assert lines == ["utilisation: not sampled (npu-smi is not on PATH)"]
    monkeypatch.setenv("IRV2_UTIL_EVERY_S", "0")
    assert start_sampler("CPU", lambda: 0, lambda row: None, lines.append) is None  # off

"""Device utilisation while training, sampled every few seconds into ``metrics.jsonl``.

Ascend: ``npu-smi info`` (AI Core % and HBM per NPU); GPU: ``nvidia-smi --query-gpu``; CPU: the
training process's CPU time over the cores it may use. One row per sample (``kind: util``): the
mean utilisation over the devices, the memory they use, and the step training was at, which the
report plots beside img/s. ``IRV2_UTIL_EVERY_S`` sets the period (default 10 s; 0 turns it off).
A tool that is missing or fails stops the sampling with one log line; training goes on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = [
    "EVERY_ENV",
    "UtilSampler",
    "parse_npu_smi",
    "parse_nvidia_smi",
    "sample_command",
    "start_sampler",
]

EVERY_ENV = "IRV2_UTIL_EVERY_S"
NVIDIA_QUERY = [
    "nvidia-smi",
    "--query-gpu=index,utilization.gpu,memory.used,memory.total",
    "--format=csv,noheader,nounits",
]
# the second row of each NPU in `npu-smi info`: | chip | bus-id | AICore(%) mem used / total
# HBM used / total |
_NPU_USAGE = re.compile(
    r"^\|\s*\d+\s*\|\s*[0-9A-Fa-f:.]+\s*\|\s*(\d+(?:\.\d+)?)\s+"
    r"(\d+)\s*/\s*(\d+)\s+(\d+)\s*/\s*(\d+)\s*\|"
)


def parse_npu_smi(text: str) -> list[dict[str, float]]:
    """Per NPU: ``util_pct`` (AI Core %), ``mem_used_mib`` / ``mem_total_mib`` (HBM) from the
    table ``npu-smi info`` prints."""
    found = []
    for line in text.splitlines():
        m = _NPU_USAGE.match(line.strip())
        if m:
            core, _, _, hbm_used, hbm_total = (float(g) for g in m.groups())
            found.append({"util_pct": core, "mem_used_mib": hbm_used, "mem_total_mib": hbm_total})
    return found


def parse_nvidia_smi(text: str) -> list[dict[str, float]]:
    """Per GPU from ``nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total
    --format=csv,noheader,nounits`` (``[N/A]`` values read as absent)."""
    found = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        try:
            util, used, total = (float(p) for p in parts[1:])
        except ValueError:
            continue  # [N/A]: a GPU that does not report it
        found.append({"util_pct": util, "mem_used_mib": used, "mem_total_mib": total})
    return found


def sample_command(device_target: str) -> tuple[list[str], Callable[[str], list]] | None:
    """The tool and parser for *device_target* (None: CPU, sampled in-process)."""
    if device_target == "Ascend":
        return ["npu-smi", "info"], parse_npu_smi
    if device_target == "GPU":
        return NVIDIA_QUERY, parse_nvidia_smi
    return None


class _CpuProbe:
    """This process's CPU use since the last call, as % of the cores it may run on."""

    def __init__(self) -> None:
        import psutil

        self.proc, self.cores = psutil.Process(), len(os.sched_getaffinity(0))
        self.proc.cpu_percent(None)  # the first call only starts the interval

    def __call__(self) -> list[dict[str, float]]:
        used = self.proc.cpu_percent(None) / self.cores
        rss = self.proc.memory_info().rss / 2**20
        return [{"util_pct": round(min(used, 100.0), 1), "mem_used_mib": round(rss, 1)}]


class UtilSampler(threading.Thread):
    """Samples every *every_s* seconds until stopped; each sample goes to *write* as a row
    (``step`` from *step*)."""

    def __init__(self, device_target: str, step: Callable[[], int], write, log, every_s: float):
        super().__init__(daemon=True, name="irv2-util")
        self.step, self.write, self.log, self.every_s = step, write, log, every_s
        self.device = {"Ascend": "npu", "GPU": "gpu"}.get(device_target, "cpu")
        self.stopped = threading.Event()
        tool = sample_command(device_target)
        self.read = self._tool(*tool) if tool else _CpuProbe()

    def _tool(self, command: list[str], parse) -> Callable[[], list]:
        if shutil.which(command[0]) is None:
            raise FileNotFoundError(f"{command[0]} is not on PATH")

        def read() -> list[dict[str, float]]:
            done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
            return parse(done.stdout)

        return read

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                devices = self.read()
            except (OSError, subprocess.SubprocessError) as exc:
                self.log(f"utilisation: sampling stopped ({exc})")
                return
            if devices:
                self.write(self._row(devices))

    def _row(self, devices: list[dict[str, float]]) -> dict[str, Any]:
        mean = sum(d["util_pct"] for d in devices) / len(devices)
        return {"kind": "util", "time": time.time(), "step": self.step(), "device": self.device,
                "devices": len(devices), "util_pct": round(mean, 1),
                "mem_used_mib": round(sum(d["mem_used_mib"] for d in devices), 1)}  # fmt: skip


def start_sampler(device_target: str, step, write, log) -> UtilSampler | None:
    """A started sampler (None when ``IRV2_UTIL_EVERY_S`` is 0, or the tool is missing)."""
    every_s = float(os.environ.get(EVERY_ENV, "10") or 0)
    if every_s <= 0:
        return None
    try:
        sampler = UtilSampler(device_target, step, write, log, every_s)
    except (OSError, ImportError) as exc:
        log(f"utilisation: not sampled ({exc})")
        return None
    sampler.start()
    return sampler

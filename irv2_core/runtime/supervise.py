"""Run the training command as a supervised process group.

Prefect does not kill child processes on timeout or cancellation, and ``msrun`` starts a scheduler
plus one worker per device. So training starts in its own session (process group), its output lines
are handed to a callback as they arrive (rank 0's log for msrun), ``progress.json`` is polled for a
progress callback, and on any way out other than a clean exit the whole group is killed, with the
groups of its descendants: msrun starts each worker in a session of its own (``os.setsid``), out of
reach of a signal to msrun's group.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import psutil

__all__ = ["TrainingProcessError", "kill_group", "run_supervised", "worker_error_tail"]

TAIL_LINES = 20


class TrainingProcessError(RuntimeError):
    """Training exited non-zero; the message carries the failing process's last output lines."""

    def __init__(self, message: str, returncode: int | None) -> None:
        super().__init__(message)
        self.returncode = returncode


def kill_group(proc: subprocess.Popen[Any], grace_s: float = 10.0) -> None:
    """SIGTERM the process group of *proc* and the groups of its descendants, then SIGKILL
    whatever is left after *grace_s*."""
    # start_new_session: the leader's pid is the group id, even once reaped. The descendants are
    # listed before any signal: once msrun dies its workers are reparented and cannot be found.
    groups, procs = {proc.pid}, []
    with contextlib.suppress(psutil.NoSuchProcess):
        procs = psutil.Process(proc.pid).children(recursive=True)
    own = os.getpgrp()
    for child in procs:
        try:
            groups.add(os.getpgid(child.pid))
        except ProcessLookupError:
            continue
    groups.discard(own)  # never signal the group of this process (the flow run itself)
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pgid in groups:
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + wait_s
        while _running(proc, procs) and time.monotonic() < deadline:
            time.sleep(0.1)
        if not _running(proc, procs):
            return


def _running(proc: subprocess.Popen[Any], procs: list[psutil.Process]) -> bool:
    """True while the leader is not reaped or a listed descendant has not exited (a zombie
    waiting for init to reap it has)."""
    if proc.poll() is None:
        return True
    for child in procs:
        try:
            if child.is_running() and child.status() != psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            continue
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _pump(stream: Any, lines: queue.Queue[str | None]) -> None:
    for line in iter(stream.readline, ""):
        lines.put(line.rstrip("\n"))
    lines.put(None)


class _FileTail:
    """Yields lines appended to a file that may not exist yet (rank 0's msrun log)."""

    def __init__(self, path: Path) -> None:
        self.path, self.offset, self.partial = path, 0, ""

    def read(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                fh.seek(self.offset)
                chunk = fh.read()
                self.offset = fh.tell()
        except FileNotFoundError:
            return []
        text = self.partial + chunk
        parts = text.split("\n")
        self.partial = parts.pop()
        return parts


def _read_progress(path: Path, last: float) -> tuple[dict[str, Any] | None, float]:
    try:
        mtime = path.stat().st_mtime
        if mtime == last:
            return None, last
        return json.loads(path.read_text(encoding="utf-8")), mtime
    except (OSError, ValueError):  # absent, or caught mid-rename on some filesystems
        return None, last


def worker_error_tail(log_dir: Path, lines: int = TAIL_LINES) -> str:
    """Last lines of the msrun worker log that shows an error (else of worker 0)."""
    logs = sorted(log_dir.glob("worker_*.log"))
    for log in logs:
        text = log.read_text(encoding="utf-8", errors="replace")
        if "Traceback" in text or "Error" in text:
            return f"{log.name}:\n" + "\n".join(text.splitlines()[-lines:])
    if logs:
        text = logs[0].read_text(encoding="utf-8", errors="replace")
        return f"{logs[0].name}:\n" + "\n".join(text.splitlines()[-lines:])
    return ""


def run_supervised(
    command: Sequence[str],
    *,
    on_line: Callable[[str], None],
    progress_file: Path | None = None,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
    rank0_log: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float | None = None,
    poll_s: float = 1.0,
    check: Callable[[], None] | None = None,
    stop_grace_s: float = 10.0,
) -> int:
    """Run *command* in a new process group until it exits; return 0 or raise.

    Output lines go to *on_line* (from *rank0_log* instead of stdout when given, as msrun writes
    each rank's output to its own file); each new ``progress.json`` content goes to *on_progress*.
    *check* is called once per poll (e.g. to watch the other nodes of a multi-node job); like
    exceeding *timeout_s*, an exception in a callback, or a termination signal in this process, an
    exception it raises kills the whole group: SIGTERM, then SIGKILL what is left after
    *stop_grace_s* (training uses the time to save the step it was on). A non-zero exit raises
    TrainingProcessError with the last output lines.
    """
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    lines: queue.Queue[str | None] = queue.Queue()
    proc = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        bufsize=1,
        env=env,
        start_new_session=True,  # its own group: killpg reaches msrun's workers too
    )
    reader = threading.Thread(target=_pump, args=(proc.stdout, lines), daemon=True)
    reader.start()
    file_tail = _FileTail(rank0_log) if rank0_log else None
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    last_progress = 0.0
    try:
        stdout_open = True
        while stdout_open or proc.poll() is None:
            try:
                batch = [lines.get(timeout=poll_s)]
            except queue.Empty:
                batch = []
            while True:
                try:
                    batch.append(lines.get_nowait())
                except queue.Empty:
                    break
            if None in batch:
                stdout_open = False
            for item in filter(None, batch):
                tail.append(item)
                if file_tail is None:
                    on_line(item)
            if file_tail is not None:
                for item in file_tail.read():
                    on_line(item)
            if progress_file is not None and on_progress is not None:
                progress, last_progress = _read_progress(progress_file, last_progress)
                if progress:
                    on_progress(progress)
            if check is not None:
                check()
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"training exceeded its {timeout_s:.0f} s limit; killed")
        rc = proc.wait()
    finally:
        if proc.poll() is None or _group_alive_safe(proc):
            kill_group(proc, grace_s=stop_grace_s)
        reader.join(timeout=5.0)
        if not reader.is_alive():  # else the pipe is still being read; leave it to the GC
            proc.stdout.close()  # an unclosed pipe is a ResourceWarning under -W default
    if file_tail is not None:
        for item in file_tail.read():
            on_line(item)
    if rc != 0:
        last = "\n".join(tail)
        if rank0_log is not None:
            last = worker_error_tail(rank0_log.parent) or last
        raise TrainingProcessError(
            f"training exited with status {rc}; last output lines:\n{last}", returncode=rc
        )
    return rc


def _group_alive_safe(proc: subprocess.Popen[Any]) -> bool:
    # after the leader exits its pid is reaped; the group id equals that pid (new session)
    return _group_alive(proc.pid)

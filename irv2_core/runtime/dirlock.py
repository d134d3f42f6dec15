"""One writer per output folder: an exclusive, non-blocking lock on a sibling lock file.

Two ``stage`` runs into the same DEST would share temporary names, and two ``convert`` runs into
the same OUT_DIR would sweep each other's temporary folder; the second run therefore fails at
once with a clear message instead. The lock is released by the OS if the process dies, so a
killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from irv2_core.errors import Irv2Error

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not guarded
    fcntl = None


@contextlib.contextmanager
def folder_lock(folder: Path, verb: str, wait_s: float = 0.0) -> Iterator[None]:
    """Hold an exclusive lock for writing *folder* (lock file ``.<name>.lock`` beside it).

    Raises Irv2Error naming the holder (host and pid) if another process still holds it after
    *wait_s* seconds (0: fail at once).
    """
    folder.parent.mkdir(parents=True, exist_ok=True)
    path = folder.with_name(f".{folder.name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if fcntl is not None:
            _take(fd, folder, verb, time.monotonic() + wait_s)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _take(fd: int, folder: Path, verb: str, deadline: float) -> None:
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError:
            if time.monotonic() >= deadline:
                holder = os.pread(fd, 256, 0).decode(errors="replace").strip() or "?"
                raise Irv2Error(
                    f"another {verb} ({holder}) is writing {folder}; wait for it to finish "
                    "or choose another folder"
                ) from None
            time.sleep(0.5)

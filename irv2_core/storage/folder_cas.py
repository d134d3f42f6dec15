"""Conditional writes on a folder store that hold across processes: a lock per key, versions that
never repeat, and a preflight that refuses filesystems where the lock would not be seen.

Every write to a key of a :class:`~irv2_core.storage.store.LocalStore` renames a finished temp
file into place while holding an exclusive ``flock`` on the key's hidden lock file
(``.<name>.lock`` beside it), so "only if absent" and "only if still version V" are decided and
carried out as one step. ``flock`` is per open file on a local disk, but NFS emulates it with
POSIX locks, which are per process: an in-process lock per key keeps threads apart there too.

A version is ``<mtime ns>.<inode>.<size>``. Under the lock each write sets its file's mtime
strictly above the last one written for that key (recorded in the lock file), so a key's
versions only grow: a holder of an old version can never match a newer object, even when the
clock, an inode number or the filesystem's timestamp granularity would repeat.

NFS: on NFSv4 (and NFSv3 with lockd running) these locks are held by the server and seen by every
client, and rename is atomic on the server, so all of this holds across hosts. A mount with
``nolock`` or ``local_lock=flock|all`` keeps locks on one client only: two hosts could both win.
:func:`check_locking` refuses such a folder (and one whose filesystem has no locks at all).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from irv2_core.errors import Irv2Error

try:
    import fcntl
except ImportError:  # Windows: no flock; check_locking refuses folder stores there
    fcntl = None

__all__ = ["check_locking", "key_lock", "lock_path", "stamp_after", "version_of"]

_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()
# timestamp steps tried when the filesystem rounds an mtime we set (ns, µs, ms, s, 2 s for FAT)
_STEPS_NS = (1, 1_000, 1_000_000, 1_000_000_000, 2_000_000_000)
_LOCAL_ONLY_OPTIONS = ("nolock", "local_lock=flock", "local_lock=all")


def lock_path(target: Path) -> Path:
    """The hidden lock file of the object at *target* (hidden names are never listed)."""
    return target.with_name(f".{target.name}.lock")


def version_of(st: os.stat_result) -> str:
    """The version tag of an object from its stat: mtime (ns), inode and size."""
    return f"{st.st_mtime_ns}.{st.st_ino}.{st.st_size}"


def _thread_lock(path: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(str(path), threading.Lock())


@contextlib.contextmanager
def key_lock(target: Path) -> Iterator[int]:
    """Hold the exclusive lock of the object at *target*; yield the lock file's descriptor
    (which records the key's last mtime for :func:`stamp_after`). Blocks until it is free."""
    path = lock_path(target)
    with _thread_lock(path):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing the descriptor releases the flock


def stamp_after(lock_fd: int, tmp: Path, current: os.stat_result | None) -> None:
    """Give *tmp* (about to replace the key's object) an mtime above every earlier version of the
    key, and record it in the lock file. Call with the key's lock held."""
    raw = os.pread(lock_fd, 32, 0).decode(errors="replace").strip()
    last = int(raw) if raw.isdigit() else 0
    if current is not None:
        last = max(last, current.st_mtime_ns)
    now = os.stat(tmp).st_mtime_ns
    for step in _STEPS_NS:
        wanted = max(now, last + step)
        os.utime(tmp, ns=(wanted, wanted))
        got = os.stat(tmp).st_mtime_ns
        if got > last:
            break
    else:
        raise Irv2Error(f"{tmp.parent} does not keep file modification times; use an s3:// URI")
    os.ftruncate(lock_fd, 0)
    os.pwrite(lock_fd, str(got).encode(), 0)


def _mount_of(folder: Path) -> tuple[str, str] | None:
    """(filesystem type, mount options) of the mount holding *folder*, from /proc (Linux)."""
    best: tuple[int, str, str] | None = None
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 6 or len(rest) < 3:
            continue
        point = fields[4].replace("\\040", " ")
        if folder.is_relative_to(point) and (best is None or len(point) > best[0]):
            best = (len(point), rest[0], f"{fields[5]},{rest[2]}")
    return None if best is None else (best[1], best[2])


def check_locking(root: Path) -> None:
    """Raise Irv2Error unless the folder *root* gives locks that every writer sees."""
    uri = str(root)
    if fcntl is None:
        raise Irv2Error(f"{uri}: this platform has no file locks; use an s3:// URI as output_uri")
    mount = _mount_of(root)
    if mount is not None and mount[0].startswith("nfs"):
        options = mount[1].split(",")
        local = [o for o in _LOCAL_ONLY_OPTIONS if o in options]
        if local:
            raise Irv2Error(
                f"output folder {uri} is on NFS mounted with {local[0]}: file locks stay on this "
                "host, so two workers on different hosts could both take one lease or promote at "
                "once; remount it with locking (NFSv4, or NFSv3 with lockd), or use an s3:// URI"
            )
    probe = root / f".irv2-preflight-{os.getpid()}.lock"
    fd = os.open(probe, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise Irv2Error(
            f"output folder {uri} cannot be locked ({exc.strerror}): conditional writes (leases, "
            "promotion) would race; use a local disk, NFS with locking, or an s3:// URI"
        ) from None
    finally:
        os.close(fd)
        probe.unlink(missing_ok=True)

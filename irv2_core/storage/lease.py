"""One writer per run in the object store: a lease object with an expiry and a heartbeat.

The lease is created with a conditional write (only if absent), so of two workers exactly one
holds it; the holder renews it every ``ttl/3`` seconds from a background thread. A lease whose
expiry has passed (its worker died) is taken over with a write conditional on the version that
was read, so two workers cannot both take over the same stale lease. A second writer fails fast
naming the holder, or waits for it when asked to. A retry on the machine whose process died (a
killed training, a failed node taking the job down) does not wait out the expiry: a holder in the
same pid namespace of the same boot whose pid is gone is dead, and its lease is taken over at once.

A writer that loses its lease stops (fencing): see :class:`StoreLease`.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field

from irv2_core.errors import Irv2Error
from irv2_core.storage.store import ObjectStore

__all__ = ["DEFAULT_TTL_S", "LeaseHeld", "LeaseLost", "StoreLease", "holder_id"]

# how long a lease outlives its last renewal; IRV2_LEASE_TTL_S overrides it (all workers of a
# run must agree: a shorter one lets a stalled but live worker lose its lease sooner)
DEFAULT_TTL_S = float(os.environ.get("IRV2_LEASE_TTL_S", "120"))


class LeaseHeld(Irv2Error):
    """Another live worker holds the lease; the message names it."""


class LeaseLost(Irv2Error):
    """This worker's lease was taken over (or expired unrenewed); the message names the holder."""


def holder_id() -> str:
    """Who this process is, for lease records and messages: ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _origin() -> dict[str, str]:
    """Where this process's pids mean something: host, pid namespace and boot (Linux; empty
    elsewhere, and then no holder is ever judged dead by its pid)."""
    try:
        pidns = os.readlink("/proc/self/ns/pid")
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        return {}
    return {"host": socket.gethostname(), "pidns": pidns, "boot": boot}


def _holder_dead(record: dict) -> bool:
    """Whether the lease *record* was written by a process of this machine's pid namespace and
    boot that no longer exists (pods sharing the host's network and name have their own)."""
    here = _origin()
    if not here or record.get("origin") != here:
        return False
    try:
        pid = int(str(record.get("holder", "")).rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return False
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the pid exists
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return False


@dataclass
class StoreLease:
    """An exclusive lease on *key* in *store*; use as a context manager or acquire/release.

    Fencing: when a renewal finds the lease taken over (this process stalled past the TTL and
    another worker took it), or the store cannot be reached until the lease would have expired,
    the lease is *lost*: :meth:`check` and :meth:`confirm` then raise :class:`LeaseLost` naming
    the new holder, and the writer must stop writing. :meth:`confirm` also reads the lease
    afresh, for the moment just before a publish.
    """

    store: ObjectStore
    key: str
    what: str = "run"
    ttl_s: float = DEFAULT_TTL_S
    holder: str = field(default_factory=holder_id)
    _version: str | None = None
    _renewed_until: float = 0.0
    _lost: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _guard: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def _body(self) -> bytes:
        record = {"holder": self.holder, "expires_at": time.time() + self.ttl_s}
        if self.holder == holder_id():  # its pid is this process's: a retry may judge it
            record["origin"] = _origin()
        return json.dumps(record).encode()

    def _write(self, replace: str | None) -> bool:
        """Write a fresh record (only if absent, or only over version *replace*)."""
        until = time.time() + self.ttl_s
        stored = self.store.create(self._body(), self.key, replace=replace)
        if stored is None:
            return False
        self._version, self._renewed_until = stored.version, until
        return True

    def _current(self) -> tuple[str | None, dict]:
        """The lease's version and record now (None, {} when absent or unreadable)."""
        current = self.store.head(self.key)
        try:
            record = json.loads(self.store.get_bytes(self.key) or b"{}")
        except ValueError:
            record = {}
        return (None if current is None else current.version), record

    def _try_acquire(self) -> str | None:
        """Take the lease if free or expired; return None on success, else the holder."""
        if self._write(None):
            return None
        version, record = self._current()
        if version is None:
            return "(released just now)"
        if float(record.get("expires_at", 0)) > time.time() and not _holder_dead(record):
            return str(record.get("holder", "unknown"))
        if not self._write(version):
            return "(taken over by another worker just now)"
        return None

    def acquire(self, wait_s: float = 0.0, poll_s: float = 2.0) -> StoreLease:
        """Hold the lease (waiting up to *wait_s* for a live holder); start the heartbeat."""
        deadline = time.monotonic() + wait_s
        while (holder := self._try_acquire()) is not None:
            if time.monotonic() >= deadline:
                raise LeaseHeld(
                    f"another worker ({holder}) is writing this {self.what} "
                    f"({self.store.uri}/{self.key}); wait for it to finish, or for its lease to "
                    f"expire ({self.ttl_s:.0f} s after it last renewed) if it died"
                )
            time.sleep(poll_s)
        self._lost = None
        self._stop.clear()
        self._thread = threading.Thread(target=self._heartbeat, name="irv2-lease", daemon=True)
        self._thread.start()
        return self

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                with self._guard:
                    if self._write(self._version):
                        continue
                    _, record = self._current()
                self._lose(str(record.get("holder", "another worker")))
                return
            except (Irv2Error, OSError) as exc:  # the store is away: retry while the lease lasts
                if time.time() >= self._renewed_until:
                    self._lose(f"nobody it knows of (renewals failed until it expired: {exc})")
                    return

    def _lose(self, holder: str) -> None:
        self._lost = (
            f"this worker lost its lease on the {self.what} ({self.store.uri}/{self.key}); it is "
            f"now held by {holder}. This worker did not renew it within {self.ttl_s:.0f} s "
            "(stalled, or cut off from the store), so it stops writing: one writer per run"
        )

    def check(self) -> None:
        """Raise LeaseLost if the heartbeat found the lease taken (cheap: no store request)."""
        if self._lost is not None:
            raise LeaseLost(self._lost)

    def confirm(self) -> None:
        """Raise LeaseLost unless this worker holds the lease now (reads it from the store)."""
        self.check()
        with self._guard:  # one HEAD while held; the record only to name who took it
            current = self.store.head(self.key)
            if current is None or current.version != self._version:
                _, record = self._current()
                self._lose(str(record.get("holder", "nobody (the lease is gone)")))
        self.check()

    def release(self) -> None:
        """Stop renewing and remove the lease (only if this process still holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        current = self.store.head(self.key)
        if current is not None and current.version == self._version and self._lost is None:
            self.store.delete(self.key)

    def __enter__(self) -> StoreLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

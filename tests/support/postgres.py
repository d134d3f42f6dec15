"""One real PostgreSQL cluster per test session, for the Prefect servers the tests start.

Debian's PostgreSQL (``apt-get install -y postgresql``) is started with ``initdb`` and ``pg_ctl`` in
a temp folder, on a free loopback port, with durability off (``fsync=off``: the data is thrown
away with the folder). :meth:`PostgresCluster.create_database` makes one empty database per Prefect
server; the server runs its migrations into it at start-up. The cluster is stopped with
``pg_ctl stop -m fast`` and its folder removed at the end.

initdb and the server refuse to run as root, so as root they run as the ``postgres`` user (via
``runuser``), which then owns the folder; as any other user they run as that user.
Without PostgreSQL the tests that need it fail under CI (the ``CI`` variable set) and skip
elsewhere, both naming the install command.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from support.ports import free_port
from support.prerequisites import missing

INSTALL = "apt-get install -y postgresql"
USER = "prefect"
# A fixed, test-only password: the cluster listens on 127.0.0.1 only and lives one session.
PASSWORD = "irv2-test-only"
START_S = 60


def _major(bindir: str) -> int:
    return int(Path(bindir).parent.name)


def find_bindir() -> Path | None:
    """The folder of ``initdb``/``pg_ctl``: IRV2_PG_BIN, else Debian's newest
    /usr/lib/postgresql/N/bin, else PATH (other distributions)."""
    candidates = [os.environ.get("IRV2_PG_BIN", "")]
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted((str(p) for p in debian if p.parent.name.isdigit()), key=_major)[::-1]
    on_path = shutil.which("initdb")
    candidates.append(str(Path(on_path).parent) if on_path else "")
    for folder in filter(None, candidates):
        if all(os.access(Path(folder) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "psql")):
            return Path(folder)
    return None


def require_bindir() -> Path:
    """PostgreSQL's bin folder; without one, fail under CI (a broken CI image must not pass
    by skipping the server tiers) and skip elsewhere, naming the install command."""
    bindir = find_bindir()
    if bindir is not None:
        return bindir
    missing("PostgreSQL (initdb, pg_ctl, psql)", INSTALL)


@dataclass(frozen=True)
class Database:
    """One database of the cluster: its asyncpg URL (what Prefect reads from
    PREFECT_API_DATABASE_CONNECTION_URL) and a psql helper for checks."""

    cluster: PostgresCluster
    name: str

    @property
    def url(self) -> str:
        c = self.cluster
        return f"postgresql+asyncpg://{USER}:{PASSWORD}@127.0.0.1:{c.port}/{self.name}"

    def query(self, sql: str) -> list[list[str]]:
        """Rows of *sql* (psql's unaligned output split on '|'): a test reads what the
        server wrote without going through the server."""
        out = self.cluster.client("psql", "-d", self.name, "-X", "-A", "-t", "-c", sql)
        return [line.split("|") for line in out.splitlines() if line]

    def scalar(self, sql: str) -> str:
        rows = self.query(sql)
        assert len(rows) == 1 and len(rows[0]) == 1, f"{sql!r} gave {rows}"
        return rows[0][0]


class PostgresCluster:
    """A cluster in a fresh folder under /tmp; :meth:`start`, then :meth:`stop` (also after a
    failed start). Not thread-safe; one per session."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        # As root the folder must be reachable by the postgres user: pytest's basetemp
        # (/tmp/pytest-of-root, mode 700) is not, so the folder is made directly under /tmp.
        self.owner = "postgres" if os.geteuid() == 0 else None
        base = "/tmp" if self.owner else None
        self.root = Path(tempfile.mkdtemp(prefix="irv2-pg-", dir=base))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = 0
        self._names: set[str] = set()

    def _as_owner(self, cmd: list[str]) -> list[str]:
        return ["runuser", "-u", self.owner, "--", *cmd] if self.owner else cmd

    def _run(self, cmd: list[str], what: str) -> str:
        done = subprocess.run(self._as_owner(cmd), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(
                f"PostgreSQL {what} failed ({done.returncode}):\n"
                f"{done.stdout[-3000:]}{done.stderr[-3000:]}\n{log}"
            )
        return done.stdout

    def _private_root(self) -> Path:
        """Make the folder the owner's, mode 700; write the password file initdb reads."""
        if self.owner:
            try:
                pwd.getpwnam(self.owner)
            except KeyError:
                raise RuntimeError(f"no user '{self.owner}' to run PostgreSQL: {INSTALL}") from None
            shutil.chown(self.root, self.owner, self.owner)
        os.chmod(self.root, 0o700)
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n", encoding="utf-8")
        if self.owner:
            shutil.chown(pwfile, self.owner, self.owner)
        return pwfile

    def start(self) -> PostgresCluster:
        pwfile = self._private_root()
        initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER]
        initdb += [f"--pwfile={pwfile}", "--auth-local=trust", "--auth-host=scram-sha-256"]
        self._run([*initdb, "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"], "initdb")
        pwfile.unlink()
        # A free port can be taken between the probe and the bind: try a few.
        for attempt in range(3):
            self.port = free_port()
            try:
                self._run(self._pg_ctl_start(), "start")
                return self
            except RuntimeError:
                if attempt == 2 or "could not bind" not in self._log_text():
                    raise
        return self

    def _pg_ctl_start(self) -> list[str]:
        options = [
            f"-p {self.port}",
            f"-k {self.root}",  # the Unix socket stays in the cluster's own folder
            "-c listen_addresses=127.0.0.1",
            # throw-away data: no flushes to disk (the tests' 2-core machines are busy)
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            # a Prefect server pools up to ~15 connections; two servers may run at once
            "-c shared_buffers=64MB -c max_connections=100",
        ]
        pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log)]
        return [*pg_ctl, "-w", "-t", str(START_S), "-o", " ".join(options), "start"]

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self, tool: str, *args: str) -> str:
        """Run a client tool (psql, createdb) over TCP as the prefect user with the password,
        the same way the Prefect server connects; its stdout."""
        cmd = [str(self.bindir / tool), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER]
        env = {**os.environ, "PGPASSWORD": PASSWORD, "PGCONNECT_TIMEOUT": "10"}
        done = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr}")
        return done.stdout

    def create_database(self, name: str) -> Database:
        """A new, empty database *name* (letters, digits, underscores): one per server."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name) or name in self._names:
            raise ValueError(f"bad or repeated database name {name!r}")
        self.client("createdb", name)
        self._names.add(name)
        return Database(self, name)

    def stop(self) -> None:
        """``pg_ctl stop -m fast`` (closes the servers' connections), else SIGKILL the
        postmaster by its pid file; then remove the folder."""
        try:
            if (self.data / "postmaster.pid").exists():
                pg_ctl = [str(self.bindir / "pg_ctl"), "-D", str(self.data)]
                self._run([*pg_ctl, "-m", "fast", "-w", "-t", "30", "stop"], "stop")
        except (RuntimeError, subprocess.TimeoutExpired):
            self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)  # its children exit when the postmaster is gone
            for _ in range(50):
                os.kill(pid, 0)
                time.sleep(0.1)


@contextlib.contextmanager
def postgres_cluster(bindir: Path) -> Iterator[PostgresCluster]:
    """A started cluster, stopped and removed after (also when starting failed half-way)."""
    cluster = PostgresCluster(bindir)
    try:
        yield cluster.start()
    finally:
        cluster.stop()

"""Real PostgreSQL servers for tests: a primary and a streaming standby on loopback, from Debian's packages.

Usage::

    with PgPair() as pg:                      # initdb + pg_basebackup as the postgres user, free ports
        pg.url                                # "postgresql://127.0.0.1:P1,127.0.0.1:P2/app?target_session_attrs=read-write"
        pg.password_file                      # 0600, the password of role "app"
        pg.stop_primary()                     # fast shutdown (sessions get AdminShutdown)
        pg.promote_standby()                  # pg_ctl promote, waits until it accepts writes

Both servers run as ``postgres`` (root is needed to switch to it) from ``/usr/lib/postgresql/<v>/bin``
in a temporary directory, listening on 127.0.0.1 and on a socket in that directory only; role
``app`` (password authentication over TCP) owns database ``app`` with a table ``hits``.
Teardown stops both servers (immediate mode) and, if one does not stop, kills the postmaster by
the pid in its own ``postmaster.pid`` (a process this object started); then removes the directory.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Self

__all__ = ["PgPair", "PgServer", "pg_bindir", "require_postgres", "unavailable_reason"]


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` that has initdb, or None."""
    found = sorted(
        (Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def unavailable_reason() -> str | None:
    """Why real PostgreSQL servers cannot be started here, or None."""
    if pg_bindir() is None:
        return "PostgreSQL server not installed (/usr/lib/postgresql/*/bin/initdb missing; apt install postgresql)"
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return "no 'postgres' user (apt install postgresql creates it)"
    if os.geteuid() != 0:
        return "needs root to run PostgreSQL as the postgres user"
    return None


def require_postgres() -> None:
    """In a pytest test: skip with the reason when PostgreSQL cannot run here; fail instead under ``CI=true``."""
    import pytest

    reason = unavailable_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: these tests must run, not skip)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One PostgreSQL server (data directory, port) run with pg_ctl as the postgres user."""

    def __init__(self, pair: PgPair, name: str) -> None:
        self.pair = pair
        self.name = name
        self.data = pair.dir / name
        self.port = free_port()
        self.log = pair.dir / f"{name}.log"

    def pg_ctl(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.pair.run_pg("pg_ctl", "-D", str(self.data), *args, timeout=timeout)

    def start(self) -> None:
        opts = f"-p {self.port} -k {self.pair.dir} -c listen_addresses=127.0.0.1"
        self.pg_ctl("-o", opts, "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        self.pg_ctl("-m", mode, "-w", "-t", "60", "stop")

    def is_running(self) -> bool:
        return self.pair.run_pg("pg_ctl", "-D", str(self.data), "status", check=False).returncode == 0

    def psql(self, sql: str, *, db: str = "postgres", check: bool = True) -> str:
        """Run ``sql`` as the superuser over the server's socket; the unaligned, tuples-only output."""
        r = self.pair.run_pg(
            "psql", "-X", "-q", "-A", "-t", "-h", str(self.pair.dir), "-p", str(self.port), "-U", "postgres",
            "-d", db, "-v", "ON_ERROR_STOP=1", "-c", sql, check=check,
        )  # fmt: skip
        return r.stdout.strip()

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None


class PgPair:
    """A primary and a streaming standby on 127.0.0.1 (see the module docstring)."""

    def __init__(self, *, password: str | None = None) -> None:
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        bindir = pg_bindir()
        assert bindir is not None
        self.bindir = bindir
        self.pw = pwd.getpwnam("postgres")
        self.dir = Path(tempfile.mkdtemp(prefix="km-pg-"))
        self.password = password or secrets.token_urlsafe(16)
        self.primary = PgServer(self, "primary")
        self.standby = PgServer(self, "standby")
        self.password_file = self.dir / "app.password"

    # -- running commands as postgres -------------------------------------------------------

    def run_pg(
        self, tool: str, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        argv = [str(self.bindir / tool), *args]
        r = subprocess.run(
            argv,
            user=self.pw.pw_uid,
            group=self.pw.pw_gid,
            extra_groups=[],
            env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "HOME": str(self.dir), "PGCONNECT_TIMEOUT": "5"},
            cwd=str(self.dir),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and r.returncode != 0:
            raise RuntimeError(
                f"{tool} {' '.join(args)} exited {r.returncode}: {r.stderr.strip()}{self._logs()}"
            )
        return r

    def _logs(self) -> str:
        out = []
        for s in (self.primary, self.standby):
            with contextlib.suppress(OSError):
                out.append(f"\n--- {s.log.name}\n{s.log.read_text(errors='replace')[-2000:]}")
        return "".join(out)

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> None:
        os.chown(self.dir, self.pw.pw_uid, self.pw.pw_gid)
        self.dir.chmod(0o755)
        pwfile = self.dir / "superuser.pw"
        pwfile.write_text(secrets.token_urlsafe(16) + "\n")
        os.chown(pwfile, self.pw.pw_uid, self.pw.pw_gid)
        pwfile.chmod(0o600)
        self.run_pg(
            "initdb", "-D", str(self.primary.data), "-U", "postgres", "--auth-local=trust",
            "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "-E", "UTF8", "--no-instructions",
        )  # fmt: skip
        with open(self.primary.data / "postgresql.conf", "a") as fh:
            fh.write("wal_level = replica\nmax_wal_senders = 5\nhot_standby = on\nfsync = off\n")
        self.primary.start()
        pw_sql = self.password.replace("'", "''")
        self.primary.psql(f"CREATE ROLE app LOGIN PASSWORD '{pw_sql}'")
        self.primary.psql("CREATE DATABASE app OWNER app")
        self.primary.psql(
            "CREATE TABLE hits (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())", db="app"
        )
        self.primary.psql("ALTER TABLE hits OWNER TO app", db="app")
        self.run_pg(
            "pg_basebackup", "-h", str(self.dir), "-p", str(self.primary.port), "-U", "postgres",
            "-D", str(self.standby.data), "-R", "-X", "stream", "-c", "fast",
        )  # fmt: skip
        self.standby.start()
        self.wait(lambda: self.primary.psql("SELECT count(*) FROM pg_stat_replication") == "1", "streaming")
        fd = os.open(self.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(self.password + "\n")

    def wait(self, cond: object, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if cond():  # type: ignore[operator]
                    return
            except RuntimeError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL: not {what} after {timeout} s{self._logs()}")

    @property
    def url(self) -> str:
        """Multi-host URL, primary first, read-write sessions only (the seed's ADDRESS_LIST, FAILOVER=ON)."""
        return (
            f"postgresql://127.0.0.1:{self.primary.port},127.0.0.1:{self.standby.port}/app"
            "?target_session_attrs=read-write"
        )

    def stop_primary(self, mode: str = "fast") -> None:
        self.primary.stop(mode)

    def promote_standby(self) -> None:
        self.standby.pg_ctl("-w", "-t", "60", "promote")
        self.wait(lambda: self.standby.psql("SELECT pg_is_in_recovery()") == "f", "promoted")

    def close(self) -> None:
        for server in (self.standby, self.primary):
            pid = server.postmaster_pid()
            if pid is None:
                continue
            with contextlib.suppress(Exception):
                server.stop("immediate")
            if server.postmaster_pid() is not None and server.is_running():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)  # the postmaster we started (its own pid file)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

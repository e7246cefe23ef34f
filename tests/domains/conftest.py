"""Fixtures for the domain tests: an isolated node registry, the seed's properties (+10000) and cleanup.

Every test that starts a domain uses :func:`node`; its finalizer kills every process tagged with
a domain directory under the test's temporary directory, whatever happened in the test.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

DATA = Path(__file__).resolve().parents[1] / "data"
SEED = DATA / "seed"
APPS = DATA / "domains"
KAGEMUSHA = str(Path(sys.executable).parent / "kagemusha")
PORT_OFFSET = 10000


def shifted_properties(
    src: Path, dest: Path, *, offset: int = PORT_OFFSET, extra: dict[str, str] | None = None
) -> Path:
    """Copy a seed properties file with every port +offset (80 -> 10080, 443 -> 10443) and extra keys."""
    out = []
    for line in src.read_text(encoding="latin-1").splitlines():
        m = re.match(r"^([^#!=\s][^=]*?)\s*=\s*(\d+)\s*$", line)
        if m and "port" in m.group(1).lower():
            line = f"{m.group(1)}={int(m.group(2)) + offset}"
        out.append(line)
    for k, v in (extra or {}).items():
        out.append(f"{k}={v}")
    dest.write_text("\n".join(out) + "\n", encoding="latin-1")
    return dest


def tagged_under(base: Path) -> list[psutil.Process]:
    """Every process whose KAGEMUSHA_DOMAIN tag is a directory under ``base``."""
    prefix = str(base)
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["pid"] == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error):
            tag = proc.environ().get("KAGEMUSHA_DOMAIN", "")
            if tag.startswith(prefix):
                found.append(proc)
    return found


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


@dataclass
class Node:
    """One kagemusha node for the tests: its own registry, its own environment."""

    base: Path
    registry: Path
    env: dict[str, str] = field(default_factory=dict)

    def run(
        self, *args: str, timeout: float = 120.0, check: bool = False, prefix: Sequence[str] = ()
    ) -> subprocess.CompletedProcess[str]:
        """Run ``kagemusha domain ARGS`` as the operator would (``prefix``: e.g. runuser)."""
        proc = subprocess.run(
            [*prefix, KAGEMUSHA, "domain", *args],
            check=False,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"kagemusha domain {' '.join(args)} -> {proc.returncode}\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def seed_properties(self, which: str = "domain1", **extra: str) -> Path:
        """The seed's ``<which>.properties`` with ports +10000, in the node's directory."""
        return shifted_properties(
            SEED / f"{which}.properties",
            self.base / f"{which}.properties",
            extra={k.replace("_", "."): v for k, v in extra.items()},
        )

    def create(
        self, name: str, domaindir: Path, *, admin_port: int = 6202 + PORT_OFFSET, **extra: str
    ) -> None:
        props = self.seed_properties(name, **extra)
        self.run(
            "create", "--user", "admin", "--password", "adminadmin", "--port", str(admin_port),
            f"--file={props}", f"--domaindir={domaindir}", name, check=True,
        )  # fmt: skip


def cleanup(base: Path) -> None:
    """Kill whatever the test left running under ``base`` (by pid, proven by the tag)."""
    for _ in range(3):
        procs = tagged_under(base)
        if not procs:
            return
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=2)


PORTS_LOCK = Path(tempfile.gettempdir()) / "kagemusha-domain-ports.lock"


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A temporary directory any user can traverse (the service-user test runs domains in it).

    NB: the tests use the seed's ports +10000, fixed; two runs of this suite on one host (two
    engineers, or CI beside a developer) would collide. Each test holds ``PORTS_LOCK`` while it
    runs, so concurrent runs take turns instead of failing. Other suites that start domains on
    these ports should take the same lock.
    """
    with open(PORTS_LOCK, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        d = Path(tempfile.mkdtemp(prefix="km-domains-"))
        d.chmod(0o755)
        try:
            yield d
        finally:
            cleanup(d)
            shutil.rmtree(d, ignore_errors=True)


def make_node(base: Path, name: str = "n1") -> Node:
    home = base / name
    home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.pop("KAGEMUSHA_DOMAIN", None)
    env["KAGEMUSHA_DOMAIN_REGISTRY"] = str(home / "registry")
    return Node(base=home, registry=home / "registry", env=env)


@pytest.fixture
def node(workdir: Path) -> Node:
    """A node with its own registry under a temporary directory (cleaned up by ``workdir``)."""
    return make_node(workdir, "n1")


def wait_for(predicate: object, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False

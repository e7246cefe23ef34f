"""Where domains live: the per-domain layout on disk and the node's registry of domains roots.

A domain lives in ``<domains root>/<name>/``::

    config/domain.properties   the operator's properties, without the plain password
    config/admin.argon2        the admin password's argon2 hash (mode 0600)
    config/kagemusha.json      kagemusha settings of the domain (autostart)
    config/https.crt, .key     the self-signed TLS certificate made at create (key 0600)
    logs/                      domain.log, server.log, access.log (rotated), console.log
    state/                     state.json (state, pids), names.json (naming service)
    apps/                      deployed application code (on the import path)

Nothing under ``state/`` names a physical host: a standby node that mounts the same disk
serves the same names.

The node's registry (``registry.json`` in the registry directory: ``$KAGEMUSHA_DOMAIN_REGISTRY``,
else ``$KAGEMUSHA_HOME/domains``, else ``/var/lib/kagemusha/domains``) lists the domains roots
this node serves and where each domain lives. The registry directory is itself the default
domains root and holds the ``admin`` domain.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kagemusha.errors import DomainError

__all__ = ["ADMIN_DOMAIN", "DEFAULT_ADMIN_PORT", "DEFAULT_REGISTRY", "DomainLayout", "NodeRegistry"]

ADMIN_DOMAIN = "admin"
DEFAULT_REGISTRY = "/var/lib/kagemusha/domains"
DEFAULT_ADMIN_PORT = 6202
ENV_REGISTRY = "KAGEMUSHA_DOMAIN_REGISTRY"
ENV_HOME = "KAGEMUSHA_HOME"


def write_json_atomic(path: Path, data: Any, *, mode: int = 0o644) -> None:
    """Write JSON to ``path`` atomically (temp file + rename), so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
            fh.write("\n")
        os.chmod(tmp, mode)
        if os.geteuid() == 0:
            # NB: root writing into a service user's domain keeps the file the user's (otxown).
            st = os.stat(path.parent)
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _write_secret(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600 from its creation on (never readable in between)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable half-way."""
    try:
        with open(path) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def process_create_time(pid: int) -> float | None:
    """When process ``pid`` started, as psutil's ``create_time()`` computes it (boot time + start ticks).

    NB: read from ``/proc`` here so that the domain master need not import psutil to record
    itself; readers compare it with psutil's figure within a second.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
        with open("/proc/stat", "rb") as fh:
            btime = next(int(ln.split()[1]) for ln in fh if ln.startswith(b"btime "))
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat[stat.rfind(b")") + 2 :].split()
    return btime + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def may_have_processes(
    domain_dir: Path, session: int | None, *, exclude: frozenset[int] = frozenset()
) -> bool:
    """Whether any live process might belong to the domain: tagged with it, or in its session.

    A quick pass over ``/proc`` without psutil: False means certainly none (nothing to scan
    further); True means :func:`kagemusha.domains._procs.domain_processes` must decide. Used by
    the master at every stop, where importing psutil and asking it about every process of the
    node cost hundreds of milliseconds on a loaded machine.
    """
    entry = b"\0KAGEMUSHA_DOMAIN=" + os.fsencode(str(domain_dir)) + b"\0"
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        try:
            try:
                with open(f"/proc/{name}/environ", "rb") as fh:
                    env = b"\0" + fh.read() + b"\0"
            except PermissionError:
                env = (
                    b""  # as domain_processes: an unreadable environment is no tag (the session still counts)
                )
            if entry in env:
                return True
            if session is not None:
                with open(f"/proc/{name}/stat", "rb") as fh:
                    stat = fh.read()
                fields = stat[stat.rfind(b")") + 2 :].split()
                if fields[0] != b"Z" and int(fields[3]) == session:
                    return True
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
    return False


def write_state(
    state_file: Path, state: str, *, pid: int | None = None, detail: str = "", **extra: Any
) -> None:
    """Record the domain's state; with ``pid`` (the master) its creation time is recorded too.

    NB: a missing ``state/`` is never recreated: the domain's disk may have been unmounted
    under a running domain, and writing would create a stray tree on the bare mount point.
    """
    if not state_file.parent.is_dir():
        return
    data: dict[str, Any] = {"state": state, "since": time.time(), "detail": detail, **extra}
    if pid is not None:
        data["pid"] = pid
        created = process_create_time(pid)
        if created is not None:
            data["create_time"] = created
        with contextlib.suppress(OSError):
            data["pgid"] = os.getpgid(pid)  # == pid: the master leads its own session and group
            data["sid"] = os.getsid(pid)
    write_json_atomic(state_file, data)


def write_desired(layout: DomainLayout, desired: str) -> None:
    """Record what the operator last asked of the domain: ``running`` or ``stopped``.

    The admin domain restarts a crashed domain only while it is desired ``running``; ``stop``
    and ``kill`` (fencing) record ``stopped`` *before* they signal anything, so a domain being
    fenced is never brought back. Never recreates a missing ``state/`` (see :func:`write_state`).
    """
    if not layout.state.is_dir():
        return
    with contextlib.suppress(OSError):
        tmp = layout.state / f".desired.{os.getpid()}.tmp"
        tmp.write_text(desired + "\n")
        if os.geteuid() == 0:
            # NB: root writing into a service user's domain keeps the file the user's (otxown).
            st = os.stat(layout.state)
            os.chown(tmp, st.st_uid, st.st_gid)
        os.replace(tmp, layout.state / "desired")


def read_desired(layout: DomainLayout) -> str:
    """``running`` or ``stopped`` (the default: never started by a kagemusha that records it)."""
    try:
        return (layout.state / "desired").read_text().strip() or "stopped"
    except OSError:
        return "stopped"


@dataclass(frozen=True)
class DomainLayout:
    """The paths of one domain directory."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def config(self) -> Path:
        return self.dir / "config"

    @property
    def properties(self) -> Path:
        return self.dir / "config" / "domain.properties"

    @property
    def password_hash(self) -> Path:
        return self.dir / "config" / "admin.argon2"

    @property
    def https_cert(self) -> Path:
        """The generated self-signed certificate (when ``domain.https.cert`` is not set)."""
        return self.dir / "config" / "https.crt"

    @property
    def https_key(self) -> Path:
        """The generated certificate's key (0600)."""
        return self.dir / "config" / "https.key"

    @property
    def settings(self) -> Path:
        return self.dir / "config" / "kagemusha.json"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def state_file(self) -> Path:
        return self.dir / "state" / "state.json"

    @property
    def names_file(self) -> Path:
        return self.dir / "state" / "names.json"

    @property
    def apps(self) -> Path:
        return self.dir / "apps"

    def exists(self) -> bool:
        return self.properties.is_file()

    def make(self) -> None:
        for d in (self.config, self.logs, self.state, self.apps):
            d.mkdir(parents=True, exist_ok=True)

    def read_settings(self) -> dict[str, Any]:
        data = read_json(self.settings)
        return data if isinstance(data, dict) else {}

    def write_settings(self, settings: Mapping[str, Any]) -> None:
        write_json_atomic(self.settings, dict(settings))

    def read_hash(self) -> str | None:
        try:
            return self.password_hash.read_text().strip() or None
        except OSError:
            return None


class NodeRegistry:
    """The node's record of domains roots and of where each domain lives.

    Reads never lock; every change is a locked read-modify-write replaced atomically, so
    concurrent ``kagemusha domain`` commands on one node do not lose each other's updates.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).absolute()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NodeRegistry:
        """The registry this process uses: ``$KAGEMUSHA_DOMAIN_REGISTRY``, ``$KAGEMUSHA_HOME/domains`` or the default."""
        env = os.environ if env is None else env
        if env.get(ENV_REGISTRY):
            return cls(env[ENV_REGISTRY])
        if env.get(ENV_HOME):
            return cls(Path(env[ENV_HOME]) / "domains")
        return cls(DEFAULT_REGISTRY)

    def __repr__(self) -> str:
        return f"NodeRegistry({str(self.path)!r})"

    @property
    def file(self) -> Path:
        return self.path / "registry.json"

    @property
    def admin_layout(self) -> DomainLayout:
        return DomainLayout(self.path / ADMIN_DOMAIN)

    @property
    def admin_hash_file(self) -> Path:
        """The admin domain's argon2 hash (0600), kept out of ``registry.json``."""
        return self.path / "admin.argon2"

    def load(self) -> dict[str, Any]:
        """The registry; ``admin.password_hash`` comes from :attr:`admin_hash_file` when readable.

        NB: ``registry.json`` stays world-readable (0644): a domain's service user runs
        ``kagemusha domain start`` itself and must find where its domain lives; the secret part,
        the admin hash, lives in a 0600 file of its own (an older registry that held it moves
        it there at the next change).
        """
        data = read_json(self.file)
        if not isinstance(data, dict):
            data = {}
        data.setdefault("roots", [])
        data.setdefault("domains", {})
        data.setdefault("admin", {})
        if isinstance(data["admin"], dict) and "password_hash" not in data["admin"]:
            try:
                stored = self.admin_hash_file.read_text().strip()
            except OSError:
                stored = ""
            if stored:
                data["admin"]["password_hash"] = stored
        return data

    @contextlib.contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Locked read-modify-write of the registry; the dict yielded is written back on success."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = open(self.path / ".lock", "a+")  # noqa: SIM115 - held by the with below
        except OSError as exc:
            raise DomainError(f"cannot write the domain registry {self.path}: {exc.strerror or exc}") from exc
        with lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            data = self.load()
            yield data
            admin = data.get("admin")
            secret = admin.pop("password_hash", None) if isinstance(admin, dict) else None
            if secret:
                _write_secret(self.admin_hash_file, secret + "\n")
            write_json_atomic(self.file, data, mode=0o644)

    # -- roots and domains -------------------------------------------------------------------

    def roots(self) -> list[Path]:
        """Every domains root this node serves, the default root (the registry directory) first."""
        out = [self.path]
        for r in self.load()["roots"]:
            p = Path(r)
            if p not in out:
                out.append(p)
        return out

    def add_root(self, root: Path) -> None:
        with self.edit() as data:
            if str(root) not in data["roots"]:
                data["roots"].append(str(root))

    def register(self, name: str, root: Path) -> None:
        with self.edit() as data:
            data["domains"][name] = str(root)
            if root != self.path and str(root) not in data["roots"]:
                data["roots"].append(str(root))

    def unregister(self, name: str) -> None:
        with self.edit() as data:
            data["domains"].pop(name, None)

    def locate(self, name: str, domaindir: str | Path | None = None) -> DomainLayout:
        """The layout of domain ``name``.

        Args:
            name: the domain.
            domaindir: its domains root, as given by ``--domaindir``; when None the registry says.

        Raises:
            DomainError: no such domain on this node.
        """
        if name == ADMIN_DOMAIN:
            return self.admin_layout
        if domaindir is not None:
            layout = DomainLayout(Path(domaindir).absolute() / name)
            if not layout.exists():
                raise DomainError(f"domain {name} does not exist in {layout.dir.parent}")
            return layout
        recorded = self.load()["domains"].get(name)
        if recorded:
            layout = DomainLayout(Path(recorded) / name)
            if layout.exists():
                return layout
        for root in self.roots():
            layout = DomainLayout(root / name)
            if layout.exists():
                return layout
        if recorded:
            raise DomainError(
                f"domain {name} is registered in {recorded} but that directory has no domain"
                " (is the switchover disk mounted?)"
            )
        raise DomainError(f"domain {name} does not exist on this node (use --domaindir or `domain setup`)")

    def domains(self, domaindir: str | Path | None = None) -> list[DomainLayout]:
        """The user domains of one root (``domaindir``) or of every root of the node, by name."""
        roots = [Path(domaindir).absolute()] if domaindir is not None else self.roots()
        recorded = self.load()["domains"]
        found: dict[str, DomainLayout] = {}
        if domaindir is None:
            for name, root in recorded.items():
                layout = DomainLayout(Path(root) / name)
                if layout.exists():
                    found[name] = layout
        for root in roots:
            try:
                entries = sorted(root.iterdir())
            except OSError:
                continue
            for entry in entries:
                if entry.name == ADMIN_DOMAIN or entry.name in found:
                    continue
                layout = DomainLayout(entry)
                if layout.exists():
                    found[entry.name] = layout
        return [found[n] for n in sorted(found)]

    # -- the admin domain ---------------------------------------------------------------------

    def admin_settings(self) -> dict[str, Any]:
        admin = self.load()["admin"]
        return admin if isinstance(admin, dict) else {}

    def admin_port(self) -> int:
        port = self.admin_settings().get("port")
        return int(port) if isinstance(port, int) else DEFAULT_ADMIN_PORT

    def admin_bind_address(self) -> str:
        """Where the admin domain listens: loopback unless the registry's ``admin.bind_address`` says."""
        addr = self.admin_settings().get("bind_address")
        return addr if isinstance(addr, str) and addr else "127.0.0.1"

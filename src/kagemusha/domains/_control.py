"""create / delete / start / stop / kill / list / deploy / setup / autostart, and the admin domain.

Every function takes the node's :class:`NodeRegistry` (default: from the environment) and
raises :class:`DomainError` (one clear line) or :class:`ConfigError` (bad properties).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from kagemusha.domains._layout import (
    ADMIN_DOMAIN,
    DomainLayout,
    NodeRegistry,
    read_json,
    write_json_atomic,
)
from kagemusha.domains._procs import (
    ENV_START_FD,
    ENV_TAG,
    bind_listener,
    domain_processes,
    kill_all,
    kill_procs,
    master_alive,
    processes_tagged_under,
    read_record,
    reap,
    send_signal,
    wait_exit,
    write_desired,
    write_state,
)
from kagemusha.domains._properties import (
    KEY_ADMIN_PASSWORD,
    KEY_ADMIN_PORT,
    KEY_APP,
    KEY_APP_PATH,
    KEY_HTTP_PORT,
    KEY_HTTPS_CERT,
    KEY_HTTPS_KEY,
    KEY_HTTPS_PORT,
    KEY_NAMING_PORT,
    DomainProperties,
    check_port_conflicts,
    load_properties,
    parse_properties,
    probe_host,
    redact_password,
    set_key,
    url_host,
)
from kagemusha.errors import ConfigError, DomainError

if TYPE_CHECKING:
    import psutil  # NB: imported where used: a start after a clean stop never needs it (issue 12)

__all__ = [
    "DomainHealth",
    "DomainInfo",
    "DomainState",
    "check_domain_health",
    "create_domain",
    "delete_domain",
    "deploy_app",
    "domain_state",
    "is_autostart",
    "kill_domain",
    "list_domains",
    "remove_domains_root",
    "set_autostart",
    "set_properties",
    "setup_domains_root",
    "start_domain",
    "stop_domain",
]

DEFAULT_START_WAIT = 120.0
DEFAULT_WAIT_TIMEOUT = 300.0
_IMPORT_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.:")


class DomainState(StrEnum):
    """A domain's state, spelled as ``list-domains`` prints it."""

    NOT_RUNNING = "not running"
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    FAILED = "failed"


@dataclass(frozen=True)
class DomainInfo:
    """One line of ``list``: a domain, its directory and its state."""

    name: str
    dir: Path
    state: DomainState


@dataclass(frozen=True)
class DomainHealth:
    """What :func:`check_domain_health` found."""

    state: DomainState
    admin_ok: bool
    app_ok: bool
    detail: str = ""

    @property
    def ok(self) -> bool:
        """The domain serves: its admin API accepted the credentials and its app answers."""
        return self.admin_ok and self.app_ok


def _registry(registry: NodeRegistry | None) -> NodeRegistry:
    return registry if registry is not None else NodeRegistry.from_env()


def _stored_props(layout: DomainLayout) -> DomainProperties:
    return load_properties(layout.properties, name=layout.name)


def _other_domains_ports(
    reg: NodeRegistry, extra_roots: Iterable[Path] = ()
) -> list[tuple[str, dict[str, int]]]:
    out: list[tuple[str, dict[str, int]]] = [("admin", {"--port (admin domain)": reg.admin_port()})]
    seen: set[Path] = set()
    layouts = list(reg.domains())
    for root in extra_roots:
        layouts.extend(reg.domains(root))
    for layout in layouts:
        if layout.dir in seen:
            continue
        seen.add(layout.dir)
        with contextlib.suppress(ConfigError):
            out.append((layout.name, dict(_stored_props(layout).ports)))
    return out


def _run_user(props: DomainProperties) -> pwd.struct_passwd | None:
    """The service user to run as (when we are root and it differs from us), else None.

    Raises:
        DomainError: the domain must run as another user and we are not root.
    """
    if props.run_user is None:
        return None
    pw = pwd.getpwnam(props.run_user)
    if os.geteuid() == pw.pw_uid:
        return None
    if os.geteuid() != 0:
        raise DomainError(
            f"domain {props.name} runs as {props.run_user} (domain.run.user): start it as root or as that user"
        )
    import kagemusha

    for needed in (Path(sys.executable), Path(kagemusha.__file__).parent):
        blocked = _unreachable_for(pw, needed)
        if blocked is not None:
            raise DomainError(
                f"domain {props.name} runs as {props.run_user} (domain.run.user) but that user cannot reach"
                f" {needed} ({blocked} is not searchable by it): install kagemusha where the service user can read it"
            )
    return pw


def _unreachable_for(pw: pwd.struct_passwd, path: Path) -> Path | None:
    """The first directory on the way to ``path`` that user ``pw`` cannot traverse, if any."""
    import stat as stat_

    target = Path(os.path.realpath(path))
    for d in [*reversed(target.parents), target] if target.is_dir() else reversed(target.parents):
        try:
            st = d.stat()
        except OSError:
            return d
        if st.st_uid == pw.pw_uid:
            bit = stat_.S_IXUSR
        elif st.st_gid == pw.pw_gid:
            bit = stat_.S_IXGRP
        else:
            bit = stat_.S_IXOTH
        if not st.st_mode & bit:
            return d
    return None


def _chown_tree(path: Path, pw: pwd.struct_passwd) -> None:
    """The seed's ``otxown.sh``: the whole domain directory belongs to the service user."""
    for dirpath, dirnames, filenames in os.walk(path):
        os.chown(dirpath, pw.pw_uid, pw.pw_gid)
        for n in dirnames + filenames:
            with contextlib.suppress(FileNotFoundError):
                os.chown(os.path.join(dirpath, n), pw.pw_uid, pw.pw_gid, follow_symlinks=False)


def _check_admin_credentials(reg: NodeRegistry, user: str | None, password: str | None) -> None:
    """``--user/--password`` must match the node's admin hash, when both exist."""
    from kagemusha.domains._auth import verify_password

    admin = reg.admin_settings()
    if password is None or not admin.get("password_hash"):
        return
    if (user or "admin") != admin.get("user", "admin") or not verify_password(
        admin["password_hash"], password
    ):
        raise DomainError("the admin domain refused the credentials (--user/--password)")


# -- create / delete ---------------------------------------------------------------------------


def create_domain(
    name: str,
    properties_file: str | Path,
    *,
    domaindir: str | Path | None = None,
    admin_user: str | None = None,
    admin_password: str | None = None,
    admin_port: int | None = None,
    registry: NodeRegistry | None = None,
) -> tuple[DomainLayout, list[str]]:
    """Create domain ``name`` from a properties file (``otxadmin create-domain``).

    Args:
        name: the domain's name (must equal ``domain.name`` in the file).
        properties_file: the operator's file; read, never modified.
        domaindir: the domains root (``--domaindir``, e.g. ``/data1/domains`` on the switchover
            disk); default the registry directory.
        admin_user: ``--user``: the node admin domain's user.
        admin_password: ``--password``: checked against the node's admin hash if one is set,
            else recorded (hashed) as the admin domain's password; also the domain's own admin
            password when the file has none.
        admin_port: ``--port``: the admin domain's port (recorded when not set yet).
        registry: the node registry.

    Returns:
        The new domain's layout and warnings for the operator (e.g. a plain password in the file).

    Raises:
        ConfigError: the file is unreadable or a key is wrong, or a port is taken by another domain.
        DomainError: the domain exists already, or the admin credentials are refused.
    """
    from kagemusha.domains._auth import hash_password

    reg = _registry(registry)
    path = Path(properties_file)
    props = load_properties(path, name=name)
    # -- data sources (issue 13 item 3): each password file exists and is 0600 before anything is created
    from kagemusha.domains._datasource import check_password_files, parse_datasources

    check_password_files(parse_datasources(props.raw, source=str(path)), source=str(path))
    with reg.edit():
        pass  # the registry must be writable before anything is created
    text = path.read_text(encoding="latin-1")
    root = Path(domaindir).absolute() if domaindir is not None else reg.path
    layout = DomainLayout(root / name)
    if layout.dir.exists():
        raise DomainError(f"domain {name} already exists in {root}")
    with contextlib.suppress(DomainError):
        existing = reg.locate(name)
        raise DomainError(f"domain {name} already exists on this node in {existing.dir.parent}")

    _check_admin_credentials(reg, admin_user, admin_password)
    admin = reg.admin_settings()
    if admin_port is not None and admin.get("port") not in (None, admin_port):
        raise DomainError(
            f"the admin domain of this node listens on port {admin['port']}, not {admin_port} (--port)"
        )
    port_for_check = admin_port if admin_port is not None else reg.admin_port()
    others = _other_domains_ports(reg, [root])
    others[0] = ("admin", {"--port (admin domain)": port_for_check})
    conflicts = check_port_conflicts(name, props.ports, others)
    if conflicts:
        raise ConfigError(conflicts)

    password = props.admin_password or admin_password
    if not password:
        raise DomainError(
            f"no admin password for {name}: set domain.admin.password in {path} or pass --password"
        )
    warnings: list[str] = []
    if props.admin_password:
        warnings.append(
            f"{path} holds the admin password in plain text (domain.admin.password); kagemusha stored only"
            " its hash: remove the password from that file"
        )

    tmp = DomainLayout(root / f".{name}.creating")
    shutil.rmtree(tmp.dir, ignore_errors=True)
    try:
        tmp.make()
        tmp.properties.write_text(redact_password(text), encoding="latin-1")
        fd = os.open(tmp.password_hash, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(hash_password(password) + "\n")
        tmp.write_settings({"autostart": True})
        _prepare_https(tmp, props)
        write_state(tmp.state_file, "not running")
        if props.run_user is not None and os.geteuid() == 0:
            _chown_tree(tmp.dir, pwd.getpwnam(props.run_user))
        os.rename(tmp.dir, layout.dir)
    except OSError as exc:
        shutil.rmtree(tmp.dir, ignore_errors=True)
        raise DomainError(f"cannot create domain {name} in {root}: {exc.strerror or exc}") from exc
    except BaseException:
        shutil.rmtree(tmp.dir, ignore_errors=True)
        raise
    reg.register(name, root)
    with reg.edit() as data:
        adm = data["admin"]
        if admin_port is not None:
            adm.setdefault("port", admin_port)
        if admin_password is not None and not adm.get("password_hash"):
            adm["user"] = admin_user or "admin"
            adm["password_hash"] = hash_password(admin_password)
    return layout, warnings


def delete_domain(
    name: str,
    domaindir: str | Path | None = None,
    *,
    admin_user: str | None = None,
    admin_password: str | None = None,
    registry: NodeRegistry | None = None,
) -> list[str]:
    """Delete a stopped domain and its directory (``otxadmin delete-domain``).

    A domain whose directory is gone (deleted by hand, or on a switchover disk not mounted here)
    but that the registry still lists loses its registry entry, with a warning; nothing on any
    disk is touched then.

    Returns:
        Warnings for the operator (the stale entry case).

    Raises:
        DomainError: it does not exist, it is running, or the admin credentials are refused.
    """

    reg = _registry(registry)
    if name == ADMIN_DOMAIN:
        raise DomainError("the admin domain cannot be deleted")
    try:
        layout = reg.locate(name, domaindir)
    except DomainError:
        recorded = reg.load()["domains"].get(name)
        if not recorded or (domaindir is not None and Path(domaindir).absolute() != Path(recorded)):
            raise
        _check_admin_credentials(reg, admin_user, admin_password)
        gone = DomainLayout(Path(recorded) / name)
        left = domain_processes(gone.dir)
        if left:
            raise DomainError(
                f"domain {name}'s directory {gone.dir} is gone but processes {[p.pid for p in left]} of it"
                " still run; `kagemusha domain kill` it first"
            ) from None
        reg.unregister(name)
        warning = (
            f"domain {name}'s directory {gone.dir} is gone (deleted, or its disk is not mounted here);"
            " removed its stale entry from this node's registry, nothing on disk was touched"
        )
        return [warning]
    _check_admin_credentials(reg, admin_user, admin_password)

    with _domain_lock(layout):
        state = _state(layout)
        if state not in (DomainState.NOT_RUNNING, DomainState.FAILED):
            raise DomainError(f"domain {name} is {state}; stop it before deleting it")
        try:
            shutil.rmtree(layout.dir)
        except OSError as exc:
            raise DomainError(f"cannot delete {layout.dir}: {exc.strerror or exc}") from exc
    reg.unregister(name)
    return []


# -- set ---------------------------------------------------------------------------------------


def set_properties(
    name: str,
    assignments: Iterable[tuple[str, str | None]],
    domaindir: str | Path | None = None,
    *,
    registry: NodeRegistry | None = None,
) -> list[str]:
    """Change properties of a stopped domain (``otxadmin set``), validated exactly like ``create``.

    Args:
        name: the domain.
        assignments: ``(key, value)`` pairs applied in order; a value of None removes the key.
            ``domain.admin.password`` is never written: its argon2 hash replaces the domain's.
        domaindir: its domains root; default: where the registry says it lives.
        registry: the node registry.

    Returns:
        The keys changed, in order.

    Raises:
        DomainError: no such domain, it is not stopped, or the file cannot be written.
        ConfigError: the resulting properties are invalid, or a port is another domain's; nothing
            is changed then.
    """
    import javaproperties

    from kagemusha.domains._auth import hash_password

    reg = _registry(registry)
    if name == ADMIN_DOMAIN:
        raise DomainError("the admin domain has no properties to set (use create/setup --port)")
    layout = reg.locate(name, domaindir)
    pairs = list(assignments)
    with _domain_lock(layout):
        state = _state(layout)
        if state not in (DomainState.NOT_RUNNING, DomainState.FAILED):
            raise DomainError(f"domain {name} is {state}; stop it before changing its properties")
        text = layout.properties.read_text(encoding="latin-1")
        new_password: str | None = None
        changed: list[str] = []
        for key, value in pairs:
            if key == KEY_ADMIN_PASSWORD:
                if not value:
                    raise DomainError(f"{KEY_ADMIN_PASSWORD} cannot be removed, only changed")
                new_password = value
            else:
                text = set_key(text, key, value)
            changed.append(key)
        props = parse_properties(dict(javaproperties.loads(text)), source=str(layout.properties), name=name)
        conflicts = check_port_conflicts(name, props.ports, _other_domains_ports(reg, [layout.dir.parent]))
        if conflicts:
            raise ConfigError(conflicts)
        _prepare_https(layout, props)
        try:
            _write_private(layout.properties, text.encode("latin-1"), mode=0o644)
            if new_password is not None:
                _write_private(layout.password_hash, (hash_password(new_password) + "\n").encode())
        except OSError as exc:
            raise DomainError(f"cannot write {layout.properties}: {exc.strerror or exc}") from exc
        if props.run_user is not None and os.geteuid() == 0:
            _chown_tree(layout.dir, pwd.getpwnam(props.run_user))
    return changed


def _write_private(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Replace ``path`` atomically with ``data``, created with ``mode`` (never readable in between)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _tls_host(props: DomainProperties) -> str:
    """The host a generated certificate is made for: the advertised host (the VIP) if any."""
    return props.advertised or props.hostname or "localhost"


def _prepare_https(layout: DomainLayout, props: DomainProperties) -> tuple[str, str] | None:
    """The domain's TLS certificate and key files, checked; generated (self-signed) when not given.

    Returns:
        ``(cert, key)``, or None when the domain serves no HTTPS.

    Raises:
        ConfigError: a given certificate or key is missing, readable by others, or unusable.
    """
    from kagemusha.domains._tls import check_tls_files, generate_self_signed

    if not props.https_port:
        return None
    if props.https_cert and props.https_key:
        errors = check_tls_files(
            props.https_cert, props.https_key, cert_key=KEY_HTTPS_CERT, key_key=KEY_HTTPS_KEY
        )
        if errors:
            raise ConfigError([(f"{layout.properties}: {k}", m) for k, m in errors])
        return props.https_cert, props.https_key
    host = _tls_host(props)
    settings = layout.read_settings()
    if (
        settings.get("https_generated_for") != host
        or not layout.https_cert.is_file()
        or not layout.https_key.is_file()
    ):
        try:
            generate_self_signed(host, layout.https_cert, layout.https_key)
        except OSError as exc:
            raise DomainError(
                f"cannot write the certificate of {layout.name}: {exc.strerror or exc}"
            ) from exc
        settings["https_generated_for"] = host
        layout.write_settings(settings)
    return str(layout.https_cert), str(layout.https_key)


# -- state -------------------------------------------------------------------------------------


def _state(layout: DomainLayout) -> DomainState:
    record = read_record(layout.state_file)
    if master_alive(record, layout.dir) is not None:
        if record.state == DomainState.NOT_RUNNING:
            return DomainState.STOPPING  # said so, but not exited yet
        try:
            return DomainState(record.state)
        except ValueError:
            return DomainState.RUNNING
    if record.state != DomainState.NOT_RUNNING and domain_processes(layout.dir, record):
        return DomainState.STOPPING  # NB: master gone but processes left: never say "not running"
    if record.state == DomainState.FAILED:
        return DomainState.FAILED  # the admin domain gave up restarting it
    return DomainState.NOT_RUNNING


def domain_state(
    name: str, domaindir: str | Path | None = None, *, registry: NodeRegistry | None = None
) -> DomainState:
    """The state of domain ``name`` (``not running`` only when no process of it is left).

    The domain's directory need not be there: with the switchover disk gone, the state comes
    from the processes tagged with it (``stopping`` if any is left, else ``not running``).

    Raises:
        DomainError: no such domain (neither on disk nor in the registry).
    """
    layout = _layout_even_if_gone(_registry(registry), name, domaindir)
    if not layout.exists():
        return DomainState.STOPPING if domain_processes(layout.dir) else DomainState.NOT_RUNNING
    return _state(layout)


def _layout_even_if_gone(reg: NodeRegistry, name: str, domaindir: str | Path | None) -> DomainLayout:
    """The domain's layout, also when its directory is gone (disk unmounted) but its place is known."""
    try:
        return reg.locate(name, domaindir)
    except DomainError:
        if domaindir is not None:
            return DomainLayout(Path(domaindir).absolute() / name)
        recorded = reg.load()["domains"].get(name)
        if recorded:
            return DomainLayout(Path(recorded) / name)
        raise


def list_domains(
    domaindir: str | Path | None = None, *, registry: NodeRegistry | None = None
) -> list[DomainInfo]:
    """Every domain of the node (the admin domain first), or of one domains root."""
    reg = _registry(registry)
    out: list[DomainInfo] = []
    if domaindir is None:
        out.append(DomainInfo(ADMIN_DOMAIN, reg.admin_layout.dir, _state(reg.admin_layout)))
    for layout in reg.domains(domaindir):
        out.append(DomainInfo(layout.name, layout.dir, _state(layout)))
    return out


# -- start -------------------------------------------------------------------------------------


_LOG_FILES = ("server.log", "console.log", "domain.log", "admin.log")


def _log_sizes(layout: DomainLayout) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for fname in _LOG_FILES:
        with contextlib.suppress(OSError):
            sizes[fname] = (layout.logs / fname).stat().st_size
    return sizes


def _last_log_line(layout: DomainLayout, since: dict[str, int] | None = None) -> str:
    """The most telling line the logs got since ``since`` (an error, else a pointer to the logs)."""
    for fname in _LOG_FILES:
        try:
            with open(layout.logs / fname, "rb") as fh:
                fh.seek((since or {}).get(fname, 0))
                text = fh.read().decode(errors="replace")
        except OSError:
            continue
        lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
        exc_lines = [ln for ln in lines if re.match(r"^[\w.]*(Error|Exception)\b.*:", ln)]
        level_lines = [ln for ln in lines if " ERROR " in ln or " CRITICAL " in ln]
        best = exc_lines or level_lines
        if best:
            return f"{best[-1][:300]} (in {layout.logs / fname})"
    return f"see {layout.logs}"


def _console(layout: DomainLayout) -> int:
    path = layout.logs / "console.log"
    with contextlib.suppress(OSError):
        if path.stat().st_size > 10 * 1024 * 1024:
            os.replace(path, path.with_suffix(".log.1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _spawn(
    argv: list[str],
    layout: DomainLayout,
    fds: dict[str, int],
    *,
    env_extra: dict[str, str],
    pw: pwd.struct_passwd | None,
    ready_fd: int | None = None,
) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    for secret in ("KAGEMUSHA_ADMIN_PASSWORD", "KAGEMUSHA_DOMAIN_PASSWORD"):
        env.pop(secret, None)  # the CLI's password never reaches the domain's environment
    env[ENV_TAG] = str(layout.dir)
    env["KAGEMUSHA_DOMAIN_FDS"] = ",".join(f"{k}:{v}" for k, v in fds.items())
    env["PYTHONUNBUFFERED"] = "1"
    env.pop(ENV_START_FD, None)
    if ready_fd is not None:
        env[ENV_START_FD] = str(ready_fd)
    env.update(env_extra)
    if pw is not None:
        env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    console = _console(layout)
    if pw is not None:
        os.fchown(console, pw.pw_uid, pw.pw_gid)
    try:
        return subprocess.Popen(
            argv,
            start_new_session=True,  # its own session and process group: the domain's boundary
            pass_fds=[*fds.values(), *([ready_fd] if ready_fd is not None else [])],
            env=env,
            cwd=str(layout.dir),
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=console,
            user=pw.pw_uid if pw else None,
            group=pw.pw_gid if pw else None,
            extra_groups=[] if pw else None,
        )
    finally:
        os.close(console)


def _wait_signalled(ready_r: int, proc: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until the master writes its readiness line (True) or exits / closes the pipe (False).

    NB: no polling: the master writes one line to the pipe once the app serves; the pipe's
    EOF (the master died or gave up) ends the wait as well.
    """
    import select

    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        ready, _, _ = select.select([ready_r], [], [], left)
        if not ready:
            return False
        chunk = os.read(ready_r, 256)
        if not chunk:
            return False
        buf += chunk
        if b"\n" in buf:
            return buf.startswith(b"running")


def _wait_started(
    layout: DomainLayout,
    proc: subprocess.Popen[bytes],
    what: str,
    wait: float,
    probe: Callable[[], bool] | None,
    logs_before: dict[str, int] | None = None,
    *,
    ready_r: int | None = None,
) -> None:
    deadline = time.monotonic() + wait
    if ready_r is not None:
        try:
            _wait_signalled(ready_r, proc, deadline)
        finally:
            os.close(ready_r)
    while True:
        rc = proc.poll()
        record = read_record(layout.state_file)
        if rc is not None:
            detail = record.detail or f"exited with code {rc}"
            raise DomainError(f"{what} failed to start: {detail}; {_last_log_line(layout, logs_before)}")
        if record.pid == proc.pid and record.state == DomainState.RUNNING and (probe is None or probe()):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    kill_all(layout.dir, read_record(layout.state_file))
    write_state(layout.state_file, "not running", detail="did not start in time; killed")
    raise DomainError(
        f"{what} did not answer within {wait:g} s; its processes were killed ({_last_log_line(layout, logs_before)})"
    )


def _port_answers(port: int, *, host: str = "127.0.0.1", timeout: float = 2.0, tls: bool = False) -> bool:
    """Whether an HTTP(S) server on ``host:port`` answers a request (any status counts)."""
    if not tls:
        return _http_answers(port, host=host, timeout=timeout)
    import http.client
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # NB: liveness of our own server, not its identity
    conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=ctx)
    try:
        conn.request("GET", "/", headers={"Connection": "close"})
        conn.getresponse().read()
        return True
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def _http_answers(port: int, *, host: str, timeout: float) -> bool:
    """Plain HTTP: a ``GET /`` answered with an HTTP status line.

    NB: a socket, not http.client: importing http.client (with email and ssl) costs ~20 ms of CPU
    on the path of every ``domain start``, which probes the app once it said it serves (issue 12).
    The answer is read to its end (``Connection: close``; at most 64 KiB or until a read times
    out), so the server's write never meets a reset connection.
    """
    import socket

    request = f"GET / HTTP/1.1\r\nHost: {url_host(host)}:{port}\r\nConnection: close\r\n\r\n".encode()
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(request)
            answer = b""
            while len(answer) < 65536:
                try:
                    chunk = sock.recv(65536)
                except OSError:  # e.g. a server that keeps the connection: what came is the answer
                    break
                if not chunk:
                    break
                answer += chunk
            return answer.startswith(b"HTTP/")
    except OSError:
        return False


def _app_answers(props: DomainProperties, *, timeout: float = 2.0) -> bool:
    """Whether the domain's application answers (over HTTP, or HTTPS when HTTP is off)."""
    if props.http_port:
        return _port_answers(props.http_port, host=props.probe_host, timeout=timeout)
    return _port_answers(props.https_port, host=props.probe_host, timeout=timeout, tls=True)


def _bind_all(props: DomainProperties) -> dict[str, int]:
    """Bind every listening socket of the domain: services on the bind address, admin on its own."""
    socks = []
    try:
        if props.http_port:
            socks.append(("http", bind_listener(props.http_port, KEY_HTTP_PORT, host=props.bind_address)))
        if props.https_port:
            socks.append(("https", bind_listener(props.https_port, KEY_HTTPS_PORT, host=props.bind_address)))
        socks.append(
            ("admin", bind_listener(props.admin_port, KEY_ADMIN_PORT, host=props.admin_bind_address))
        )
        if props.naming_port is not None:
            socks.append(
                ("naming", bind_listener(props.naming_port, KEY_NAMING_PORT, host=props.bind_address))
            )
    except DomainError:
        for _, s in socks:
            s.close()
        raise
    return {k: s.detach() for k, s in socks}


def _app_env(layout: DomainLayout, props: DomainProperties, tls: tuple[str, str] | None) -> dict[str, str]:
    paths = [str(layout.apps)]
    if props.app_path:
        for p in props.app_path.split(os.pathsep):
            pp = Path(p)
            paths.insert(len(paths) - 1, str(pp if pp.is_absolute() else layout.dir / pp))
    access_log = props.raw.get("domain.access.log", "true").strip().lower() != "false"
    env = {
        "KAGEMUSHA_DOMAIN_APP": props.app or "",
        "KAGEMUSHA_DOMAIN_APP_PATH": os.pathsep.join(paths),
        "KAGEMUSHA_DOMAIN_NAME": props.name,
        "KAGEMUSHA_APP_WORKERS": str(props.workers),
        "KAGEMUSHA_APP_ACCESS_LOG": "true" if access_log else "false",
    }
    if tls is not None:
        env["KAGEMUSHA_TLS_CERT"], env["KAGEMUSHA_TLS_KEY"] = tls
    return env


def _check_startable(layout: DomainLayout, name: str) -> DomainState | None:
    """None when the domain may be started now; else its state (already up: nothing to do)."""
    deadline = time.monotonic() + 10.0
    while True:
        record = read_record(layout.state_file)
        if master_alive(record, layout.dir) is None:
            break
        if record.state != DomainState.NOT_RUNNING:
            return DomainState(record.state) if record.state in set(DomainState) else DomainState.RUNNING
        if time.monotonic() >= deadline:  # the master said "not running" but does not exit
            return DomainState.STOPPING
        time.sleep(0.05)  # a master that has just stopped: let it exit, then start afresh
    # NB: "not running" is only ever written once nothing of the domain is left (clean exit,
    # verified stop or kill): no need to scan the process table then, on the failover path.
    left = [] if record.state == DomainState.NOT_RUNNING else domain_processes(layout.dir, record)
    if left:
        raise DomainError(
            f"domain {name} is not running but processes {[p.pid for p in left]} of it are left;"
            " run `kagemusha domain stop --force` first"
        )
    return None


@contextlib.contextmanager
def _domain_lock(layout: DomainLayout) -> Iterator[None]:
    """Serialize start and delete of one domain across processes (two starts: one domain)."""
    layout.state.mkdir(parents=True, exist_ok=True)
    path = layout.state / ".lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as exc:
        raise DomainError(f"cannot lock {path}: {exc.strerror or exc}") from exc
    try:
        if os.geteuid() == 0:
            st = os.stat(layout.state)
            os.fchown(fd, st.st_uid, st.st_gid)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def start_domain(
    name: str,
    domaindir: str | Path | None = None,
    *,
    wait: float = DEFAULT_START_WAIT,
    adminonly: bool = False,
    registry: NodeRegistry | None = None,
    _spawned: list[subprocess.Popen[bytes]] | None = None,
) -> DomainState:
    """Start domain ``name`` and return once its application answers (``otxadmin start-domain``).

    Starting a started domain succeeds. ``admin`` starts the node's admin domain, which starts
    every user domain whose autostart is on, unless ``adminonly``.

    Args:
        name: the domain (or ``admin``).
        domaindir: its domains root; default: where the registry says it lives.
        wait: seconds to wait for readiness; a domain not ready by then is killed.
        adminonly: with ``admin``: start the admin domain alone.
        registry: the node registry.

    Returns:
        ``DomainState.RUNNING``.

    Raises:
        DomainError: no such domain, a port is taken, it exited or did not answer in time.
    """
    reg = _registry(registry)
    if name == ADMIN_DOMAIN:
        return _start_admin(reg, adminonly=adminonly, wait=wait)
    layout = reg.locate(name, domaindir)
    props = _stored_props(layout)
    with _domain_lock(layout):
        state = _start_locked(layout, props, name, wait, _spawned)
    with contextlib.suppress(OSError):
        (layout.state / RESTARTS_FILE).unlink()  # an operator's start: the restart budget is full again
    return state


RESTARTS_FILE = "restarts.json"


def restart_crashed(
    layout: DomainLayout,
    *,
    wait: float = DEFAULT_START_WAIT,
    spawned: list[subprocess.Popen[bytes]] | None = None,
    before_start: Callable[[], None] = lambda: None,
) -> bool:
    """Restart a domain whose master died while it was meant to run (the admin domain's duty).

    Under the domain's lock: only if it is still desired ``running`` and its master is still
    gone; what is left of it (an orphaned app server) is killed first. If a ``stop`` or ``kill``
    came in meanwhile, what was started is killed again.

    Returns:
        Whether the domain was restarted.

    Raises:
        DomainError: the start failed (the reason from the domain's logs).
    """
    from kagemusha.domains._procs import read_desired

    props = _stored_props(layout)
    with _domain_lock(layout):
        if read_desired(layout) != "running":
            return False
        record = read_record(layout.state_file)
        if master_alive(record, layout.dir) is not None:
            return False
        before_start()  # the restart is made: the caller counts it
        kill_all(layout.dir, record)
        write_state(layout.state_file, "not running", detail=record.detail)
        _start_locked(layout, props, layout.name, wait, spawned)
    if read_desired(layout) != "running":  # NB: a stop or a fence raced the restart: it wins
        kill_all(layout.dir, read_record(layout.state_file))
        write_state(layout.state_file, "not running", detail="stopped while restarting")
        return False
    return True


def mark_failed(layout: DomainLayout, detail: str) -> None:
    """Kill what is left of a crashed domain and record it ``failed`` (restart limit reached)."""
    with _domain_lock(layout):
        record = read_record(layout.state_file)
        if master_alive(record, layout.dir) is not None:
            return  # someone started it meanwhile
        kill_all(layout.dir, record)
        write_state(layout.state_file, "failed", detail=detail)


def _start_locked(
    layout: DomainLayout,
    props: DomainProperties,
    name: str,
    wait: float,
    spawned: list[subprocess.Popen[bytes]] | None = None,
) -> DomainState:
    current = _check_startable(layout, name)
    if current is DomainState.STOPPING:
        raise DomainError(f"domain {name} is stopping; wait for it or stop it with --force")
    if current is not None:
        if current is DomainState.STARTING:
            _wait_running(layout, wait)
        return DomainState.RUNNING
    if layout.read_hash() is None:
        raise DomainError(f"domain {name} has no admin password hash ({layout.password_hash})")
    # -- data sources (issue 13 item 3): a bad password file fails the start at once, the key named.
    # NB: only keys under "datasource." are data sources; without one, the module (and asyncio with
    # it) is not imported on the start path (issue 12).
    if any(k.startswith("datasource.") for k in props.raw):
        from kagemusha.domains._datasource import check_password_files, parse_datasources

        sources = parse_datasources(props.raw, source=str(layout.properties))
        check_password_files(sources, source=str(layout.properties))
    pw = _run_user(props)
    layout.make()
    tls = _prepare_https(layout, props)
    if pw is not None:
        _chown_tree(layout.dir, pw)
    fds = _bind_all(props)
    logs_before = _log_sizes(layout)
    ready_r, ready_w = os.pipe()
    write_desired(layout, "running")
    try:
        proc = _spawn(
            [sys.executable, "-m", "kagemusha.domains._runtime", str(layout.dir)],
            layout,
            fds,
            env_extra={**_app_env(layout, props, tls), "KAGEMUSHA_DOMAIN_PROPS": json.dumps(dict(props.raw))},
            pw=pw,
            ready_fd=ready_w,
        )
    except BaseException:
        os.close(ready_r)
        raise
    finally:
        os.close(ready_w)
        for fd in fds.values():
            os.close(fd)
    if spawned is not None:
        spawned.append(proc)
    _wait_started(
        layout, proc, f"domain {name}", wait, lambda: _app_answers(props), logs_before, ready_r=ready_r
    )
    return DomainState.RUNNING


def _wait_running(layout: DomainLayout, wait: float) -> None:
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        st = _state(layout)
        if st is DomainState.RUNNING:
            return
        if st is DomainState.NOT_RUNNING:
            raise DomainError(
                f"domain {layout.name} failed to start: {read_record(layout.state_file).detail}"
            )
        time.sleep(0.05)
    raise DomainError(f"domain {layout.name} did not become running within {wait:g} s")


# -- stop / kill -------------------------------------------------------------------------------


def _stop_layout(layout: DomainLayout, what: str, *, force: bool, wait_timeout: float) -> None:
    write_desired(layout, "stopped")  # before any signal: the admin domain must not restart it
    record = read_record(layout.state_file)
    master = master_alive(record, layout.dir)
    if master is None:
        left = domain_processes(layout.dir, record)
        if not left:
            if record.state != DomainState.NOT_RUNNING and layout.exists():
                write_state(layout.state_file, "not running", detail=record.detail)
            return
        if force and wait_timeout <= 0:
            kill_domain_layout(layout)
            return
        # The master died; what is left gets the same treatment: TERM, wait, then KILL or fail.
        for p in left:
            with contextlib.suppress(Exception):
                p.terminate()
        targets = left
    else:
        if force and wait_timeout <= 0:
            kill_domain_layout(layout)
            return
        send_signal(master.pid, signal.SIGTERM)
        targets = [master]
    deadline = time.monotonic() + wait_timeout
    while True:
        for p in targets:
            reap(p.pid)
        alive = [p for p in targets if _alive(p)]
        if not alive:
            break
        if time.monotonic() >= deadline:
            if force:
                kill_domain_layout(layout)
                return
            if master is not None:
                send_signal(master.pid, signal.SIGUSR1)  # abandon the stop: the domain keeps running
            raise DomainError(
                f"{what} did not stop within {wait_timeout:g} s (--wait_timeout); it keeps running"
                " (use --force to kill it)"
            )
        wait_exit(alive[0].pid, min(0.5, max(0.0, deadline - time.monotonic())))
    # The master terminates detached leftovers before it exits and then records "not running";
    # only when it could not (it died, or we waited on leftovers) is the process table scanned.
    rec = read_record(layout.state_file)
    clean = master is not None and rec.pid == master.pid and rec.state == DomainState.NOT_RUNNING
    if not clean and domain_processes(layout.dir, record):
        kill_all(layout.dir, record)
    rec = read_record(layout.state_file)
    if rec.state != DomainState.NOT_RUNNING and layout.exists():
        write_state(layout.state_file, "not running", detail=rec.detail)


def _alive(proc: psutil.Process) -> bool:
    import psutil

    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def stop_domain(
    name: str,
    domaindir: str | Path | None = None,
    *,
    force: bool = False,
    wait_timeout: float = DEFAULT_WAIT_TIMEOUT,
    registry: NodeRegistry | None = None,
) -> None:
    """Stop domain ``name`` gracefully (``otxadmin stop-domain``).

    The master gets SIGTERM and stops the app server. If the domain is not gone after
    ``wait_timeout`` seconds: with ``force`` every process of the domain is killed (``0`` kills
    at once); without, the stop is abandoned and the domain keeps running. Stopping a stopped
    domain succeeds. ``admin`` first stops the user domains it started, with the same flags
    (the seed's note 12), then itself. With the domain's directory gone (disk unmounted under
    it), its processes are still found by their tag and stopped the same way.

    Raises:
        DomainError: no such domain, or it did not stop in time without ``force``.
    """
    reg = _registry(registry)
    if name == ADMIN_DOMAIN:
        _stop_admin(reg, force=force, wait_timeout=wait_timeout)
        return
    layout = _layout_even_if_gone(reg, name, domaindir)
    _stop_layout(layout, f"domain {name}", force=force, wait_timeout=wait_timeout)


def kill_domain_layout(layout: DomainLayout) -> list[int]:
    write_desired(layout, "stopped")  # before any signal: the admin domain must not restart it
    record = read_record(layout.state_file)
    killed = kill_all(layout.dir, record)
    if layout.exists():  # NB: never recreate a domain directory on an unmounted mount point
        write_state(layout.state_file, "not running", detail="killed" if killed else record.detail)
    return killed


def kill_domain(
    name: str, domaindir: str | Path | None = None, *, registry: NodeRegistry | None = None
) -> list[int]:
    """Kill every process of domain ``name`` at once, no graceful stop (fencing).

    Returns:
        The pids killed (empty when nothing ran).

    Works with the domain's directory gone (the disk already unmounted): its processes are
    found by their tag, which names the directory, not by reading it.

    Raises:
        DomainError: no such domain, or a process of it survived.
    """
    return kill_domain_layout(_layout_even_if_gone(_registry(registry), name, domaindir))


def _tag_of(proc: psutil.Process) -> str:
    import psutil

    try:
        return str(proc.environ().get(ENV_TAG, ""))
    except psutil.Error:
        return ""


def kill_domains_under(path: str | Path) -> list[int]:
    """Kill every process of every domain whose directory is under ``path``, at once (fencing).

    For the disk resource's forced stop and for node fencing: ``kill_domains_under("/data1")``
    kills whatever domains run from that switchover disk, started by the admin domain, a seed
    script or by hand, without reading anything from the disk. The admin domain itself lives
    in the node registry and is not touched.

    Returns:
        The pids killed.

    Raises:
        DomainError: some process survived.
    """
    root = Path(path).absolute()
    killed: list[int] = []
    procs = processes_tagged_under(root)
    for tag in {_tag_of(p) for p in procs} - {""}:
        write_desired(DomainLayout(Path(tag)), "stopped")  # never restarted by the admin domain
    for attempt in range(5):
        if attempt:
            procs = processes_tagged_under(root)
        if not procs:
            return killed
        killed.extend(kill_procs(procs))
    left = processes_tagged_under(root)
    if left:
        raise DomainError(f"could not kill processes {[p.pid for p in left]} of the domains under {root}")
    return killed


# -- health ------------------------------------------------------------------------------------


def check_domain_health(
    name: str,
    domaindir: str | Path | None = None,
    *,
    user: str,
    password: str,
    timeout: float = 5.0,
    registry: NodeRegistry | None = None,
) -> DomainHealth:
    """Whether domain ``name`` serves: its admin API accepts ``user``/``password`` and its app answers.

    This is what the cluster's ``domain`` monitor asks (the seed's WebOTX monitor resource).
    Never raises for an unhealthy domain: look at ``.ok`` and ``.detail``.

    Raises:
        DomainError: no such domain.
    """
    import httpx

    layout = _registry(registry).locate(name, domaindir)
    state = _state(layout)
    if state is DomainState.NOT_RUNNING:
        return DomainHealth(state, False, False, f"domain {name} is not running")
    if state is DomainState.FAILED:
        detail = read_record(layout.state_file).detail
        return DomainHealth(state, False, False, f"domain {name} failed: {detail}")
    try:
        props = _stored_props(layout)
    except ConfigError as exc:
        return DomainHealth(state, False, False, str(exc).splitlines()[0])
    admin_ok = False
    detail = ""
    try:
        r = httpx.get(
            f"http://{url_host(props.admin_probe_host)}:{props.admin_port}/status",
            auth=(user, password),
            timeout=timeout,
        )
        admin_ok = r.status_code == 200
        if not admin_ok:
            detail = f"admin API answered {r.status_code}"
    except httpx.HTTPError as exc:
        detail = f"admin API on port {props.admin_port} unreachable: {exc.__class__.__name__}"
    app_ok = _app_answers(props, timeout=timeout)
    if not app_ok and not detail:
        detail = f"application on port {props.http_port or props.https_port} does not answer"
    return DomainHealth(state, admin_ok, app_ok, detail)


# -- deploy / setup / autostart ----------------------------------------------------------------


def deploy_app(
    name: str,
    import_string: str,
    domaindir: str | Path | None = None,
    *,
    path: str | Path | None = None,
    registry: NodeRegistry | None = None,
) -> bool:
    """Deploy an ASGI or WSGI application to domain ``name`` (served from its next start).

    Args:
        name: the domain.
        import_string: ``module:attribute`` (``domain.app``).
        domaindir: its domains root.
        path: a directory with the application's code, copied into the domain's ``apps/`` (so a
            standby node that mounts the disk has it too) and put on the import path.
        registry: the node registry.

    Returns:
        Whether the domain is running (then restart it to serve the new app).

    Raises:
        DomainError: no such domain, a bad import string, or the copy failed.
    """
    layout = _registry(registry).locate(name, domaindir)
    if ":" not in import_string or not set(import_string) <= _IMPORT_CHARS:
        raise DomainError(f"bad application {import_string!r}: expected an import string 'module:attribute'")
    text = layout.properties.read_text(encoding="latin-1")
    text = set_key(text, KEY_APP, import_string)
    if path is not None:
        src = Path(path)
        if not src.is_dir():
            raise DomainError(f"application directory {src} does not exist")
        dest = layout.apps / src.absolute().name
        try:
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        except OSError as exc:
            raise DomainError(f"cannot copy {src} into {layout.apps}: {exc}") from exc
        text = set_key(text, KEY_APP_PATH, f"apps/{dest.name}")
    import javaproperties

    parse_properties(dict(javaproperties.loads(text)), source=str(layout.properties), name=name)
    layout.properties.write_text(text, encoding="latin-1")
    props = _stored_props(layout)
    if props.run_user is not None and os.geteuid() == 0:
        _chown_tree(layout.dir, pwd.getpwnam(props.run_user))
    return _state(layout) is not DomainState.NOT_RUNNING


def set_autostart(
    name: str, enabled: bool, domaindir: str | Path | None = None, *, registry: NodeRegistry | None = None
) -> None:
    """Turn the admin domain's autostart of domain ``name`` on or off (off for cluster-owned domains)."""
    layout = _registry(registry).locate(name, domaindir)
    if name == ADMIN_DOMAIN:
        raise DomainError("autostart applies to user domains, not to the admin domain")
    settings = layout.read_settings()
    settings["autostart"] = enabled
    layout.write_settings(settings)


def is_autostart(layout: DomainLayout) -> bool:
    return bool(layout.read_settings().get("autostart", True))


def setup_domains_root(
    root: str | Path, *, admin_port: int | None = None, registry: NodeRegistry | None = None
) -> list[str]:
    """Register a domains root created on another node (the seed's ``setup.env`` step on N2).

    Returns:
        The domains found in it, now registered on this node.

    Raises:
        DomainError: the root does not exist.
        ConfigError: a domain in it uses a port another domain of this node uses.
    """
    reg = _registry(registry)
    rootp = Path(root).absolute()
    if not rootp.is_dir():
        raise DomainError(f"domains root {rootp} does not exist (is the switchover disk mounted?)")
    if admin_port is not None:
        with reg.edit() as data:
            data["admin"]["port"] = admin_port
    found = reg.domains(rootp)
    others = [
        o for o in _other_domains_ports(reg) if o[0] not in {lay.name for lay in found} or o[0] == "admin"
    ]
    errors: list[tuple[str, str]] = []
    for layout in found:
        ports = dict(_stored_props(layout).ports)
        errors.extend(check_port_conflicts(layout.name, ports, others))
        others.append((layout.name, ports))
    if errors:
        raise ConfigError(errors)
    reg.add_root(rootp)
    for layout in found:
        reg.register(layout.name, rootp)
    return [lay.name for lay in found]


def remove_domains_root(root: str | Path, *, registry: NodeRegistry | None = None) -> list[str]:
    """Undo :func:`setup_domains_root` (``domain setup --remove``): forget a domains root.

    The root and every domain registered in it leave this node's registry; nothing on the root
    itself is touched (it may be another node's disk, not mounted here). The admin domain's port
    stays as it is.

    Returns:
        The domains forgotten.

    Raises:
        DomainError: the root is not registered on this node, or a domain of it runs here.
    """
    reg = _registry(registry)
    rootp = Path(root).absolute()
    data = reg.load()
    names = sorted(n for n, r in data["domains"].items() if Path(r) == rootp)
    if str(rootp) not in data["roots"] and not names:
        raise DomainError(f"{rootp} is not a domains root registered on this node")
    if rootp == reg.path:
        raise DomainError(f"{rootp} is this node's registry directory, not a root set up from another node")
    running = [n for n in names if domain_state(n, rootp, registry=reg) is not DomainState.NOT_RUNNING]
    running = [n for n in running if domain_state(n, rootp, registry=reg) is not DomainState.FAILED]
    if running:
        raise DomainError(f"domains {', '.join(running)} of {rootp} run on this node; stop them first")
    with reg.edit() as d:
        d["roots"] = [r for r in d["roots"] if Path(r) != rootp]
        for n in names:
            if Path(d["domains"].get(n, "")) == rootp:
                del d["domains"][n]
    return names


# -- the admin domain --------------------------------------------------------------------------


def _start_admin(reg: NodeRegistry, *, adminonly: bool, wait: float) -> DomainState:
    layout = reg.admin_layout
    layout.make()
    with _domain_lock(layout):
        _start_admin_locked(reg, layout, adminonly=adminonly, wait=wait)
    detail = read_record(layout.state_file).detail
    if detail.startswith("autostart failed"):
        raise DomainError(f"the admin domain started, but {detail}")
    return DomainState.RUNNING


def _start_admin_locked(reg: NodeRegistry, layout: DomainLayout, *, adminonly: bool, wait: float) -> None:
    current = _check_startable(layout, ADMIN_DOMAIN)
    if current is not None:
        if current is DomainState.STOPPING:
            raise DomainError("the admin domain is stopping; wait for it or stop it with --force")
        if current is DomainState.STARTING:
            _wait_running(layout, wait)
        return
    port = reg.admin_port()
    host = reg.admin_bind_address()
    fds = {"admin": bind_listener(port, "admin domain --port", host=host).detach()}
    logs_before = _log_sizes(layout)
    try:
        argv = [sys.executable, "-m", "kagemusha.domains._supervisor", str(reg.path)]
        if adminonly:
            argv.append("--adminonly")
        proc = _spawn(argv, layout, fds, env_extra={}, pw=None)
    finally:
        os.close(fds["admin"])
    _wait_started(
        layout,
        proc,
        "the admin domain",
        wait,
        lambda: _port_answers(port, host=probe_host(host)),
        logs_before,
    )


def admin_started(reg: NodeRegistry) -> list[tuple[str, str]]:
    """``(name, domains root)`` of the user domains the admin domain started."""
    data = read_json(reg.admin_layout.state / "started.json")
    if not isinstance(data, list):
        return []
    return [(str(d[0]), str(d[1])) for d in data if isinstance(d, list) and len(d) == 2]


def record_admin_started(reg: NodeRegistry, started: list[tuple[str, str]]) -> None:
    write_json_atomic(reg.admin_layout.state / "started.json", [list(s) for s in started])


def _stop_admin(reg: NodeRegistry, *, force: bool, wait_timeout: float) -> None:
    layout = reg.admin_layout
    failures: list[str] = []
    for name, root in admin_started(reg):
        try:
            stop_domain(name, root, force=force, wait_timeout=wait_timeout, registry=reg)
        except DomainError as exc:
            failures.append(str(exc))
    if failures:
        raise DomainError("; ".join(failures) + "; the admin domain keeps running")
    record_admin_started(reg, [])
    _stop_layout(layout, "the admin domain", force=force, wait_timeout=wait_timeout)

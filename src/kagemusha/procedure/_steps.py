"""The steps of ``build`` on one node, each with ``check`` (already done?), ``do`` and ``undo``.

A step records in the manifest what it is about to create (or has just created) before it
counts as done, so ``undo`` (run by ``uninstall``, in reverse order) removes exactly what its
``do`` made on this node, and a ``do`` interrupted half-way is finished by the next ``build``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kagemusha._aio import within
from kagemusha.errors import KagemushaError
from kagemusha.procedure._manifest import Manifest
from kagemusha.procedure._plan import GroupPlan, Plan, Topology

__all__ = ["BuildContext", "Step", "StepFailed", "build_steps"]


class StepFailed(KagemushaError):
    """A step could not be carried out; the message says why and what to do."""


@dataclass
class BuildContext:
    """What every step needs: the plan, this node, where things go, and the manifest."""

    plan: Plan
    node: str
    home: Path  # /var/lib/kagemusha (state dir: registry, manifest)
    etc: Path  # /etc/kagemusha (installed config and scripts)
    manifest: Manifest
    service: str = "none"  # "systemd" or "none"
    unit_dir: Path = Path("/etc/systemd/system")
    unit_name: str = "kagemusha"
    mkfs: bool = False
    env: dict[str, str] = field(default_factory=dict)

    @property
    def is_first(self) -> bool:
        return self.node == self.plan.first_node

    @property
    def registry_dir(self) -> Path:
        reg = os.environ.get("KAGEMUSHA_DOMAIN_REGISTRY")
        return Path(reg) if reg else self.home / "domains"

    @property
    def config_file(self) -> Path:
        return self.etc / "cluster.toml"

    @property
    def agent_log(self) -> Path:
        return self.home / "procedure" / f"{self.plan.facts.cluster}-agent.log"

    def registry(self) -> Any:
        from kagemusha.domains import NodeRegistry

        return NodeRegistry(self.registry_dir)

    def password(self) -> str:
        try:
            return Path(self.plan.facts.admin_password_file).read_text().strip()
        except OSError as exc:
            raise StepFailed(f"cannot read the admin password file {self.plan.facts.admin_password_file}: "
                             f"{exc.strerror}") from None

    def agent_argv(self) -> list[str]:
        return [sys.executable, "-m", "kagemusha", "agent", "--config", str(self.config_file), "--node", self.node]

    def node_state_dir(self) -> Path:
        return Path(self.plan.facts.state_dir) / self.plan.facts.cluster / self.node

    # -- the store

    def store_missing(self) -> bool:
        """A local store whose file does not exist yet: nothing is stored (and asking would create it)."""
        store = self.plan.facts.store
        return store.startswith("local:") and not Path(store.removeprefix("local:")).exists()

    def store_call(self, fn: Callable[[Any], Any], timeout: float = 10.0) -> Any:
        """Run ``await fn(store)`` on the plan's store (opened from the plan's cluster.toml)."""
        from kagemusha.config import load_config
        from kagemusha.store import open_cluster_store

        cfg = load_config(self.plan.cluster_toml)

        async def go() -> Any:
            store = open_cluster_store(cfg.cluster, base_dir=str(self.plan.dir),
                                       timeout=max(cfg.cluster.store_timeout, 2.0))
            async with store:
                return await within(fn(store), timeout)

        return asyncio.run(go())


def _mkdirs(ctx: BuildContext, step: str, path: Path, *, tree: bool = False, mode: int = 0o755) -> None:
    """Create ``path`` and its missing parents, recording each one created (before creating it)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        ctx.manifest.record(step, "dir", path=str(d), tree=tree and d == path)
        d.mkdir(mode=mode, exist_ok=True)


def _sha(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _undo_entries(ctx: BuildContext, step: str) -> list[str]:
    """Remove, newest first, the files and directories ``step`` recorded. Returns what was removed."""
    done = []
    for e in reversed(ctx.manifest.entries_of(step)):
        p = Path(e.get("path", ""))
        if e["kind"] == "file":
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                done.append(str(p))
        elif e["kind"] == "dir":
            if e.get("tree"):
                shutil.rmtree(p, ignore_errors=True)
            else:
                if p.is_mount():
                    raise StepFailed(f"{p} is still mounted; unmount it and run uninstall again")
                try:
                    p.rmdir()
                except FileNotFoundError:
                    pass
                except OSError:
                    # NB: not empty (it holds what build did not write) or busy (a mount point in
                    # another mount namespace): left in place; uninstall removes only what it made.
                    pass
            if not p.exists():
                done.append(str(p))
        else:
            continue
        ctx.manifest.forget(e)
    return done


class Step:
    """One step of the build. ``check`` says whether it is done already (and how)."""

    id: str = ""
    title: str = ""

    def check(self, ctx: BuildContext) -> str | None:
        """A short phrase when the step is done already; None when ``do`` must run."""
        raise NotImplementedError

    def do(self, ctx: BuildContext) -> str:
        """Carry the step out (idempotent: safe after a partial earlier run); returns the outcome."""
        raise NotImplementedError

    def undo(self, ctx: BuildContext) -> str:
        """Remove what ``do`` made on this node (from the manifest); returns the outcome."""
        gone = _undo_entries(ctx, self.id)
        ctx.manifest.unmark(self.id)
        return f"removed {len(gone)} item(s)" if gone else "nothing to remove"


# -- 1. configuration files -------------------------------------------------------------------


class InstallConfig(Step):
    id = "config-files"
    title = "install cluster.toml and the start/stop scripts"

    def _files(self, ctx: BuildContext) -> list[tuple[Path, Path]]:
        return [(ctx.plan.dir / rel, ctx.etc / rel) for rel in ["cluster.toml", *ctx.plan.scripts()]]

    def check(self, ctx: BuildContext) -> str | None:
        if all(_sha(src) == _sha(dst) for src, dst in self._files(ctx)):
            return f"in {ctx.etc}"
        return None

    def do(self, ctx: BuildContext) -> str:
        written = 0
        for src, dst in self._files(ctx):
            if _sha(src) == _sha(dst):
                continue
            _mkdirs(ctx, self.id, dst.parent)
            ctx.manifest.record(self.id, "file", path=str(dst))
            tmp = dst.with_name(f".{dst.name}.tmp")
            shutil.copyfile(src, tmp)
            tmp.chmod(0o755 if dst.suffix == ".sh" else 0o644)
            os.replace(tmp, dst)
            written += 1
        return f"wrote {written} file(s) into {ctx.etc}"


# -- 2. mount points --------------------------------------------------------------------------


class MountPoints(Step):
    id = "mount-points"
    title = "create the mount points"

    def check(self, ctx: BuildContext) -> str | None:
        if all(Path(g.mount).is_dir() for g in ctx.plan.groups):
            return "present: " + ", ".join(g.mount for g in ctx.plan.groups)
        return None

    def do(self, ctx: BuildContext) -> str:
        made = [g.mount for g in ctx.plan.groups if not Path(g.mount).is_dir()]
        for g in ctx.plan.groups:
            _mkdirs(ctx, self.id, Path(g.mount))
        return "created " + ", ".join(made)


# -- 3. file systems (first node, --mkfs) -----------------------------------------------------


def fs_type(device: str) -> str | None:
    r = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], capture_output=True, text=True,
                       check=False, timeout=30)
    return r.stdout.strip() or None


class FileSystems(Step):
    id = "file-systems"
    title = "file systems on the switchover disks"

    def check(self, ctx: BuildContext) -> str | None:
        types = {g.disk: fs_type(g.disk) for g in ctx.plan.groups}
        if all(t == ctx.plan.facts.fstype for t in types.values()):
            return f"{ctx.plan.facts.fstype} on " + ", ".join(types)
        return None

    def do(self, ctx: BuildContext) -> str:
        made = []
        for g in ctx.plan.groups:
            t = fs_type(g.disk)
            if t == ctx.plan.facts.fstype:
                continue
            if t is not None or not ctx.mkfs:
                raise StepFailed(f"{g.disk} has {t or 'no file system'}, not {ctx.plan.facts.fstype}"
                                 + ("" if t else " (give --mkfs to make one)"))
            r = subprocess.run([f"mkfs.{ctx.plan.facts.fstype}", *(["-q"] if ctx.plan.facts.fstype.startswith("ext")
                                                                  else []), g.disk],
                               capture_output=True, text=True, check=False, timeout=600)
            if r.returncode != 0:
                raise StepFailed(f"mkfs.{ctx.plan.facts.fstype} {g.disk} failed: {r.stderr.strip()[-300:]}")
            made.append(g.disk)
        return "made " + ctx.plan.facts.fstype + " on " + ", ".join(made)

    def undo(self, ctx: BuildContext) -> str:
        ctx.manifest.unmark(self.id)
        return "file systems are left as they are"


# -- 4. domains -------------------------------------------------------------------------------


def is_mounted(mount_point: str) -> bool:
    from kagemusha._os import read_mountinfo

    mp = os.path.normpath(mount_point)
    return any(e.mount_point == mp for e in read_mountinfo())


def mounted_here(g: GroupPlan) -> bool:
    """Whether the group's own disk is what is mounted on its mount point (e.g. left by a killed build)."""
    from kagemusha._os import device_number, read_mountinfo

    dev = device_number(g.disk)
    mp = os.path.normpath(g.mount)
    return dev is not None and any(e.mount_point == mp and (e.major, e.minor) == dev for e in read_mountinfo())


#: Test hook: ``build`` exits (75) inside the domain step with the disk mounted and the domain
#: created, the moment a power cut or Ctrl-C would leave the most behind.
ENV_CRASH_IN_DOMAIN = "KAGEMUSHA_BUILD_CRASH_IN_DOMAIN"


@contextlib.contextmanager
def mounted(g: GroupPlan, fstype: str, *, take_over: bool = False) -> Any:
    """The group's disk mounted on its mount point for the block.

    Left as found afterwards, except that with ``take_over`` (no agent runs on this node) the
    group's disk found mounted already (by a build killed half-way) is unmounted too.
    """
    if is_mounted(g.mount):
        ours = take_over and mounted_here(g)
        try:
            yield
        finally:
            if ours:
                subprocess.run(["umount", g.mount], capture_output=True, check=False, timeout=120)
        return
    made = not Path(g.mount).exists()
    if made:  # e.g. uninstall on the last node after its own mount point was removed: made for the block
        Path(g.mount).mkdir(parents=True)
    r = subprocess.run(["mount", "-t", fstype, g.disk, g.mount], capture_output=True, text=True, check=False,
                       timeout=120)
    if r.returncode != 0:
        if made:
            Path(g.mount).rmdir()
        raise StepFailed(f"cannot mount {g.disk} on {g.mount}: {r.stderr.strip().splitlines()[0]}")
    try:
        yield
    finally:
        subprocess.run(["umount", g.mount], capture_output=True, check=False, timeout=120)
        if made:
            with contextlib.suppress(OSError):
                Path(g.mount).rmdir()


def _admin_snapshot(ctx: BuildContext) -> dict[str, Any]:
    reg = ctx.registry()
    return dict(reg.load()["admin"]) if reg.file.exists() else {}


def _record_registry(ctx: BuildContext, step: str, g: GroupPlan) -> None:
    if not ctx.registry_dir.exists():
        _mkdirs(ctx, step, ctx.registry_dir, tree=True)
    if not ctx.manifest.has(kind="registry", what="admin"):
        ctx.manifest.record(step, "registry", what="admin", before=_admin_snapshot(ctx))
    ctx.manifest.record(step, "registry", what="domain", name=g.domain, root=g.domains_root)


class CreateDomain(Step):
    """First node: the seed's 2.5.2/2.6.2 (domain created on the switchover disk)."""

    def __init__(self, g: GroupPlan) -> None:
        self.g = g
        self.id = f"domain-{g.domain}"
        self.title = f"create {g.domain} on {g.disk} ({g.domains_root})"

    def check(self, ctx: BuildContext) -> str | None:
        reg = ctx.registry()
        if ctx.manifest.is_done(self.id) and reg.load()["domains"].get(self.g.domain) == self.g.domains_root:
            return f"{self.g.domain} in {self.g.domains_root}"
        return None

    def do(self, ctx: BuildContext) -> str:
        from kagemusha.domains import create_domain, load_properties, set_autostart
        from kagemusha.domains._layout import DomainLayout

        g = self.g
        _record_registry(ctx, self.id, g)
        reg = ctx.registry()
        autostart = ctx.plan.facts.topology is Topology.ONE_WAY
        props_file = ctx.plan.properties(g)
        take_over = StartAgent().check(ctx) is None  # no agent of this cluster runs here yet
        with mounted(g, ctx.plan.facts.fstype, take_over=take_over):
            root = Path(g.domains_root)
            layout = DomainLayout(root / g.domain)
            if not root.exists():
                root.mkdir(mode=0o755)  # on the switchover disk: removed with the domain on the last node
            if layout.exists():
                # created by an earlier, interrupted build (or by hand): it must be this plan's domain
                on_disk = load_properties(layout.properties)
                want = load_properties(props_file, name=g.domain)
                if dict(on_disk.ports) != dict(want.ports):
                    raise StepFailed(f"{layout.dir} exists with other ports than {props_file}; "
                                     "delete it or choose another --domain")
                reg.register(g.domain, root)
                outcome = f"{g.domain} found in {root} (from an earlier run), registered"
            else:
                shutil.rmtree(root / f".{g.domain}.creating", ignore_errors=True)
                create_domain(g.domain, props_file, domaindir=root, admin_user=ctx.plan.facts.admin_user,
                                            admin_password=ctx.password(), admin_port=ctx.plan.facts.admin_port,
                                            registry=reg)
                outcome = f"created {g.domain} in {root}"
                if os.environ.get(ENV_CRASH_IN_DOMAIN) == g.domain:
                    os._exit(75)
            set_autostart(g.domain, autostart, root, registry=reg)
        return outcome + f" (autostart {'on' if autostart else 'off'}); {g.disk} unmounted"

    def undo(self, ctx: BuildContext) -> str:
        return _unregister(ctx, self.id)


class RegisterDomain(Step):
    """Other nodes: the seed's setup.env step (the domains root of the switchover disk registered here)."""

    def __init__(self, g: GroupPlan) -> None:
        self.g = g
        self.id = f"register-{g.domain}"
        self.title = f"register {g.domains_root} ({g.domain})"

    def check(self, ctx: BuildContext) -> str | None:
        reg = ctx.registry()
        if ctx.manifest.is_done(self.id) and reg.load()["domains"].get(self.g.domain) == self.g.domains_root:
            return f"{self.g.domain} registered at {self.g.domains_root}"
        return None

    def do(self, ctx: BuildContext) -> str:
        from kagemusha.domains._auth import hash_password

        g = self.g
        _record_registry(ctx, self.id, g)
        reg = ctx.registry()
        current = reg.load()["domains"].get(g.domain)
        if current not in (None, g.domains_root):
            raise StepFailed(f"this node already has a domain {g.domain} in {current}")
        with reg.edit() as data:
            adm = data["admin"]
            if adm.get("port") not in (None, ctx.plan.facts.admin_port):
                raise StepFailed(f"the admin domain of this node listens on port {adm['port']}, "
                                 f"not {ctx.plan.facts.admin_port}")
            adm["port"] = ctx.plan.facts.admin_port
            if not adm.get("password_hash"):
                adm["user"] = ctx.plan.facts.admin_user
                adm["password_hash"] = hash_password(ctx.password())
        reg.register(g.domain, Path(g.domains_root))
        return f"{g.domain} registered at {g.domains_root}"

    def undo(self, ctx: BuildContext) -> str:
        return _unregister(ctx, self.id)


def _unregister(ctx: BuildContext, step: str) -> str:
    reg = ctx.registry()
    gone = []
    for e in list(ctx.manifest.entries_of(step)):
        if e["kind"] != "registry":
            continue
        if reg.file.exists():
            if e["what"] == "domain":
                with reg.edit() as data:
                    data["domains"].pop(e["name"], None)
                    with contextlib.suppress(ValueError):
                        data["roots"].remove(e["root"])
                gone.append(e["name"])
            elif e["what"] == "admin":
                with reg.edit() as data:
                    data["admin"] = dict(e["before"])
        ctx.manifest.forget(e)
    _undo_entries(ctx, step)
    ctx.manifest.unmark(step)
    return f"unregistered {', '.join(gone)}" if gone else "nothing to unregister"


# -- 5. the store -----------------------------------------------------------------------------


class StoreConfig(Step):
    id = "store-config"
    title = "store the configuration (config apply)"

    def _state(self, ctx: BuildContext) -> tuple[str | None, bool]:
        from kagemusha.config._stored import load_text, sha256_text
        from kagemusha.control import read_stored_config

        if ctx.store_missing():
            return None, False
        _, text = load_text(ctx.plan.cluster_toml)
        want = sha256_text(text)

        async def go(store: Any) -> tuple[str | None, bool]:
            rec = await read_stored_config(store, ctx.plan.facts.cluster)
            from kagemusha.protocol import ClusterRecords

            marked = await ClusterRecords(store, ctx.plan.facts.cluster, by="kagemusha build").is_built(ctx.node)
            return (rec.sha256 if rec else None), marked

        sha, marked = ctx.store_call(go)
        return ("same" if sha == want else sha), marked

    def check(self, ctx: BuildContext) -> str | None:
        sha, marked = self._state(ctx)
        return "this plan's cluster.toml is the applied config" if sha == "same" and marked else None

    def do(self, ctx: BuildContext) -> str:
        from kagemusha.control import apply_config

        cluster, node = ctx.plan.facts.cluster, ctx.node
        sha, _ = self._state(ctx)
        if sha not in ("same", None):
            raise StepFailed(f"the store holds another config of cluster {cluster}; "
                             "uninstall the old cluster first or choose another --cluster in init")
        from kagemusha.protocol import Keys

        ctx.manifest.record(self.id, "store-key", key=Keys(cluster).built(node))

        async def go(store: Any) -> str:
            from kagemusha.protocol import ClusterRecords

            outcome = "already applied"
            if sha is None:
                if not ctx.is_first:
                    raise StepFailed(f"no config of cluster {cluster} in the store: build {ctx.plan.first_node} first")
                rec, _ = await apply_config(store, str(ctx.config_file), by=f"kagemusha build on {node}")
                outcome = f"config version {rec.version} applied"
            await ClusterRecords(store, cluster, by=f"kagemusha build on {node}").mark_built(node, plan=ctx.plan.sha256)
            return outcome

        return str(ctx.store_call(go))

    def undo(self, ctx: BuildContext) -> str:
        for e in list(ctx.manifest.entries_of(self.id)):
            key = str(e["key"])

            async def delete(store: Any, key: str = key) -> Any:
                return await store.delete(key)

            with contextlib.suppress(Exception):
                ctx.store_call(delete)
            ctx.manifest.forget(e)
        ctx.manifest.unmark(self.id)
        return "this node's mark removed from the store"


# -- 6. the service ---------------------------------------------------------------------------


def _systemctl(*args: str) -> subprocess.CompletedProcess[str]:
    exe = os.environ.get("KAGEMUSHA_SYSTEMCTL", "systemctl")
    return subprocess.run([exe, *args], capture_output=True, text=True, check=False, timeout=120)


class InstallService(Step):
    id = "service"
    title = "install the service"

    def _unit(self, ctx: BuildContext) -> Path:
        return ctx.unit_dir / f"{ctx.unit_name}.service"

    def _text(self, ctx: BuildContext) -> str:
        from kagemusha._unit import render_unit
        from kagemusha.config import load_config

        text = render_unit(load_config(ctx.config_file if ctx.config_file.exists() else ctx.plan.cluster_toml),
                           node=ctx.node, config_file=str(ctx.config_file))
        extra = [f"Environment={k}={v}" for k, v in sorted(ctx.env.items())]
        if extra:
            text = text.replace("Environment=PYTHONUNBUFFERED=1", "\n".join([*extra, "Environment=PYTHONUNBUFFERED=1"]))
        return text

    def check(self, ctx: BuildContext) -> str | None:
        if ctx.service == "none":
            return "none (--service none): run " + shlex.join(ctx.agent_argv())
        unit = self._unit(ctx)
        try:
            same = unit.read_text() == self._text(ctx)
        except OSError:
            return None
        if same and _systemctl("is-enabled", "--quiet", ctx.unit_name).returncode == 0:
            return f"{unit} enabled"
        return None

    def do(self, ctx: BuildContext) -> str:
        unit = self._unit(ctx)
        _mkdirs(ctx, self.id, unit.parent)
        ctx.manifest.record(self.id, "unit", path=str(unit), name=ctx.unit_name)
        tmp = unit.with_name(f".{unit.name}.tmp")
        tmp.write_text(self._text(ctx))
        tmp.chmod(0o644)
        os.replace(tmp, unit)
        for args in (("daemon-reload",), ("enable", ctx.unit_name)):
            r = _systemctl(*args)
            if r.returncode != 0:
                raise StepFailed(f"systemctl {' '.join(args)} failed: {r.stderr.strip()}")
        return f"wrote {unit}, enabled"

    def undo(self, ctx: BuildContext) -> str:
        for e in list(ctx.manifest.entries_of(self.id)):
            if e["kind"] == "unit":
                _systemctl("disable", "--now", e["name"])
                with contextlib.suppress(FileNotFoundError):
                    Path(e["path"]).unlink()
                _systemctl("daemon-reload")
                ctx.manifest.forget(e)
        _undo_entries(ctx, self.id)
        ctx.manifest.unmark(self.id)
        return "service removed" if ctx.service == "systemd" else "no service was installed"


# -- 7. start ---------------------------------------------------------------------------------


def _proc_alive(entry: dict[str, Any]) -> bool:
    import psutil

    try:
        p = psutil.Process(int(entry["pid"]))
        return bool(abs(p.create_time() - float(entry["create_time"])) < 0.5 and p.status() != psutil.STATUS_ZOMBIE)
    except (psutil.Error, KeyError, ValueError):
        return False


def _is_member(ctx: BuildContext) -> bool:
    from kagemusha.config import load_config
    from kagemusha.control import ClusterControl

    cfg = load_config(ctx.config_file)

    async def go() -> bool:
        async with ClusterControl.open(cfg) as ctl:
            st = await ctl.status()
        return any(bool(n["name"] == ctx.node and n["state"] == "up") for n in st["nodes"])

    try:
        return bool(asyncio.run(within(go(), 10)))
    except Exception:  # noqa: BLE001 - "not yet" while polling
        return False


class StartAgent(Step):
    id = "start"
    title = "start the agent"

    def _running(self, ctx: BuildContext) -> dict[str, Any] | None:
        for e in ctx.manifest.entries_of(self.id):
            if e["kind"] == "process" and _proc_alive(e):
                return e
        return None

    def check(self, ctx: BuildContext) -> str | None:
        if ctx.service == "systemd":
            if _systemctl("is-active", "--quiet", ctx.unit_name).returncode == 0:
                return f"{ctx.unit_name}.service active"
            return None
        e = self._running(ctx)
        return f"agent running (pid {e['pid']})" if e else None

    def do(self, ctx: BuildContext) -> str:
        _mkdirs(ctx, self.id, ctx.node_state_dir(), tree=True)
        if ctx.service == "systemd":
            r = _systemctl("start", ctx.unit_name)
            if r.returncode != 0:
                raise StepFailed(f"systemctl start {ctx.unit_name} failed: {r.stderr.strip()}")
            what = f"{ctx.unit_name}.service started"
        else:
            import psutil

            for e in ctx.manifest.entries_of(self.id):
                if e["kind"] == "process" and not _proc_alive(e):
                    ctx.manifest.forget(e)
            _mkdirs(ctx, self.id, ctx.agent_log.parent)
            ctx.manifest.record(self.id, "file", path=str(ctx.agent_log))
            log = open(ctx.agent_log, "ab")  # noqa: SIM115 - handed to the child
            try:
                proc = subprocess.Popen(ctx.agent_argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env={**os.environ, **ctx.env}, close_fds=True)
            finally:
                log.close()
            ctx.manifest.record(self.id, "process", pid=proc.pid, create_time=psutil.Process(proc.pid).create_time())
            what = f"agent started (pid {proc.pid}, log {ctx.agent_log})"
        deadline = time.monotonic() + 30
        while not _is_member(ctx):
            if time.monotonic() > deadline:
                raise StepFailed(f"the agent did not join the cluster within 30 s (see {ctx.agent_log})")
            time.sleep(0.2)
        return what + "; joined the cluster"

    def undo(self, ctx: BuildContext) -> str:
        stopped: list[str] = []
        notes: list[str] = []
        for e in list(ctx.manifest.entries_of(self.id)):
            if e["kind"] != "process":
                continue
            if _proc_alive(e):
                notes += _stop_agent(ctx, e)
                stopped.append(str(e["pid"]))
            ctx.manifest.forget(e)
        if ctx.service == "systemd":
            _systemctl("stop", ctx.unit_name)
        _undo_entries(ctx, self.id)
        ctx.manifest.unmark(self.id)
        what = f"agent stopped (pid {', '.join(stopped)})" if stopped else "agent stopped"
        return "; ".join([what, *notes])


#: How long a leaving agent gets once ``uninstall`` has released its groups (it then only gives up
#: its lease), and again after a second SIGTERM (a proven fence of whatever it still runs).
LEAVE_GRACE = 30.0


def _stop_agent(ctx: BuildContext, entry: dict[str, Any]) -> list[str]:
    """SIGTERM the supervisor (it forwards to the agent) and wait; escalate without leaving anything.

    NB: the agent runs in a session of its own (the supervisor's ``start_new_session``), so a kill
    of the supervisor's process group would leave the agent running: the agent is ended by its PID.
    Escalation: a second SIGTERM makes the agent fence at once (proven, like every fence); only when
    even that does not end it are both killed, and the step fails naming the log.
    """
    import psutil

    from kagemusha.config import load_config

    pid = int(entry["pid"])
    try:
        sup = psutil.Process(pid)
        procs = [sup, *sup.children()]  # the supervisor and its agent
    except psutil.Error:
        return []
    try:
        cfg = load_config(ctx.config_file if ctx.config_file.exists() else ctx.plan.cluster_toml, check_drivers=False)
        grace = LEAVE_GRACE + cfg.cluster.heartbeat_timeout
    except Exception:  # noqa: BLE001 - the config is reported by its own step; wait generously
        grace = LEAVE_GRACE + 10

    def gone(timeout: float) -> bool:
        _, alive = psutil.wait_procs(procs, timeout=timeout)
        return not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]

    t0 = time.monotonic()
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if gone(grace):
        return []
    tail = _log_tail(ctx.agent_log)
    notes = [f"the agent did not leave within {grace:g} s: sent a second SIGTERM (it fences at once)"]
    print(f"kagemusha uninstall: {notes[0]}; the end of {ctx.agent_log}:\n{tail}", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if gone(grace):
        return [*notes, f"stopped after {time.monotonic() - t0:.1f} s"]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.kill()
    gone(5.0)
    raise StepFailed(f"the agent (pid {', '.join(str(p.pid) for p in procs)}) did not stop after two SIGTERMs; "
                     f"killed it: check this node for leftovers of its groups (log: {ctx.agent_log})")


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 16384))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(cannot read it: {exc.strerror})"


def build_steps(ctx: BuildContext) -> list[Step]:
    """This node's steps, in order."""
    steps: list[Step] = [InstallConfig(), MountPoints()]
    if ctx.is_first:
        steps.append(FileSystems())
        steps += [CreateDomain(g) for g in ctx.plan.groups]
    else:
        steps += [RegisterDomain(g) for g in ctx.plan.groups]
    steps += [StoreConfig(), InstallService(), StartAgent()]
    return steps


# -- preflight --------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def preflight(ctx: BuildContext, steps: list[Step], done: dict[str, str | None]) -> list[str]:
    """One line per failed check; only checks that matter for the steps still to do.

    NB: a node whose agent runs already has its ports in use and the cluster's VIPs answering;
    those checks apply only while the ``start`` step is not done.
    """
    from kagemusha._os import arp_probe, link_state

    f = ctx.plan.facts
    problems: list[str] = []
    if ctx.node not in f.node_names:
        return [f"--node: {ctx.node} is not a node of the plan (nodes: {', '.join(f.node_names)})"]
    todo = {s.id for s in steps if done.get(s.id) is None}
    try:
        st = os.stat(f.admin_password_file)
        if st.st_mode & 0o077:
            problems.append(f"admin password file {f.admin_password_file} is readable by others (chmod 600 it)")
    except OSError as exc:
        problems.append(f"admin password file {f.admin_password_file}: {exc.strerror} (copy it here, mode 0600)")
    if "config-files" in todo:
        for rel in ["cluster.toml", *ctx.plan.scripts()]:
            dst = ctx.etc / rel
            if dst.exists() and not ctx.manifest.has(kind="file", path=str(dst)) and _sha(dst) != _sha(ctx.plan.dir / rel):
                problems.append(f"{dst} exists and is not this plan's (move it away first)")
    kag = f.kagemusha.split()[0]
    if shutil.which(kag) is None:
        problems.append(f"the scripts call {kag}, which is not on this node")
    iface_ok = True
    try:
        asyncio.run(link_state(f.interface))
    except Exception:  # noqa: BLE001 - NoSuchInterface or netlink error: the same line
        iface_ok = False
        problems.append(f"interface {f.interface} is not present on this node")
    started = "start" not in todo
    if not started and iface_ok:
        for g in ctx.plan.groups:
            try:
                from ipaddress import IPv4Interface

                mac = asyncio.run(arp_probe(f.interface, IPv4Interface(g.vip).ip, count=2, timeout=0.4))
            except Exception:  # noqa: BLE001 - reported by the interface check
                mac = None
            if mac is not None and not _held_by_cluster(ctx, g):
                problems.append(f"virtual IP {g.vip_ip} ({g.name}) answers ARP from {mac}: another host uses it")
    if not started:
        ports = {f.admin_port: "the admin domain"}
        for g in ctx.plan.groups:
            for key, port in g.ports.items():
                ports[port] = f"{g.domain} {key}"
        for port, what in sorted(ports.items()):
            if not _port_free(port):
                problems.append(f"port {port} ({what}) is in use on this node")
    for g in ctx.plan.groups:
        if not Path(g.disk).exists():
            problems.append(f"disk {g.disk} ({g.name}) is not present on this node")
        elif ctx.is_first and f"domain-{g.domain}" in todo:
            t = fs_type(g.disk)
            if t != f.fstype and not (t is None and ctx.mkfs):
                problems.append(f"disk {g.disk} has {t or 'no file system'}, not {f.fstype}"
                                + (" (give --mkfs to make one)" if t is None else ""))
        need_free = (f"domain-{g.domain}" in todo) or ("mount-points" in todo)
        if need_free and not started and is_mounted(g.mount) and not (ctx.is_first and mounted_here(g)):
            problems.append(f"mount point {g.mount} is in use (something is mounted on it)")
        elif need_free and Path(g.mount).is_dir() and not is_mounted(g.mount) and any(Path(g.mount).iterdir()):
            problems.append(f"mount point {g.mount} is not empty")
    try:
        mine = done.get("store-config") is not None
        if not mine:
            problems.extend(_store_problems(ctx))
    except Exception as exc:  # noqa: BLE001 - any failure to ask is "unreachable"
        problems.append(f"store {f.store} is not reachable: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
    return problems


def _store_problems(ctx: BuildContext) -> list[str]:
    from kagemusha.config._stored import load_text, sha256_text
    from kagemusha.control import read_stored_config

    if ctx.store_missing():
        return [] if ctx.is_first else [(f"cluster {ctx.plan.facts.cluster} has no config in the store yet: "
                                        f"run build on {ctx.plan.first_node} first")]
    _, text = load_text(ctx.plan.cluster_toml)

    async def go(store: Any) -> Any:
        return await read_stored_config(store, ctx.plan.facts.cluster)

    rec = ctx.store_call(go)
    if rec is None:
        if not ctx.is_first:
            return [f"cluster {ctx.plan.facts.cluster} has no config in the store yet: run build on "
                    + f"{ctx.plan.first_node} first"]
        return []
    if rec.sha256 != sha256_text(text):
        return [f"the store holds another config of cluster {ctx.plan.facts.cluster} (version {rec.version})"]
    return []


def _held_by_cluster(ctx: BuildContext, g: GroupPlan) -> bool:
    """Whether this plan's cluster runs ``g`` (so its VIP answering is expected)."""
    from kagemusha.config import load_config
    from kagemusha.control import ClusterControl

    if ctx.store_missing():
        return False

    async def go() -> bool:
        async with ClusterControl.open(load_config(ctx.plan.cluster_toml)) as ctl:
            st = await ctl.status()
        # starting or online somewhere: the cluster took the group, so its VIP may answer
        return any(x["name"] == g.name and x["node"] is not None for x in st["groups"])

    try:
        return bool(asyncio.run(within(go(), 10)))
    except Exception:  # noqa: BLE001 - cannot tell: the ARP answer is reported as foreign
        return False

"""The plan: the site's facts turned into the seed's cluster, as files an operator can review.

Pure: :func:`parse_facts` checks the flags of ``kagemusha init``, :func:`render_plan` returns
the plan directory's files as text (``cluster.toml``, one properties file per domain, the
seed's start/stop scripts per group, ``plan.json`` for ``build`` and ``PLAN.md`` for people).
Nothing here touches the machine; writing the files is :func:`write_plan`'s job.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

import tomli_w

from kagemusha.errors import ConfigError
from kagemusha.procedure._seed import OTXADMIN, SCRIPTS

__all__ = [
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_APP",
    "Facts",
    "GroupPlan",
    "Plan",
    "Topology",
    "load_plan",
    "parse_facts",
    "render_plan",
    "write_plan",
]

DEFAULT_APP = "kagemusha.demo_app:app"
DEFAULT_ADMIN_PORT = 6202
DEFAULT_NODE_PORT = 7700
PLAN_JSON = "plan.json"
PLAN_FORMAT = 1

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_DOMAIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_APP_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")

# The seed's 2.2 port keys: (key, domain1's port, domain2's port). A third domain and later get
# domain2's ports plus 100 per domain; every port is checked unique across the plan anyway.
SEED_PORTS: tuple[tuple[str, int, int], ...] = (
    ("domain.admin.port", 6212, 16212),
    ("domain.admin.jmxmp.port", 6712, 16712),
    ("domain.http.port", 80, 8081),
    ("domain.https.port", 443, 8443),
    ("domain.http.admin.port", 5858, 15858),
    ("domain.http.adminrest.port", 20101, 30101),
    ("domain.http.ajp.port", 8099, 18099),
    ("domain.jms.port", 9700, 19700),
    ("domain.jms.user.port", 9701, 19701),
    ("domain.jms.admin.port", 9702, 19702),
    ("domain.java.debugger.port", 9010, 19010),
    ("domain.embedded-iiop-service.port", 7780, 17780),
    ("server.corba-service.oadj.Port", 9826, 19826),
    ("server.corba-service.namesv.NameServicePort", 2809, 12809),
    ("server.corba-service.oad.OadPort", 9825, 19825),
    ("tpsystem.IIOPListener.listenerPortNumber", 5151, 15151),
    ("tpsystem.AJPListener.listenerPortNumber", 20102, 30102),
)


class Topology(StrEnum):
    ONE_WAY = "one-way"
    TWO_WAY = "two-way"

    @property
    def seed_dir(self) -> str:
        return "oneway" if self is Topology.ONE_WAY else "twoway"

    @property
    def groups(self) -> int:
        return 1 if self is Topology.ONE_WAY else 2


@dataclass(frozen=True)
class Facts:
    """The site's facts, as ``kagemusha init`` takes them (validated by :func:`parse_facts`)."""

    topology: Topology
    cluster: str
    nodes: tuple[tuple[str, str], ...]  # (name, "host:port" of its API)
    vips: tuple[str, ...]  # "198.18.0.100/24"
    interface: str
    disks: tuple[str, ...]
    mounts: tuple[str, ...]
    fstype: str
    store: str
    domains: tuple[str, ...]
    apps: tuple[str, ...]
    admin_password_file: str
    admin_user: str = "admin"
    admin_port: int = DEFAULT_ADMIN_PORT
    state_dir: str = "/var/lib/kagemusha"
    fsck: str = "every 10"
    kagemusha: str = "kagemusha"

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.nodes)


@dataclass(frozen=True)
class GroupPlan:
    """One failover group of the plan (the seed's ``webotx1``/``webotx2``)."""

    name: str
    index: int  # 1, 2
    nodes: tuple[str, ...]  # home first
    vip: str
    disk: str
    mount: str
    domain: str
    app: str
    ports: Mapping[str, int] = field(default_factory=dict)

    @property
    def home(self) -> str:
        return self.nodes[0]

    @property
    def domains_root(self) -> str:
        return f"{self.mount.rstrip('/')}/domains"

    @property
    def vip_ip(self) -> str:
        return self.vip.split("/")[0]

    @property
    def http_port(self) -> int:
        return self.ports["domain.http.port"]


@dataclass(frozen=True)
class Plan:
    """A plan directory read back (``build`` and ``uninstall`` take it)."""

    dir: Path
    facts: Facts
    groups: tuple[GroupPlan, ...]
    files: Mapping[str, str]  # relative path -> sha256 of the text init wrote

    @property
    def first_node(self) -> str:
        """The node that creates the domains on the switchover disks (the seed's N1)."""
        return self.facts.nodes[0][0]

    @property
    def cluster_toml(self) -> Path:
        return self.dir / "cluster.toml"

    def properties(self, g: GroupPlan) -> Path:
        return self.dir / f"{g.domain}.properties"

    def scripts(self) -> list[str]:
        return sorted(f for f in self.files if f.endswith(".sh"))

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for name in sorted(self.files):
            h.update(f"{name}\0{self.files[name]}\n".encode())
        return h.hexdigest()


# -- facts ------------------------------------------------------------------------------------


def _split(value: str | None) -> list[str]:
    return [p.strip() for p in (value or "").split(",") if p.strip()]


def parse_facts(
    topology: str,
    *,
    nodes: str,
    vip: str,
    interface: str,
    disk: str,
    mount: str,
    store: str,
    admin_password_file: str,
    fstype: str = "ext4",
    domain: str | None = None,
    app: str | None = None,
    cluster: str | None = None,
    admin_port: int = DEFAULT_ADMIN_PORT,
    state_dir: str = "/var/lib/kagemusha",
    fsck: str = "every 10",
    kagemusha: str = "kagemusha",
    check_files: bool = True,
) -> Facts:
    """Check ``kagemusha init``'s flags; every problem is one ``(--flag, what is expected)``.

    Raises:
        ConfigError: one entry per bad flag.
    """
    errors: list[tuple[str, str]] = []
    try:
        topo = Topology(topology)
    except ValueError:
        raise ConfigError([("topology", f'must be "one-way" or "two-way", got "{topology}"')]) from None
    count = topo.groups

    node_list: list[tuple[str, str]] = []
    for item in _split(nodes):
        name, sep, addr = item.partition("=")
        if not sep or not _NAME_RE.match(name) or not addr:
            errors.append(("--nodes", f'expected NAME=ADDRESS[:PORT] pairs separated by commas, got "{item}"'))
            continue
        host, colon, port = addr.rpartition(":")
        if not colon:
            addr = f"{addr}:{DEFAULT_NODE_PORT}"
        elif not host or not port.isdigit() or not 0 < int(port) < 65536:
            errors.append(("--nodes", f'"{item}": the port must be 1-65535'))
            continue
        node_list.append((name, addr))
    names = [n for n, _ in node_list]
    if len(node_list) < 2 and not any(e[0] == "--nodes" for e in errors):
        errors.append(("--nodes", f"give at least two nodes (n1=ADDR,n2=ADDR), got {len(node_list)}"))
    if len(set(names)) != len(names):
        errors.append(("--nodes", "node names must be distinct"))

    def per_group(flag: str, raw: list[str], default: list[str] | None = None) -> list[str]:
        vals = raw or (default or [])
        if len(vals) != count:
            plural = "s" if count > 1 else ""
            errors.append((flag, f"{topo} needs {count} value{plural} (comma-separated), got {len(vals)}"))
        return vals

    vips = per_group("--vip", _split(vip))
    for v in vips:
        if "/" not in v:
            errors.append(("--vip", f'"{v}": give the prefix length too, e.g. 192.168.1.111/24'))
            continue
        try:
            IPv4Interface(v)
        except ValueError:
            errors.append(("--vip", f'"{v}" is not an IPv4 address with a prefix length'))
    if len(set(vips)) != len(vips):
        errors.append(("--vip", "each group needs its own virtual IP"))
    if not _IFNAME_RE.match(interface or ""):
        errors.append(("--interface", f'"{interface}" is not an interface name'))
    disks = per_group("--disk", _split(disk))
    for d in disks:
        if not d.startswith("/"):
            errors.append(("--disk", f'"{d}": give the device as an absolute path, e.g. /dev/sdb1'))
    if len(set(disks)) != len(disks):
        errors.append(("--disk", "each group needs its own switchover disk"))
    mounts = per_group("--mount", _split(mount))
    for m in mounts:
        if not m.startswith("/") or os.path.normpath(m) == "/":
            errors.append(("--mount", f'"{m}": must be an absolute path other than /, e.g. /data1'))
    if len(set(mounts)) != len(mounts):
        errors.append(("--mount", "each group needs its own mount point"))
    if not re.fullmatch(r"[a-z0-9_.]+", fstype):
        errors.append(("--fstype", f'"{fstype}" is not a file system type'))
    domains = per_group("--domain", _split(domain), [f"domain{i + 1}" for i in range(count)])
    for d in domains:
        if not _DOMAIN_RE.match(d) or d == "admin":
            errors.append(("--domain", f'"{d}" is not a domain name (letters, digits, _ . -; not admin)'))
    if len(set(domains)) != len(domains):
        errors.append(("--domain", "each group needs its own domain"))
    apps = _split(app) or [DEFAULT_APP]
    if len(apps) == 1:
        apps = apps * count
    if len(apps) != count:
        errors.append(("--app", f"give one app for every domain or one per domain ({count}), got {len(apps)}"))
    for a in apps:
        if not _APP_RE.match(a):
            errors.append(("--app", f'"{a}" is not an import string MODULE:ATTR'))
    try:
        from kagemusha.store._open import parse_store_url

        parse_store_url(store)
        if store.startswith("local:") and not store.removeprefix("local:").startswith("/"):
            errors.append(("--store", "local:PATH needs an absolute path"))
    except Exception as exc:  # noqa: BLE001 - ConfigError or ValueError: one line either way
        errors.append(("--store", str(exc).splitlines()[0] if str(exc) else "not a store URL"))
    cluster_name = cluster or f"webotx-{topo.seed_dir}"
    if not _NAME_RE.match(cluster_name):
        errors.append(("--cluster", f'"{cluster_name}" is not a cluster name'))
    if not 0 < admin_port < 65536:
        errors.append(("--admin-port", "must be 1-65535"))
    pw = os.path.abspath(admin_password_file) if admin_password_file else ""
    if not admin_password_file:
        errors.append(("--admin-password-file", "required: a file (mode 0600) with the admin password"))
    elif check_files:
        try:
            st = os.stat(pw)
            if st.st_mode & 0o077:
                mode = f"{st.st_mode & 0o777:o}"
                errors.append(("--admin-password-file", f"{pw} is readable by others (mode {mode}); chmod 600 it"))
            elif not Path(pw).read_text().strip():
                errors.append(("--admin-password-file", f"{pw} is empty"))
        except OSError as exc:
            errors.append(("--admin-password-file", f"cannot read {pw}: {exc.strerror}"))
    if not state_dir.startswith("/"):
        errors.append(("--state-dir", "must be an absolute path"))
    if errors:
        raise ConfigError(errors)
    return Facts(
        topology=topo, cluster=cluster_name, nodes=tuple(node_list), vips=tuple(vips), interface=interface,
        disks=tuple(os.path.normpath(d) for d in disks), mounts=tuple(os.path.normpath(m) for m in mounts),
        fstype=fstype, store=store, domains=tuple(domains), apps=tuple(apps), admin_password_file=pw,
        admin_port=admin_port, state_dir=state_dir, fsck=fsck, kagemusha=kagemusha,
    )


# -- groups and ports -------------------------------------------------------------------------


def _ports(index: int) -> dict[str, int]:
    if index == 0:
        return {k: p1 for k, p1, _ in SEED_PORTS}
    return {k: p2 + 100 * (index - 1) for k, _, p2 in SEED_PORTS}


def plan_groups(facts: Facts) -> tuple[GroupPlan, ...]:
    """The failover groups: ``webotx1`` homed on the first node, ``webotx2`` on the second.

    Raises:
        ConfigError: two domains (or a domain and the admin domain) would share a port.
    """
    names = list(facts.node_names)
    out = []
    owner: dict[int, str] = {facts.admin_port: "the admin domain (--admin-port)"}
    errors: list[tuple[str, str]] = []
    for i in range(facts.topology.groups):
        order = tuple(names[i:] + names[:i])
        ports = _ports(i)
        d = facts.domains[i]
        for key, port in ports.items():
            if not 0 < port < 65536:
                errors.append((f"{d}.properties: {key}", f"port {port} is out of range"))
            elif port in owner:
                errors.append((f"{d}.properties: {key}", f"port {port} is already used by {owner[port]}"))
            else:
                owner[port] = f"{d} ({key})"
        out.append(GroupPlan(
            name=f"webotx{i + 1}", index=i + 1, nodes=order, vip=facts.vips[i], disk=facts.disks[i],
            mount=facts.mounts[i], domain=d, app=facts.apps[i], ports=ports,
        ))
    if errors:
        raise ConfigError(errors)
    return tuple(out)


# -- rendering --------------------------------------------------------------------------------


def _properties(facts: Facts, g: GroupPlan) -> str:
    lines = [
        f"# {g.domain}: the seed's 2.2 {g.domain}.properties, written by `kagemusha init {facts.topology}`.",
        "# Ports are unique across every domain of the plan (the seed's rule), and every service",
        f"# listens on and advertises the group's virtual IP {g.vip_ip}.",
        "# The admin password is not here: `build` reads it from the admin password file.",
        f"domain.name={g.domain}",
        f"domain.hostname={g.vip_ip}",
        f"domain.admin.user={facts.admin_user}",
        *(f"{k}={v}" for k, v in g.ports.items()),
        "domain.ipv6-enable=false",
        "server.corba-service.namesv.NameServiceRoundRobin=true",
        f"domain.advertised.host={g.vip_ip}",
        f"domain.bind.address={g.vip_ip}",
        f"domain.app={g.app}",
        "",
    ]
    return "\n".join(lines)


def _script(facts: Facts, g: GroupPlan, which: str) -> str:
    text = SCRIPTS[(facts.topology.seed_dir, which)].replace(OTXADMIN, f"{facts.kagemusha} domain")
    # NB: order matters: the seed's own /data1 and domain1 become this group's.
    text = text.replace("/data1", g.mount.rstrip("/")).replace("domain1", g.domain)
    return text


def _cluster_toml(facts: Facts, groups: Sequence[GroupPlan]) -> str:
    data: dict[str, Any] = {
        "cluster": {"name": facts.cluster, "store": facts.store, "state_dir": facts.state_dir},
        "nodes": [{"name": n, "address": a} for n, a in facts.nodes],
        "groups": [],
    }
    for g in groups:
        n = g.index
        data["groups"].append({
            "name": g.name,
            "nodes": list(g.nodes),
            "failback": "manual",
            "resources": [
                {"name": f"fip{n}", "type": "floating_ip", "address": g.vip, "interface": facts.interface},
                {"name": f"sd{n}", "type": "disk", "device": g.disk, "mount_point": g.mount,
                 "fstype": facts.fstype, "fsck": facts.fsck},
                {"name": f"exec{n}", "type": "exec", "start": f"{g.name}/start.sh", "stop": f"{g.name}/stop.sh",
                 "start_timeout": 300, "stop_timeout": 660},
            ],
            # The seed (2.5.5): the WebOTX monitor is added last, once the cluster is built.
            "monitors": [
                {"name": f"otxw{n}", "type": "domain", "domain": g.domain, "domaindir": g.domains_root,
                 "user": facts.admin_user, "password_file": facts.admin_password_file,
                 "interval": 10.0, "timeout": 30.0, "retries": 2, "restart_limit": 1, "failover_limit": 1,
                 "final_action": "stop_group"},
            ],
        })
    head = (f"# The seed's {facts.topology} standby cluster, written by `kagemusha init {facts.topology}`.\n"
            "# Review with PLAN.md; `kagemusha build --plan DIR --node N` carries it out on each node.\n\n")
    return head + tomli_w.dumps(data)


def build_steps_in_words(facts: Facts, groups: Sequence[GroupPlan], node: str) -> list[str]:
    """What ``build`` does on ``node``, in order, for PLAN.md (mirrors ``_steps.build_steps``)."""
    first = facts.nodes[0][0]
    steps = [
        "preflight: interface " + facts.interface + " present; " + ", ".join(g.vip for g in groups)
        + " not answering ARP (unless this cluster holds it); "
        + ", ".join(f"{g.disk} ({facts.fstype})" for g in groups) + " present; mount points free; "
        + "every domain port free; the store reachable; this node named in the plan; the admin password file 0600",
        "install the configuration: cluster.toml and the start/stop scripts into /etc/kagemusha",
        "create the mount points " + ", ".join(g.mount for g in groups) + " where missing",
    ]
    if node == first:
        steps.append("check the file system on " + ", ".join(g.disk for g in groups)
                     + f" ({facts.fstype}; with --mkfs, make it where there is none)")
    for g in groups:
        if node == first:
            steps.append(f"create {g.domain} on the switchover disk: mount {g.disk} on {g.mount}, "
                         f"`domain create --domaindir {g.domains_root} {g.domain}` from {g.domain}.properties, "
                         f"autostart {'on (the admin domain starts it)' if facts.topology is Topology.ONE_WAY else 'off'}"
                         f", unmount")
        else:
            steps.append(f"register the domains root {g.domains_root} ({g.domain}) in this node's domain registry "
                         "(the seed's setup.env step)")
    steps.append("store the configuration (`config apply`)" + (" and mark this node built" if node == first else
                 "; needs the first node built first") )
    steps.append("install the service (systemd unit, enabled) or, with --service none, nothing")
    steps.append("start the agent; it brings up the groups homed here")
    return steps


def _plan_md(facts: Facts, groups: Sequence[GroupPlan]) -> str:
    out = [
        f"# Plan: {facts.topology} standby cluster `{facts.cluster}`",
        "",
        f"Nodes: {', '.join(f'{n} ({a})' for n, a in facts.nodes)}. Store: `{facts.store}`.",
        "",
        "| group | nodes (home first) | virtual IP | disk | mount | domain | HTTP port | app |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for g in groups:
        out.append(f"| {g.name} | {', '.join(g.nodes)} | {g.vip} on {facts.interface} | {g.disk} ({facts.fstype}) "
                   f"| {g.mount} | {g.domain} | {g.http_port} | `{g.app}` |")
    out += [
        "",
        "Each group: `fip` (floating IP), `sd` (disk), `exec` (the seed's start.sh/stop.sh), then the `domain`",
        "monitor, added last as the seed advises. Ports are unique across the domains (the seed's rule);",
        (f"the admin domain listens on {facts.admin_port}. The admin password stays in "
         f"`{facts.admin_password_file}` (must exist, mode 0600, on every node)."),
        "",
        "Run `kagemusha build --plan DIR --node N` on the first node first, then on the others.",
        "`--dry-run` lists the steps; running it again changes nothing; `--verify` checks the cluster.",
        "",
    ]
    for n, _ in facts.nodes:
        out.append(f"## Node {n}{' (first node: creates the domains)' if n == facts.nodes[0][0] else ''}")
        out.append("")
        for i, s in enumerate(build_steps_in_words(facts, groups, n), 1):
            out.append(f"{i}. {s}")
        out.append("")
    out += [
        "## Verification (`kagemusha build --plan DIR --node N --verify`)",
        "",
        *(f"- {g.name}: online on {g.home}; {g.domain} answers at http://{g.vip_ip}:{g.http_port}/; "
          f"moved to {g.nodes[1]} and answers there; moved back to {g.home} and answers." for g in groups),
        "",
        "## Uninstall (`kagemusha uninstall --plan DIR --node N`, the seed's chapter 5)",
        "",
        "Groups running here move to another live node (or stop with `--all`); the agent and its service go;",
        "on the last node the domains are deleted from the switchover disks and the cluster's keys from the",
        "store; everything `build` wrote on the node (its manifest lists it) is removed.",
        "",
    ]
    return "\n".join(out)


def render_plan(facts: Facts) -> dict[str, str]:
    """The plan directory's files (relative path -> text).

    Raises:
        ConfigError: the ports of the domains collide.
    """
    groups = plan_groups(facts)
    files: dict[str, str] = {"cluster.toml": _cluster_toml(facts, groups)}
    for g in groups:
        files[f"{g.domain}.properties"] = _properties(facts, g)
        for which in ("start", "stop"):
            files[f"{g.name}/{which}.sh"] = _script(facts, g, which)
    files["PLAN.md"] = _plan_md(facts, groups)
    meta = {
        "format": PLAN_FORMAT,
        "facts": {**asdict(facts), "topology": str(facts.topology)},
        "groups": [asdict(g) for g in groups],
        "files": {k: hashlib.sha256(v.encode()).hexdigest() for k, v in sorted(files.items())},
    }
    files[PLAN_JSON] = json.dumps(meta, indent=2, sort_keys=True) + "\n"
    return files


def write_plan(files: Mapping[str, str], out: Path, *, force: bool = False) -> None:
    """Validate the rendered plan as ``config validate`` would, then write it into ``out``.

    The files are written into a temporary directory next to ``out`` first and validated
    there, so a refused plan leaves ``out`` as it was.

    Raises:
        ConfigError: ``out`` is not empty (without ``force``) or the config is refused.
    """
    from kagemusha.config import load_config

    out = out.absolute()
    if out.exists() and not out.is_dir():
        raise ConfigError([("--out", f"{out} exists and is not a directory")])
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError([("--out", f"{out} is not empty (use --force to write into it)")])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for rel, text in files.items():
            p = tmp / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
            p.chmod(0o755 if rel.endswith(".sh") else 0o644)
        load_config(tmp / "cluster.toml")  # ConfigError: what `config validate` would say
        from kagemusha.domains import load_properties

        meta = json.loads(files[PLAN_JSON])
        for g in meta["groups"]:
            load_properties(tmp / f"{g['domain']}.properties", name=g["domain"])
        out.mkdir(exist_ok=True)
        for rel in files:
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp / rel, out / rel)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_plan(path: str | Path) -> Plan:
    """Read a plan directory written by ``kagemusha init``.

    Raises:
        ConfigError: not a plan directory, or a file was changed and no longer matches.
    """
    d = Path(path).absolute()
    try:
        meta = json.loads((d / PLAN_JSON).read_text())
    except OSError as exc:
        raise ConfigError([("--plan", f"{d} is not a plan directory ({PLAN_JSON}: {exc.strerror})")]) from None
    except ValueError as exc:
        raise ConfigError([("--plan", f"{d / PLAN_JSON} is not valid JSON: {exc}")]) from None
    if meta.get("format") != PLAN_FORMAT:
        raise ConfigError([("--plan", f"{d / PLAN_JSON}: unknown plan format {meta.get('format')!r}")])
    try:
        f = dict(meta["facts"])
        facts = Facts(**{**f, "topology": Topology(f["topology"]), "nodes": tuple(tuple(x) for x in f["nodes"]),
                         **{k: tuple(f[k]) for k in ("vips", "disks", "mounts", "domains", "apps")}})
        groups = tuple(GroupPlan(**{**g, "nodes": tuple(g["nodes"])}) for g in meta["groups"])
        files = {str(k): str(v) for k, v in meta["files"].items()}
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError([("--plan", f"{d / PLAN_JSON} is damaged: {exc}")]) from None
    errors = []
    for rel, sha in files.items():
        try:
            text = (d / rel).read_text()
        except OSError as exc:
            errors.append(("--plan", f"{d / rel}: {exc.strerror}"))
            continue
        if rel != "PLAN.md" and hashlib.sha256(text.encode()).hexdigest() != sha:
            errors.append(("--plan", f"{d / rel} was changed after init (run init again to change the plan)"))
    if errors:
        raise ConfigError(errors)
    return Plan(dir=d, facts=facts, groups=groups, files=files)

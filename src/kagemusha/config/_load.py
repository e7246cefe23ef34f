"""Load and validate ``cluster.toml``: every error names the file, the key path and what is expected."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kagemusha.config._schema import (
    ClusterSection,
    Config,
    GroupSpec,
    MonitorSpec,
    NodeSpec,
    ResourceSpec,
    loc_to_path,
)
from kagemusha.errors import ConfigError

__all__ = ["config_warnings", "load_config", "parse_config", "retry_backoff", "timing_errors", "timing_need"]


def _pydantic_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        path = loc_to_path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden" and str(err["loc"][-1]).endswith("password"):
            msg = _inline_password()
        elif err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "value_error":
            msg = msg.removeprefix("Value error, ")
        out.append((path, msg))
    return out


def _inline_password() -> str:
    from kagemusha.resources._base import INLINE_PASSWORD

    return INLINE_PASSWORD


def retry_backoff(heartbeat_interval: float, store_timeout: float) -> float:
    """The pause between two failed lease renewals (a store that refuses at once must not make a hot loop)."""
    return min(heartbeat_interval, store_timeout) / 4


def timing_need(heartbeat_interval: float, store_timeout: float, fence_margin: float) -> float:
    """The shortest lease TTL with which a node always fences before its lease can expire at the store.

    Derived in docs/fencing.md ("The timing rule"): a renewal sent at ``t0`` resets the store's TTL
    no earlier than ``t0``, and its answer may take ``store_timeout``; the next renewal is sent
    ``heartbeat_interval`` after the answer and may again take ``store_timeout`` to fail; a failed
    attempt waits ``retry_backoff`` before the next; and the fence needs ``fence_margin``. All of it
    must fit in the TTL counted from ``t0``::

        heartbeat_interval + 2 * store_timeout + retry_backoff + fence_margin <= heartbeat_timeout
    """
    return heartbeat_interval + 2 * store_timeout + retry_backoff(heartbeat_interval, store_timeout) + fence_margin


def timing_errors(cfg: Config) -> list[tuple[str, str]]:
    """Patroni-style timing rule: a node must notice a failed renewal and fence itself before its
    lease can expire at the store, counting the last renewal's round trip and the retry back-off
    (``timing_need``)."""
    return _timing_errors(cfg.cluster)


def _timing_errors(c: ClusterSection) -> list[tuple[str, str]]:
    b = retry_backoff(c.heartbeat_interval, c.store_timeout)
    need = timing_need(c.heartbeat_interval, c.store_timeout, c.fence_margin)
    if need > c.heartbeat_timeout + 1e-9:
        return [(
            "cluster.heartbeat_timeout",
            (
                f"must be >= cluster.heartbeat_interval + 2 * cluster.store_timeout + retry back-off + cluster.fence_margin "
                f"({c.heartbeat_interval:g} + 2 * {c.store_timeout:g} + {b:g} + {c.fence_margin:g} = {need:g}; "
                f"the back-off is min(heartbeat_interval, store_timeout) / 4), got {c.heartbeat_timeout:g}: "
                "a node that misses a renewal could not fence itself before its lease expires (docs/fencing.md)"
            ),
        )]
    return []


def config_warnings(cfg: Config) -> list[tuple[str, str]]:
    """Valid but risky settings, said by ``config validate`` and logged by the agent."""
    from kagemusha.store._open import parse_store_url

    out = []
    c = cfg.cluster
    if parse_store_url(c.store).scheme == "etcd" and c.heartbeat_timeout < 2.0:
        out.append((
            "cluster.heartbeat_timeout",
            (
                f"{c.heartbeat_timeout:g}s on etcd: a leader election (when a member restarts) can keep every member "
                "from answering for about a second, and an owner that cannot renew fences itself; "
                "3 s or more is safer (docs/fencing.md)"
            ),
        ))
    if c.watchdog is None and parse_store_url(c.store).scheme == "etcd":
        out.append(("cluster.watchdog", "not set: a hung (not dead) agent is not fenced by the kernel (docs/fencing.md)"))
    if c.insecure_store and parse_store_url(c.store).scheme == "etcd" and not _store_is_secured(c):
        out.append(("cluster.insecure_store", ("true: etcd without client certificates or auth; whoever can write to "
                    "the store runs commands as root on every node (docs/operations.md)")))
    return out


Errors = list[tuple[str, str]]


def _try(model: Any, raw: Any) -> Any:
    """``model`` validated from ``raw``, or ``None`` (its errors are reported by the whole-file validation)."""
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _dupes(errors: Errors, names: list[str | None], where: str) -> None:
    for name, n in Counter(x for x in names if x is not None).items():
        if n > 1:
            idx = [i for i, x in enumerate(names) if x == name]
            errors.append((f"{where}[{idx[1]}].name", f'duplicate name "{name}" (also {where}[{idx[0]}])'))


def _spec_errors(where: str, kind: str, spec: ResourceSpec | MonitorSpec, base_dir: Path | None) -> Errors:
    """A resource's or monitor's type and type-specific keys (``kind`` is "resources" or "monitors")."""
    from kagemusha.monitors import REGISTRY as MONITORS
    from kagemusha.monitors import monitor_class
    from kagemusha.resources import REGISTRY as RESOURCES
    from kagemusha.resources import driver_class

    registry, lookup = (RESOURCES, driver_class) if kind == "resources" else (MONITORS, monitor_class)
    errors: Errors = []
    if isinstance(spec, MonitorSpec) and spec.timeout > 0 and spec.interval <= 0:
        errors.append((f"{where}.interval", "must be > 0"))
    if spec.type not in registry:
        errors.append((f"{where}.type", f'unknown {kind[:-1]} type "{spec.type}" (expected one of: {", ".join(sorted(registry))})'))
        if "password" in spec.params:
            errors.append((f"{where}.password", _inline_password()))
        return errors
    cls: Any = lookup(spec.type)
    try:
        params = cls.Params.model_validate(spec.params)
    except ValidationError as exc:
        return errors + _pydantic_errors(exc, where)
    errors.extend((f"{where}.{key}", msg) for key, msg in cls.check_params(params, base_dir=base_dir))
    return errors


def _group_errors(gi: int, g: GroupSpec, node_names: set[str]) -> Errors:
    errors: Errors = []
    for ni, gn in enumerate(g.nodes):
        if gn not in node_names:
            errors.append((f"groups[{gi}].nodes[{ni}]", f'node "{gn}" is not defined in [[nodes]] (known: {", ".join(sorted(node_names))})'))
    if len(set(g.nodes)) != len(g.nodes):
        errors.append((f"groups[{gi}].nodes", "a node is listed twice"))
    _dupes(errors, [r.name for r in g.resources], f"groups[{gi}].resources")
    _dupes(errors, [m.name for m in g.monitors], f"groups[{gi}].monitors")
    return errors


def _store_is_secured(c: ClusterSection) -> bool:
    """A client certificate, or a user with a password file: etcd can then tell agents from anyone else."""
    return (c.store_cert_file is not None and c.store_key_file is not None) or (
        c.store_user is not None and c.store_password_file is not None)


def _cluster_errors(c: ClusterSection, base_dir: Path | None) -> Errors:
    from kagemusha.store._open import parse_store_url

    errors: Errors = []
    for key in ("api_token_file", "tls_cert_file", "tls_key_file", "store_ca_file", "store_cert_file", "store_key_file", "store_password_file"):
        val = getattr(c, key)
        if val is not None:
            p = Path(val) if Path(val).is_absolute() or base_dir is None else base_dir / val
            if not p.is_file():
                errors.append((f"cluster.{key}", f"file {p} does not exist"))
            elif key in ("api_token_file", "store_password_file"):
                errors.extend((f"cluster.{key}", m) for m in _token_file_problems(p, key == "api_token_file"))
    if (c.tls_cert_file is None) != (c.tls_key_file is None):
        errors.append(("cluster.tls_key_file", "tls_cert_file and tls_key_file go together"))
    if (c.store_cert_file is None) != (c.store_key_file is None):
        errors.append(("cluster.store_key_file", "store_cert_file and store_key_file go together"))
    if (c.store_user is None) != (c.store_password_file is None):
        errors.append(("cluster.store_password_file", "store_user and store_password_file go together"))
    if parse_store_url(c.store).scheme == "etcd" and not _store_is_secured(c) and not c.insecure_store:
        errors.append(("cluster.store", INSECURE_STORE))
    if c.watchdog is not None:
        from kagemusha._watchdog import watchdog_timeout

        wd = watchdog_timeout(c.heartbeat_timeout, c.store_timeout, c.fence_margin)
        gap = c.heartbeat_interval + 2 * c.store_timeout + retry_backoff(c.heartbeat_interval, c.store_timeout)
        if wd < 1:
            errors.append(("cluster.watchdog", ("the kernel watchdog counts whole seconds: it needs cluster.heartbeat_timeout "
                           "- cluster.store_timeout - cluster.fence_margin >= 1 (e.g. heartbeat_timeout = 2.0)")))
        elif wd <= gap:
            errors.append(("cluster.watchdog", (f"the watchdog timeout ({wd}s = floor(heartbeat_timeout - store_timeout "
                           f"- fence_margin)) must exceed the longest healthy gap between two renewals ({gap:g}s = "
                           "heartbeat_interval + 2 * store_timeout + retry back-off): raise cluster.heartbeat_timeout")))
    errors.extend(_timing_errors(c))
    return errors


#: Why etcd without client certificates or auth is refused (the agent runs what the store says, as root).
INSECURE_STORE = (
    "etcd without client certificates (store_cert_file + store_key_file) or auth (store_user + store_password_file): "
    "whoever can write to the store runs commands as root on every node (agents apply stored configs, whose "
    "scripts and monitors they run); secure the store, or set cluster.insecure_store = true to accept that "
    "(docs/operations.md)"
)


def _semantic_errors(cfg: Config, base_dir: Path | None, *, drivers: bool = True) -> Errors:
    """Errors beyond the schema of a config whose every part is well formed (``drivers``: see ``parse_config``)."""
    from kagemusha.store._open import parse_store_url

    errors: Errors = []
    _dupes(errors, [n.name for n in cfg.nodes], "nodes")
    _dupes(errors, [g.name for g in cfg.groups], "groups")
    errors.extend(_address_errors(list(enumerate(cfg.nodes))))
    for gi, g in enumerate(cfg.groups):
        errors.extend(_group_errors(gi, g, set(cfg.node_names)))
        specs: tuple[tuple[str, tuple[ResourceSpec | MonitorSpec, ...]], ...] = (
            ("resources", g.resources), ("monitors", g.monitors))
        for kind, items in specs if drivers else ():
            for ri, spec in enumerate(items):
                errors.extend(_spec_errors(f"groups[{gi}].{kind}[{ri}]", kind, spec, base_dir))
    hosts = {n.host for n in cfg.nodes}
    if parse_store_url(cfg.cluster.store).scheme == "local" and len(hosts) > 1:
        errors.append(("cluster.store", f"the local store serves nodes on one host, but nodes name hosts {sorted(hosts)}: use etcd://"))
    errors.extend(_cluster_errors(cfg.cluster, base_dir))
    return errors


def _address_errors(nodes: list[tuple[int, NodeSpec]]) -> Errors:
    addresses = Counter(n.address for _, n in nodes)
    return [(f"nodes[{i}].address", f'address "{n.address}" is used by more than one node')
            for i, n in nodes if addresses[n.address] > 1]


def _partial_errors(data: dict[str, Any], base_dir: Path | None) -> Errors:
    """The semantic errors of the parts that are well formed, when the file as a whole is not.

    NB: so one mistake does not hide others: an unknown key in ``[cluster]`` still lets an unknown
    resource type in a group, or a missing script, be reported in the same run.
    """
    errors: Errors = []
    cluster = _try(ClusterSection, data.get("cluster"))
    if cluster is not None:
        errors.extend(_cluster_errors(cluster, base_dir))
    raw_nodes = data.get("nodes")
    raw_nodes = raw_nodes if isinstance(raw_nodes, list) else []
    nodes = [(i, n) for i, n in enumerate(_try(NodeSpec, r) for r in raw_nodes) if n is not None]
    _dupes(errors, [r.get("name") if isinstance(r, dict) and isinstance(r.get("name"), str) else None
                    for r in raw_nodes], "nodes")
    errors.extend(_address_errors(nodes))
    node_names = {r["name"] for r in raw_nodes if isinstance(r, dict) and isinstance(r.get("name"), str)}
    raw_groups = data.get("groups")
    raw_groups = raw_groups if isinstance(raw_groups, list) else []
    _dupes(errors, [r.get("name") if isinstance(r, dict) and isinstance(r.get("name"), str) else None
                    for r in raw_groups], "groups")
    for gi, raw in enumerate(raw_groups):
        g = _try(GroupSpec, raw)
        if g is not None and raw_nodes and len(nodes) == len(raw_nodes):
            errors.extend(_group_errors(gi, g, node_names))
        if not isinstance(raw, dict):
            continue
        for kind, model in (("resources", ResourceSpec), ("monitors", MonitorSpec)):
            specs = raw.get(kind)
            for ri, rs in enumerate(specs if isinstance(specs, list) else []):
                spec: ResourceSpec | MonitorSpec | None = _try(model, rs)
                if spec is not None:
                    errors.extend(_spec_errors(f"groups[{gi}].{kind}[{ri}]", kind, spec, base_dir))
    return errors


def _token_file_problems(p: Path, token: bool = True) -> list[str]:
    """A token or password file must be private to its owner (mode 0600 or stricter) and not empty."""
    what = "token file" if token else "password file"
    problems: list[str] = []
    mode = 0
    try:
        mode = p.stat().st_mode & 0o777
        text = p.read_text(encoding="utf-8").strip()
    except PermissionError:
        text = "?"  # NB: a user who may not read it (e.g. a script as the service user) still gets a valid config
    except (OSError, UnicodeDecodeError) as exc:
        return [f"cannot read {what} {p}: {getattr(exc, 'strerror', None) or exc}"]
    if mode & 0o077:
        problems.append(f"{what} {p} has mode {mode:04o}: group or others may read it; chmod 600 {p}")
    if not text:
        problems.append(f"{what} {p} is empty")
    return problems


def parse_config(data: dict[str, Any], *, source: str = "", base_dir: Path | None = None,
                 check_drivers: bool = True) -> Config:
    """Validate a config already parsed from TOML.

    ``check_drivers=False`` skips the check of each resource's and monitor's type and parameters (which
    imports every driver): for client commands (``status``, ``group``) that read the cluster's settings,
    not the groups' drivers, which the agents check.

    Raises:
        ConfigError: every problem found, each ``(file: key.path, message)``.
    """
    prefix = f"{source}: " if source else ""
    try:
        cfg = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        found = _pydantic_errors(exc) + _partial_errors(data, base_dir)
        raise ConfigError([(prefix + path, msg) for path, msg in dict.fromkeys(found)]) from None
    errors = _semantic_errors(cfg, base_dir, drivers=check_drivers)
    if errors:
        raise ConfigError([(prefix + path, msg) for path, msg in errors])
    return cfg


def load_config(path: str | Path, *, check_drivers: bool = True) -> Config:
    """Read and validate ``cluster.toml`` (``check_drivers``: see ``parse_config``).

    Raises:
        ConfigError: unreadable file, bad TOML (with line and column), or invalid content.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError([(str(p), f"cannot read config file: {exc.strerror}")]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError([(str(p), "not UTF-8 text")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(str(p), f"invalid TOML: {exc}")]) from None
    return parse_config(data, source=str(p), base_dir=p.resolve().parent, check_drivers=check_drivers)

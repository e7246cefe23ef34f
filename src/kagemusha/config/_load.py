"""Load and validate ``cluster.toml``: every error names the file, the key path and what is expected."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kagemusha.config._schema import Config, loc_to_path
from kagemusha.errors import ConfigError

__all__ = ["config_warnings", "load_config", "parse_config", "retry_backoff", "timing_errors", "timing_need"]


def _pydantic_errors(exc: ValidationError, prefix: str = "") -> list[tuple[str, str]]:
    out = []
    for err in exc.errors():
        path = loc_to_path(tuple(err["loc"]))
        if prefix:
            path = f"{prefix}.{path}" if path else prefix
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        out.append((path, msg))
    return out


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
    c = cfg.cluster
    b = retry_backoff(c.heartbeat_interval, c.store_timeout)
    need = timing_need(c.heartbeat_interval, c.store_timeout, c.fence_margin)
    if need > c.heartbeat_timeout + 1e-9:
        return [(
            "cluster.heartbeat_timeout",
            f"must be >= cluster.heartbeat_interval + 2 * cluster.store_timeout + retry back-off + cluster.fence_margin "
            f"({c.heartbeat_interval:g} + 2 * {c.store_timeout:g} + {b:g} + {c.fence_margin:g} = {need:g}; "
            f"the back-off is min(heartbeat_interval, store_timeout) / 4), got {c.heartbeat_timeout:g}: "
            "a node that misses a renewal could not fence itself before its lease expires (docs/fencing.md)",
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
            f"{c.heartbeat_timeout:g}s on etcd: a leader election (when a member restarts) can keep every member "
            "from answering for about a second, and an owner that cannot renew fences itself; "
            "3 s or more is safer (docs/fencing.md)",
        ))
    if c.watchdog is None and parse_store_url(c.store).scheme == "etcd":
        out.append(("cluster.watchdog", "not set: a hung (not dead) agent is not fenced by the kernel (docs/fencing.md)"))
    return out


def _driver_kinds(g: Any) -> tuple[tuple[str, tuple[Any, ...], dict[str, str], Any], ...]:
    """Each kind of a group's drivers: its specs, the registry of its types and how to load a type's class."""
    from kagemusha.monitors import REGISTRY as MONITORS
    from kagemusha.monitors import monitor_class
    from kagemusha.resources import REGISTRY as RESOURCES
    from kagemusha.resources import driver_class

    return (("resources", g.resources, RESOURCES, driver_class), ("monitors", g.monitors, MONITORS, monitor_class))


def _semantic_errors(cfg: Config, base_dir: Path | None, *, drivers: bool = True) -> list[tuple[str, str]]:
    from kagemusha.store._open import parse_store_url

    errors: list[tuple[str, str]] = []

    def dupes(names: list[str], where: str) -> None:
        for name, n in Counter(names).items():
            if n > 1:
                idx = [i for i, x in enumerate(names) if x == name]
                errors.append((f"{where}[{idx[1]}].name", f'duplicate name "{name}" (also {where}[{idx[0]}])'))

    dupes([n.name for n in cfg.nodes], "nodes")
    dupes([g.name for g in cfg.groups], "groups")
    addresses = Counter(n.address for n in cfg.nodes)
    for i, n in enumerate(cfg.nodes):
        if addresses[n.address] > 1:
            errors.append((f"nodes[{i}].address", f'address "{n.address}" is used by more than one node'))
    node_names = set(cfg.node_names)
    for gi, g in enumerate(cfg.groups):
        for ni, gn in enumerate(g.nodes):
            if gn not in node_names:
                errors.append((f"groups[{gi}].nodes[{ni}]", f'node "{gn}" is not defined in [[nodes]] (known: {", ".join(sorted(node_names))})'))
        if len(set(g.nodes)) != len(g.nodes):
            errors.append((f"groups[{gi}].nodes", "a node is listed twice"))
        dupes([r.name for r in g.resources], f"groups[{gi}].resources")
        dupes([m.name for m in g.monitors], f"groups[{gi}].monitors")
        for kind, specs, registry, lookup in _driver_kinds(g) if drivers else ():
            for ri, spec in enumerate(specs):
                where = f"groups[{gi}].{kind}[{ri}]"
                if spec.type not in registry:
                    errors.append((f"{where}.type", f'unknown {kind[:-1]} type "{spec.type}" (expected one of: {", ".join(sorted(registry))})'))
                    continue
                cls: Any = lookup(spec.type)
                try:
                    params = cls.Params.model_validate(spec.params)
                except ValidationError as exc:
                    errors.extend(_pydantic_errors(exc, where))
                    continue
                for key, msg in cls.check_params(params, base_dir=base_dir):
                    errors.append((f"{where}.{key}", msg))
        for mi, m in enumerate(g.monitors):
            if m.timeout > 0 and m.interval <= 0:
                errors.append((f"groups[{gi}].monitors[{mi}].interval", "must be > 0"))
    try:
        url = parse_store_url(cfg.cluster.store)
        hosts = {n.host for n in cfg.nodes}
        if url.scheme == "local" and len(hosts) > 1:
            errors.append(("cluster.store", f"the local store serves nodes on one host, but nodes name hosts {sorted(hosts)}: use etcd://"))
    except ConfigError:
        pass
    c = cfg.cluster
    for key in ("api_token_file", "tls_cert_file", "tls_key_file", "store_ca_file", "store_cert_file", "store_key_file", "store_password_file"):
        val = getattr(c, key)
        if val is not None:
            p = Path(val) if Path(val).is_absolute() or base_dir is None else base_dir / val
            if not p.is_file():
                errors.append((f"cluster.{key}", f"file {p} does not exist"))
            elif key == "api_token_file":
                errors.extend(("cluster.api_token_file", m) for m in _token_file_problems(p))
    if (c.tls_cert_file is None) != (c.tls_key_file is None):
        errors.append(("cluster.tls_key_file", "tls_cert_file and tls_key_file go together"))
    if c.watchdog is not None:
        from kagemusha._watchdog import watchdog_timeout

        wd = watchdog_timeout(c.heartbeat_timeout, c.heartbeat_interval, c.store_timeout)
        gap = c.heartbeat_interval + 2 * c.store_timeout + retry_backoff(c.heartbeat_interval, c.store_timeout)
        if wd < 1:
            errors.append(("cluster.watchdog", "the kernel watchdog counts whole seconds: it needs cluster.heartbeat_timeout "
                           "- cluster.heartbeat_interval - cluster.store_timeout >= 1 (e.g. heartbeat_timeout = 2.0)"))
        elif wd <= gap:
            errors.append(("cluster.watchdog", f"the watchdog timeout ({wd}s = floor(heartbeat_timeout - heartbeat_interval "
                           f"- store_timeout)) must exceed the longest healthy gap between two renewals ({gap:g}s = "
                           "heartbeat_interval + 2 * store_timeout + retry back-off): raise cluster.heartbeat_timeout"))
    errors.extend(timing_errors(cfg))
    return errors


def _token_file_problems(p: Path) -> list[str]:
    """The API token file must be private to its owner (mode 0600 or stricter) and hold a token."""
    problems: list[str] = []
    mode = 0
    try:
        mode = p.stat().st_mode & 0o777
        text = p.read_text(encoding="utf-8").strip()
    except PermissionError:
        text = "?"  # NB: a user who may not read it (e.g. a script as the service user) still gets a valid config
    except (OSError, UnicodeDecodeError) as exc:
        return [f"cannot read token file {p}: {getattr(exc, 'strerror', None) or exc}"]
    if mode & 0o077:
        problems.append(f"token file {p} has mode {mode:04o}: group or others may read it; chmod 600 {p}")
    if not text:
        problems.append(f"token file {p} is empty")
    return problems


def parse_config(data: dict[str, Any], *, source: str = "", base_dir: Path | None = None,
                 check_drivers: bool = True) -> Config:
    """Validate a config already parsed from TOML.

    ``check_drivers=False`` skips the check of each resource's and monitor's type and
    parameters (which imports every driver used): for a client of the cluster (the
    CLI's ``status``, ``group``, ...) that needs the nodes, the store and the API
    settings, not the groups' drivers, which the agents check.

    Raises:
        ConfigError: every problem found, each ``(file: key.path, message)``.
    """
    prefix = f"{source}: " if source else ""
    try:
        cfg = Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        raise ConfigError([(prefix + path, msg) for path, msg in _pydantic_errors(exc)]) from None
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

"""The ``cluster.toml`` schema (pydantic, immutable).

Type-specific keys of resources and monitors sit beside the common keys in the
TOML table; the loader moves them into ``params`` and validates them against
the driver's own ``Params`` model (see ``_load.py``).
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from kagemusha.errors import ConfigError

__all__ = [
    "ClusterSection",
    "Config",
    "Failback",
    "FinalAction",
    "GroupSpec",
    "MonitorSpec",
    "NodeSpec",
    "ResourceSpec",
]

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Failback(StrEnum):
    MANUAL = "manual"
    AUTO = "auto"


class FinalAction(StrEnum):
    NONE = "none"
    STOP_GROUP = "stop_group"
    STOP_AGENT = "stop_agent"


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "host:port" with a port 1-65535, got "{value}"')
    return value


class ClusterSection(Strict):
    name: str = Field(pattern=NAME_RE)
    store: str = "local:/var/lib/kagemusha/store.db"
    heartbeat_interval: float = Field(0.15, gt=0, description="seconds between lease renewals")
    heartbeat_timeout: float = Field(1.0, gt=0, description="lease TTL in seconds")
    store_timeout: float = Field(0.25, gt=0, description="bound on one store request (s)")
    fence_margin: float = Field(0.15, gt=0, description="time reserved to fence before the TTL ends (s)")
    startup_wait: float = Field(3.0, ge=0, description="at cluster start, wait this long for higher-priority nodes (s)")
    failure_expiry: float = Field(600.0, gt=0, description="fail counts and node exclusions expire after (s)")
    state_dir: str = "/var/lib/kagemusha"
    api_token_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    store_ca_file: str | None = None
    store_cert_file: str | None = None
    store_key_file: str | None = None
    store_user: str | None = None
    store_password_file: str | None = None
    watchdog: str | None = None
    #: Accept an etcd store without client certificates or auth (refused otherwise: writing to the store
    #: is root on every node). ``config validate`` and the agent warn on every start.
    insecure_store: bool = False

    @field_validator("store")
    @classmethod
    def _store(cls, v: str) -> str:
        from kagemusha.store._open import parse_store_url

        try:
            parse_store_url(v)
        except ConfigError as exc:  # -> field error
            raise ValueError(str(exc)) from None
        return v


class NodeSpec(Strict):
    name: str = Field(pattern=NAME_RE)
    address: str
    host: str = Field("localhost", description="machine identity; distinct hosts need a store that spans hosts")
    state_dir: str | None = None
    #: environment given to every script (exec resources and monitors) on this node
    env: dict[str, str] = Field(default_factory=dict)

    _v_address = field_validator("address")(classmethod(lambda cls, v: _host_port(v)))


class _WithParams(Strict):
    """Common keys plus ``params``: every other key of the TOML table."""

    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _split(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        common = set(cls.model_fields)
        out = {k: v for k, v in data.items() if k in common}
        extra = {k: v for k, v in data.items() if k not in common}
        out.setdefault("params", {})
        if extra:
            out["params"] = {**extra}
        return out


class ResourceSpec(_WithParams):
    name: str = Field(pattern=NAME_RE)
    type: str
    start_timeout: float | None = Field(None, gt=0)
    stop_timeout: float | None = Field(None, gt=0)


class MonitorSpec(_WithParams):
    name: str = Field(pattern=NAME_RE)
    type: str
    interval: float = Field(5.0, gt=0)
    timeout: float = Field(10.0, gt=0)
    retries: int = Field(2, ge=1, description="consecutive failures before recovery")
    restart_limit: int = Field(1, ge=0)
    failover_limit: int = Field(1, ge=0)
    final_action: FinalAction = FinalAction.NONE


class GroupSpec(Strict):
    name: str = Field(pattern=NAME_RE)
    nodes: tuple[str, ...] = Field(min_length=1)
    failback: Failback = Failback.MANUAL
    autostart: bool = True
    resources: tuple[ResourceSpec, ...] = ()
    monitors: tuple[MonitorSpec, ...] = ()

    @property
    def home(self) -> str:
        return self.nodes[0]


class Config(Strict):
    cluster: ClusterSection
    nodes: tuple[NodeSpec, ...] = Field(min_length=1)
    groups: tuple[GroupSpec, ...] = ()
    #: The file this config was read from ("" when built in code); relative script paths resolve against its directory.
    source: str = ""

    def node(self, name: str) -> NodeSpec:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def group(self, name: str) -> GroupSpec:
        for g in self.groups:
            if g.name == name:
                return g
        raise KeyError(name)

    @property
    def node_names(self) -> tuple[str, ...]:
        return tuple(n.name for n in self.nodes)

    def state_dir_of(self, node: str) -> str:
        spec = self.node(node)
        return spec.state_dir or f"{self.cluster.state_dir}/{self.cluster.name}/{node}"

    @property
    def cluster_id(self) -> str:
        """Stable id of this cluster (name + store), used to tag its processes."""
        import hashlib

        return hashlib.sha256(f"{self.cluster.name}\0{self.cluster.store}".encode()).hexdigest()[:12]


def loc_to_path(loc: tuple[Any, ...]) -> str:
    """``('groups', 0, 'resources', 1, 'stop')`` -> ``groups[0].resources[1].stop``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part == "params":
            continue
        else:
            # NB: a key with spaces, dots or control characters is quoted as TOML writes it, so one error stays one line
            text = str(part)
            text = text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else json.dumps(text)
            out += ("." if out else "") + text
    return re.sub(r"\.\[", "[", out)

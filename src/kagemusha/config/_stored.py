"""Cluster configuration kept in the store: apply (validate, then store with a version), show, diff.

The stored record (key ``config`` under the cluster's root) holds the TOML
text, its SHA-256 and a version that increases by one per apply. Agents watch
it and apply the difference; an agent whose file differs from the stored
version refuses to start unless told to apply its file (``--apply``).

Relative script paths in the stored TOML resolve against the directory of the
config file of the agent that loads it (each machine keeps its scripts beside
its own ``cluster.toml``).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kagemusha.config._load import load_config, parse_config
from kagemusha.config._schema import Config
from kagemusha.errors import ConfigError

__all__ = ["StoredConfig", "parse_stored", "sha256_text", "summarize_diff"]



def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class StoredConfig:
    version: int
    toml: str
    sha256: str
    applied_at: float
    by: str
    revision: int = 0

    @classmethod
    def from_value(cls, value: str, revision: int = 0) -> StoredConfig:
        data: dict[str, Any] = json.loads(value)
        return cls(int(data["version"]), str(data["toml"]), str(data["sha256"]), float(data.get("applied_at", 0)),
                   str(data.get("by", "")), revision)

    def to_value(self) -> str:
        return json.dumps({"version": self.version, "toml": self.toml, "sha256": self.sha256,
                           "applied_at": self.applied_at, "by": self.by})

    @classmethod
    def new(cls, toml_text: str, version: int, by: str) -> StoredConfig:
        return cls(version, toml_text, sha256_text(toml_text), time.time(), by)


def parse_stored(stored: StoredConfig, *, local_path: str | Path) -> Config:
    """Validate a stored config as if it were the file at ``local_path`` (for relative paths).

    Raises:
        ConfigError: the stored text is invalid here (e.g. a script missing on this machine).
    """
    p = Path(local_path)
    try:
        data = tomllib.loads(stored.toml)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([(f"stored config v{stored.version}", f"invalid TOML: {exc}")]) from None
    return parse_config(data, source=str(p), base_dir=p.resolve().parent)


def summarize_diff(old: Config | None, new: Config) -> list[str]:
    """What applying ``new`` over ``old`` changes, one line per change, for people."""
    if old is None:
        return [f"first version: {len(new.nodes)} nodes, {len(new.groups)} groups"]
    out = []
    if old.cluster != new.cluster:
        for k in new.cluster.model_fields:
            a, b = getattr(old.cluster, k), getattr(new.cluster, k)
            if a != b:
                a, b = getattr(a, "value", a), getattr(b, "value", b)
                out.append(f"cluster.{k}: {a!r} -> {b!r} (takes effect when agents restart)")
    on, nn = {n.name: n for n in old.nodes}, {n.name: n for n in new.nodes}
    out += [f"node {n} added" for n in nn if n not in on] + [f"node {n} removed" for n in on if n not in nn]
    out += [f"node {n} changed" for n in nn if n in on and nn[n] != on[n]]
    og, ng = {g.name: g for g in old.groups}, {g.name: g for g in new.groups}
    out += [f"group {g} added" for g in ng if g not in og]
    out += [f"group {g} removed (stopped first)" for g in og if g not in ng]
    for g, b in ng.items():
        a = og.get(g)
        if a is not None and a != b:
            if a.resources != b.resources:
                out.append(f"group {g}: resources changed (restarted where it runs)")
            if a.monitors != b.monitors:
                names = sorted({m.name for m in a.monitors} ^ {m.name for m in b.monitors}
                               | {m.name for m in b.monitors if m in b.monitors and m not in a.monitors})
                out.append(f"group {g}: monitors changed ({', '.join(names)}; applied without restart)")
            for k in ("nodes", "failback", "autostart"):
                va, vb = getattr(a, k), getattr(b, k)
                if va != vb:
                    va, vb = (getattr(va, "value", va), getattr(vb, "value", vb))
                    out.append(f"group {g}.{k}: {va!r} -> {vb!r}")
    return out or ["no change"]


def text_diff(old_text: str, new_text: str, old_name: str, new_name: str) -> str:
    return "".join(difflib.unified_diff(old_text.splitlines(True), new_text.splitlines(True), old_name, new_name))


def load_text(path: str | Path) -> tuple[Config, str]:
    """Validate the file and return it with its exact text (what apply stores)."""
    cfg = load_config(path)
    return cfg, Path(path).read_text(encoding="utf-8")

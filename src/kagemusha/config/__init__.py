"""``cluster.toml``: schema and loading. Every error names the file, the key and what is expected."""

from kagemusha.config._load import config_warnings, load_config, parse_config, timing_errors
from kagemusha.config._schema import (
    ClusterSection,
    Config,
    Failback,
    FinalAction,
    GroupSpec,
    MonitorSpec,
    NodeSpec,
    ResourceSpec,
)

__all__ = [
    "ClusterSection",
    "Config",
    "Failback",
    "FinalAction",
    "GroupSpec",
    "MonitorSpec",
    "NodeSpec",
    "ResourceSpec",
    "config_warnings",
    "load_config",
    "parse_config",
    "timing_errors",
]

"""kagemusha: a high-availability cluster manager for application servers."""

from kagemusha.errors import (
    ConfigError,
    KagemushaError,
    LeaseExpired,
    ResourceFailed,
    StoreUnavailable,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "KagemushaError",
    "LeaseExpired",
    "ResourceFailed",
    "StoreUnavailable",
    "__version__",
]

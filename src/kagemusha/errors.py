"""The exceptions kagemusha raises, named by the recovery they call for.

::

    KagemushaError
    ├── ConfigError                 a config/properties file or flag is wrong; fix it, retry nowhere
    ├── StoreError
    │   ├── StoreUnavailable        could not ask the store (timeout, I/O, lock); "cannot prove ownership"
    │   └── LeaseExpired            the lease is gone; the holder must fence itself
    ├── ResourceError
    │   ├── NotConfigured           the resource's parameters cannot work anywhere
    │   ├── NotInstalled            this node lacks something (a device, a binary); another node may do
    │   ├── ResourceFailed          start/stop/probe failed; recover (restart, failover)
    │   └── ResourceTimeout         start/stop did not finish within its timeout; counts as failed
    ├── DomainError                 an application-server domain command failed
    │   └── ServiceUnavailable      a client's call through the VIP got no answer before its deadline
    └── ApiError                    a cluster API call failed (unreachable, refused, bad token)

"Lost the race" is never an exception: ``Store.cas`` returns ``False`` when
another node won; only "could not ask" raises ``StoreUnavailable``.
"""

from __future__ import annotations

__all__ = [
    "ApiError",
    "ConfigError",
    "DomainError",
    "KagemushaError",
    "LeaseExpired",
    "NotConfigured",
    "NotInstalled",
    "ResourceError",
    "ResourceFailed",
    "ResourceTimeout",
    "ServiceUnavailable",
    "StoreError",
    "StoreUnavailable",
]


class KagemushaError(Exception):
    """Base of every error kagemusha raises on purpose."""


class ConfigError(KagemushaError):
    """A configuration input is invalid.

    ``errors`` lists every problem as ``(location, message)``, where location is
    ``file: key.path`` (e.g. ``cluster.toml: groups[0].resources[1].stop``).
    Nothing has been applied when you get this.
    """

    def __init__(self, errors: list[tuple[str, str]] | str) -> None:
        if isinstance(errors, str):
            errors = [("", errors)]
        self.errors = errors
        super().__init__("\n".join(f"{loc}: {msg}" if loc else msg for loc, msg in errors))


class StoreError(KagemushaError):
    """Base of store errors."""


class StoreUnavailable(StoreError):
    """The store could not be asked (timeout, I/O error, locked file, lost connection).

    The caller cannot know whether the operation took effect. An agent treats it
    as "cannot prove ownership" and fences itself when its lease deadline comes.
    A lost compare-and-set is not this: ``cas`` returns ``False`` instead.
    """


class LeaseExpired(StoreError):
    """The lease asked for does not exist any more (expired or revoked).

    The keys it held are gone. A node that gets this must stop what it runs
    under that lease before doing anything else.
    """


class ResourceError(KagemushaError):
    """Base of resource driver errors."""


class NotConfigured(ResourceError):
    """The resource's parameters are wrong; no node can run it. Do not retry."""


class NotInstalled(ResourceError):
    """This node lacks what the resource needs (device, binary). Another node may run it."""


class ResourceFailed(ResourceError):
    """A start, stop or probe failed. Recovery (restart, failover) applies.

    A failed ``stop`` is never ordinary: the group may not start elsewhere until
    this node has fenced itself.
    """


class ResourceTimeout(ResourceFailed):
    """A start or stop did not finish within its timeout; its processes were killed."""


class DomainError(KagemushaError):
    """An application-server domain operation failed (message is one clear line)."""


class ServiceUnavailable(DomainError):
    """A domain's service did not answer before the client's deadline (``kagemusha.client``).

    Every attempt failed to connect, broke, timed out or was answered 502/503/504; the message
    gives the number of attempts and the last failure. A name that is not bound is a plain
    :class:`DomainError` instead (answered at once, not retried).
    """


class ApiError(KagemushaError):
    """A call to an agent's REST API failed: no node reachable, refused, or unauthorized."""

"""``domain`` resource: an application-server domain started and stopped by the cluster.

Usage in ``cluster.toml``::

    [[groups.resources]]
    name = "dom1"
    type = "domain"
    domain = "domain1"              # the domain's name (``name`` is the resource's)
    domaindir = "/data1/domains"    # its domains root, usually on the switchover disk
    wait_timeout = 300              # stop = ``stop-domain --force --wait_timeout 300``
    start_wait = 120                # seconds for the application to answer after start
    # registry = "/var/lib/kagemusha/domains"   # default: $KAGEMUSHA_DOMAIN_REGISTRY, ...

It drives the domain through :mod:`kagemusha.domains`, the library the
``kagemusha domain`` commands use: ``start`` is ``start-domain`` (returns once
the application answers), ``stop`` is ``stop-domain --force --wait_timeout``
(graceful, then every process of the domain is killed), ``fence`` kills every
process of the domain at once, and ``probe`` reads the domain's state.

The library calls block (they wait for ports, processes and files), so each one
runs in a worker thread. NB: a thread cannot be cancelled; when the caller's
timeout cancels ``start`` or ``stop``, the domain is killed (``kill_domain``) so
nothing is left running, as the resource contract asks.

``probe`` says ``STOPPED`` only when sure: the domain's state is "not running"
(no process of it is left), or its directory is absent here (the switchover
disk is not mounted) and no process of this mount namespace carries its tag.
"starting"/"stopping" are ``FAILED`` (a live process, but not serving).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import psutil
from pydantic import Field, field_validator

from kagemusha import _proc
from kagemusha._aio import within
from kagemusha.domains import (
    DEFAULT_START_WAIT,
    DEFAULT_WAIT_TIMEOUT,
    DomainLayout,
    DomainState,
    NodeRegistry,
    domain_state,
    kill_domain,
    start_domain,
    stop_domain,
)
from kagemusha.errors import DomainError, NotInstalled, ResourceFailed
from kagemusha.resources._base import DriverParams, Probe, Resource, StartEnv

__all__ = ["DomainParams", "DomainResource"]

T = TypeVar("T")
_ENV_TAG = "KAGEMUSHA_DOMAIN"  # the tag every process of a domain carries (its directory)
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"


def absolute_path(v: str | None) -> str | None:
    """Validator for path parameters of the domain driver and monitor: absolute, normalised."""
    if v is not None and not v.startswith("/"):
        raise ValueError("must be an absolute path")
    return os.path.normpath(v) if v is not None else None


class DomainParams(DriverParams):
    """Parameters of a ``domain`` resource."""

    #: The domain's name (``domain.name`` in its properties).
    domain: str = Field(pattern=_NAME)
    #: Its domains root (``--domaindir``), absolute; default: where the node's registry says it lives.
    domaindir: str | None = None
    #: ``stop-domain --force --wait_timeout``: seconds of graceful stop before every process is killed.
    wait_timeout: float = Field(default=DEFAULT_WAIT_TIMEOUT, ge=0)
    #: Seconds ``start`` waits for the application to answer (a domain not ready by then is killed).
    start_wait: float = Field(default=DEFAULT_START_WAIT, gt=0)
    #: The node's domain registry directory; default ``$KAGEMUSHA_DOMAIN_REGISTRY`` (then ``$KAGEMUSHA_HOME``).
    registry: str | None = None

    @field_validator("domain")
    @classmethod
    def _not_admin(cls, v: str) -> str:
        if v == "admin":
            raise ValueError("'admin' is the node's admin domain, not a domain the cluster moves")
        return v

    _absolute = field_validator("domaindir", "registry")(classmethod(lambda cls, v: absolute_path(v)))


def _mount_ns(pid: int | str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _tagged_here(domain_dir: Path) -> list[int]:
    """Pids of live processes tagged with ``domain_dir`` in *this* mount namespace.

    NB: the mount namespace filter matters where nodes share one pid namespace (the netns
    test harness): another node's domain on the same path is not ours.
    """
    mine = _mount_ns("self")
    tag = str(domain_dir)
    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        if proc.info["pid"] == os.getpid() or proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        with contextlib.suppress(psutil.Error, OSError):
            if proc.environ().get(_ENV_TAG) == tag and _mount_ns(proc.info["pid"]) == mine:
                found.append(proc.info["pid"])
    return found


def _survivors(domain_dir: Path) -> list[int]:
    """The domain's tagged processes still alive after SIGKILL, given half a second to go (``_tagged_here``
    already leaves zombies out: they run nothing)."""
    procs = []
    for pid in _tagged_here(domain_dir):
        with contextlib.suppress(psutil.Error):
            procs.append(psutil.Process(pid))
    if procs:
        _proc.wait_gone(procs, 0.5)
    return _tagged_here(domain_dir)


class DomainResource(Resource):
    """Starts and stops one domain (``otxadmin start-domain`` / ``stop-domain --force``)."""

    type_name: ClassVar[str] = "domain"
    Params = DomainParams
    default_start_timeout: ClassVar[float] = DEFAULT_START_WAIT + 30.0
    default_stop_timeout: ClassVar[float] = DEFAULT_WAIT_TIMEOUT + 30.0

    params: DomainParams

    # -- helpers --------------------------------------------------------------------------

    @property
    def _registry(self) -> NodeRegistry:
        # Read at each call: the node's env ([[nodes]] env), else the agent's own environment.
        path = self.params.registry or self.ctx.env.get("KAGEMUSHA_DOMAIN_REGISTRY")
        return NodeRegistry(path) if path else NodeRegistry.from_env()

    def _what(self) -> str:
        return f"{self.ctx.group}/{self.ctx.resource} (domain {self.params.domain})"

    def _expected_dir(self) -> Path | None:
        """Where the domain lives when its root is present: from ``domaindir`` or the registry's record."""
        if self.params.domaindir is not None:
            return Path(self.params.domaindir) / self.params.domain
        recorded = self._registry.load()["domains"].get(self.params.domain)
        return Path(recorded) / self.params.domain if recorded else None

    def _locate(self) -> DomainLayout | None:
        """The domain's layout, or None when it is not present on this node (disk not mounted)."""
        try:
            return self._registry.locate(self.params.domain, self.params.domaindir)
        except DomainError:
            return None

    async def _call(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def _guarded(self, fn: Callable[..., Any], **kwargs: object) -> None:
        """Run a blocking start/stop of the domain; a cancelled caller leaves nothing running.

        Raises:
            ResourceFailed: the library said no (``DomainError``).
        """
        worker = asyncio.ensure_future(
            self._call(fn, self.params.domain, self.params.domaindir, registry=self._registry, **kwargs)
        )
        try:
            await asyncio.shield(worker)
        except asyncio.CancelledError:
            await asyncio.shield(self._kill_after_cancel(worker))
            raise
        except DomainError as exc:
            raise ResourceFailed(f"{self._what()}: {exc}") from exc

    async def _kill_after_cancel(self, worker: asyncio.Future[Any]) -> None:
        """The caller gave up on a start/stop: let the thread finish briefly, then kill the domain."""
        with contextlib.suppress(BaseException):
            await within(asyncio.shield(worker), 2.0)
        await self._kill()

    async def _kill(self) -> list[int]:
        killed: list[int] = []
        if self._locate() is not None:
            with contextlib.suppress(DomainError):
                killed = await self._call(
                    kill_domain, self.params.domain, self.params.domaindir, registry=self._registry
                )
        where = self._expected_dir()
        if where is not None:
            left = await self._call(_tagged_here, where)
            for pid in left:
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
            killed.extend(left)
        return killed

    # -- the contract ------------------------------------------------------------------------

    async def start(self, env: StartEnv) -> None:
        if self._locate() is None:
            where = self.params.domaindir or "the node's registry"
            raise NotInstalled(
                f"{self._what()}: not present in {where} on this node (is the switchover disk mounted,"
                " and did this node run `kagemusha domain setup`?)"
            )
        await self._guarded(start_domain, wait=self.params.start_wait)
        self.ctx.log.info("group=%s resource=%s domain %s started", self.ctx.group, self.ctx.resource,
                          self.params.domain)

    async def stop(self, env: StartEnv) -> None:
        if self._locate() is None:
            where = self._expected_dir()
            left = await self._call(_tagged_here, where) if where is not None else []
            if left:
                raise ResourceFailed(
                    f"{self._what()}: its directory is gone but processes {left} of it still run here"
                )
            return
        await self._guarded(stop_domain, force=True, wait_timeout=self.params.wait_timeout)

    async def probe(self) -> Probe:
        layout = self._locate()
        if layout is None:
            where = self._expected_dir()
            if where is None:
                return Probe.stopped("domain unknown on this node")
            left = await self._call(_tagged_here, where)
            if left:
                return Probe.failed(f"domain directory {where} absent but processes {left} carry its tag")
            return Probe.stopped(f"domain not present here ({where.parent} not mounted)")
        try:
            state = await self._call(
                domain_state, self.params.domain, self.params.domaindir, registry=self._registry
            )
        except DomainError as exc:
            return Probe.failed(str(exc))
        if state is DomainState.RUNNING:
            return Probe.running(f"domain {self.params.domain} running")
        if state is DomainState.NOT_RUNNING:
            return Probe.stopped(f"domain {self.params.domain} not running")
        return Probe.failed(f"domain {self.params.domain} is {state.value}")

    async def fence(self) -> None:
        killed = await self._kill()
        if killed:
            self.ctx.log.warning("group=%s resource=%s fenced: killed domain %s processes %s",
                                 self.ctx.group, self.ctx.resource, self.params.domain, killed)
        where = self._expected_dir()
        if where is not None:
            # Proof, not hope: a process that survived SIGKILL (uninterruptible sleep) keeps the fence open.
            left = await self._call(_survivors, where)
            if left:
                raise ResourceFailed(f"domain {self.params.domain}: processes {left} still alive after SIGKILL")

    @classmethod
    def check_params(cls, params: DriverParams, *, base_dir: Path | None = None) -> list[tuple[str, str]]:
        assert isinstance(params, DomainParams)
        errors: list[tuple[str, str]] = []
        if params.registry is not None and Path(params.registry).exists() and not Path(params.registry).is_dir():
            errors.append(("registry", f"{params.registry} is not a directory"))
        return errors

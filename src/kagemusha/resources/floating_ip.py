"""``floating_ip``: the virtual IP clients use (the seed's ``fip1``).

Usage in ``cluster.toml``::

    [[groups.resources]]
    name = "fip1"
    type = "floating_ip"
    address = "198.18.0.100/24"
    interface = "eth0"

``start`` checks with an ARP probe that no other host answers for the
address (0.1 s by default), adds it with netlink and announces it with
gratuitous ARPs so that clients and switches move to this node at once (the
first before ``start`` returns, the repeats in the background). ``stop`` and ``fence`` remove
it. ``probe`` reads the kernel's address list of the interface.

The driver acts in the network namespace of the process that runs it (the
agent runs in its node's namespace).
"""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Interface
from typing import ClassVar

from pydantic import Field, field_validator
from pyroute2.netlink.exceptions import NetlinkError

from kagemusha import _os
from kagemusha.errors import NotConfigured, NotInstalled, ResourceFailed
from kagemusha.resources._base import DriverParams, Probe, ProbeState, Resource, ResourceContext, StartEnv

__all__ = ["FloatingIP", "FloatingIPParams"]


class FloatingIPParams(DriverParams):
    """Parameters of a ``floating_ip`` resource."""

    #: The address with its prefix length, e.g. ``198.18.0.100/24`` (IPv4).
    address: IPv4Interface
    #: The interface that carries it, e.g. ``eth0``.
    interface: str = Field(min_length=1, max_length=15)
    #: Gratuitous ARPs sent after the address is added (0 = none).
    arp_count: int = Field(default=3, ge=0, le=100)
    #: Seconds between gratuitous ARPs.
    arp_interval: float = Field(default=0.1, ge=0.0, le=10.0)
    #: Duplicate-address check before adding: probes sent (0 = no check; not recommended).
    probe_count: int = Field(default=2, ge=0, le=20)
    #: Seconds the duplicate-address check listens for an answer. NB: 0.1 s is plenty on a LAN (an ARP
    #: reply takes well under a millisecond); the check catches a *foreign* host on the address, while
    #: our own previous owner is kept off by the lease and fencing, not by this probe (docs/resources.md).
    probe_timeout: float = Field(default=0.1, gt=0.0, le=30.0)

    @field_validator("address", mode="before")
    @classmethod
    def _needs_prefix(cls, v: object) -> object:
        if isinstance(v, str) and "/" not in v:
            raise ValueError("give the prefix length too, e.g. 198.18.0.100/24")
        return v

    @field_validator("interface")
    @classmethod
    def _ifname(cls, v: str) -> str:
        if "/" in v or v.strip() != v or v in (".", ".."):
            raise ValueError(f"not an interface name: {v!r}")
        return v


class FloatingIP(Resource):
    """A floating IPv4 address on one interface of this node."""

    type_name = "floating_ip"
    Params = FloatingIPParams
    default_start_timeout: ClassVar[float] = 10.0
    default_stop_timeout: ClassVar[float] = 10.0
    independent: ClassVar[bool] = True

    params: FloatingIPParams

    def __init__(self, params: DriverParams, ctx: ResourceContext) -> None:
        if not isinstance(params, FloatingIPParams):
            raise NotConfigured(f"floating_ip: expected FloatingIPParams, got {type(params).__name__}")
        super().__init__(params, ctx)
        #: the repeated gratuitous ARPs of the last start, while they last
        self._announcer: asyncio.Task[None] | None = None

    @property
    def _what(self) -> str:
        return f"{self.params.address} on {self.params.interface}"

    async def _present(self) -> bool:
        try:
            addrs = await _os.list_addresses(self.params.interface)
        except _os.NoSuchInterface as exc:
            raise NotInstalled(f"floating_ip {self.params.address}: no interface {exc} on this node") from exc
        return any(a.ip == self.params.address.ip for a in addrs)

    async def start(self, env: StartEnv) -> None:
        p = self.params
        if await self._present():
            self.ctx.log.info("floating_ip %s already present", self._what)
            return
        # One ARP socket serves the check and the first announcement (opening and closing one costs
        # the kernel's RCU grace period, ~10 ms each here: see _os.ArpPort).
        port: _os.ArpPort | None = None
        try:
            if p.probe_count:
                try:
                    port = _os.ArpPort(p.interface)
                    owner = await port.probe(p.address.ip, count=p.probe_count, timeout=p.probe_timeout)
                except _os.NoSuchInterface as exc:
                    raise NotInstalled(f"floating_ip {p.address}: no interface {exc} on this node") from exc
                except OSError as exc:
                    raise ResourceFailed(f"floating_ip {p.address}: duplicate-address check failed: {exc}") from exc
                if owner:
                    raise ResourceFailed(
                        f"floating_ip {p.address}: address already in use by another host (MAC {owner}); not added"
                    )
            try:
                await _os.add_address(p.interface, p.address)
            except _os.NoSuchInterface as exc:
                raise NotInstalled(f"floating_ip {p.address}: no interface {exc} on this node") from exc
            except NetlinkError as exc:
                raise ResourceFailed(f"floating_ip {self._what}: netlink refused to add it: {exc}") from exc
            self.ctx.log.info("floating_ip %s added", self._what)
            if p.arp_count:
                # The first gratuitous ARP goes now: neighbours move to this node before start returns. The
                # repeats (for a frame lost on the way) go on in the background, so that nothing after this
                # resource waits (arp_count - 1) * arp_interval for them; stop and fence end them first.
                await self._announce(1, port=port)
                if p.arp_count > 1:
                    await self._end_announcer()
                    self._announcer = asyncio.create_task(
                        self._announce(p.arp_count - 1, first_wait=p.arp_interval), name=f"garp-{p.address.ip}")
        finally:
            if port is not None:
                port.close()

    async def _announce(self, count: int, first_wait: float = 0.0, port: _os.ArpPort | None = None) -> None:
        """``count`` gratuitous ARPs, on ``port`` when given (the start's), else on a socket of their own."""
        p = self.params
        try:
            if first_wait:
                await asyncio.sleep(first_wait)
            if port is not None:
                await port.announce(p.address.ip, count=count, interval=p.arp_interval)
            else:
                await _os.arp_announce(p.interface, p.address.ip, count=count, interval=p.arp_interval)
        except (OSError, _os.NoSuchInterface) as exc:
            # The address is up and serves; neighbours will learn it by ordinary ARP.
            self.ctx.log.warning("floating_ip %s: gratuitous ARP failed: %s", self._what, exc)

    async def _end_announcer(self) -> None:
        """Stop the background gratuitous ARPs (before the address goes: never announce what we gave up)."""
        task, self._announcer = self._announcer, None
        if task is None:
            return
        task.cancel()
        await asyncio.wait({task})  # NB: wait, not await: the announcer's cancellation is not ours

    async def stop(self, env: StartEnv) -> None:
        await self._remove()

    async def fence(self) -> None:
        await self._remove()
        probe = await self.probe()
        if probe.state != ProbeState.STOPPED:
            raise ResourceFailed(f"floating_ip {self._what}: still present after removal ({probe.reason})")

    async def _remove(self) -> None:
        await self._end_announcer()
        try:
            removed = await _os.remove_address(self.params.interface, self.params.address)
        except NetlinkError as exc:
            raise ResourceFailed(f"floating_ip {self._what}: netlink refused to remove it: {exc}") from exc
        if removed:
            self.ctx.log.info("floating_ip %s removed", self._what)

    async def probe(self) -> Probe:
        try:
            addrs = await _os.list_addresses(self.params.interface)
        except _os.NoSuchInterface:
            # No such interface in this namespace: the address cannot be up here.
            return Probe.stopped(f"no interface {self.params.interface}")
        except (OSError, NetlinkError) as exc:
            return Probe.failed(f"cannot read addresses of {self.params.interface}: {exc}")
        for a in addrs:
            if a.ip == self.params.address.ip:
                if a.network.prefixlen != self.params.address.network.prefixlen:
                    return Probe.running(f"{a} (prefix differs from {self.params.address})")
                return Probe.running(self._what)
        return Probe.stopped(f"{self.params.address.ip} not on {self.params.interface}")

"""The per-node agent: observe -> decide (pure) -> act, plus the lease keeper and the monitors.

Tasks (all in one ``asyncio.TaskGroup`` the agent owns; no orphan tasks):

- lease keeper: renews the node's lease every ``heartbeat_interval``. ``valid_until`` is counted from
  when the last successful renewal was *sent*, so it is never later than the store's own expiry. A
  renewal attempt is made only if it can fail and still leave ``fence_margin`` before
  ``valid_until``; otherwise the node fences at once (the timing rule in ``config/_load.py`` makes
  sure a healthy node always gets its attempts in). It feeds the watchdog (see ``_feed_watchdog``).
- decision loop: every ``heartbeat_interval`` (or at once when something changes) builds a ``ClusterView``,
  calls ``decide`` and carries out the plan's actions as they are. It reads the cluster's keys when woken
  by a change, and on a timer wake-up only when its last read may be out of date (``_snapshot_current``):
  an idle agent does not read the whole prefix 7 times a second.
- watcher: watches the cluster's keys from the revision of the last read on, and kicks the decision loop
  at every change (on the local store a dead node's lease expiry arrives at the instant it expires).
- group workers: one task at a time per group for start/stop/restart.
- monitors: one task per monitor of each group that runs here.

Safety (docs/fencing.md): an action runs only under the lease it was decided under; a fence is done
only when proven (every process gone, every address removed, every disk unmounted). Until then the
group stays ``fencing`` here, the lease is neither revoked nor given up on purpose, the fence is
retried, and the watchdog is no longer fed once the fence stops making progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kagemusha._aio import cancel_and_wait, within
from kagemusha._clock import Clock, SystemClock
from kagemusha.agent._groups import GroupRuntime, StopFailed
from kagemusha.cluster import (
    Action,
    ActionKind,
    ClusterView,
    EventKind,
    GroupView,
    LocalState,
    MonitorRequest,
    Plan,
    decide,
)
from kagemusha.config import Config
from kagemusha.config._load import retry_backoff
from kagemusha.control import GroupStatistics, MonitorStatistics, NodeStatistics
from kagemusha.errors import ConfigError, KagemushaError, LeaseExpired, StoreUnavailable
from kagemusha.model import ClpEvent
from kagemusha.protocol import ClusterRecords, Snapshot
from kagemusha.resources import ProbeState
from kagemusha.store import Store, open_cluster_store
from kagemusha.store._counting import CountingStore

__all__ = ["APPLIED_CONFIG", "Agent"]

log = logging.getLogger("kagemusha.agent")
EVENTS_KEPT = 500
#: In the node's state directory: the config the agent last applied, for the supervisor's fence.
APPLIED_CONFIG = "applied-config.json"
#: Pause between two attempts of an incomplete fence.
FENCE_RETRY = 0.1
#: The decision loop reads the whole cluster prefix at least this often, even when its watch says nothing
#: changed (a safety net for a watch that stalls without an error).
RESYNC_EVERY = 1.0
#: The decision loop's period while the last cycle found nothing to do (``_cycle``): changes wake it at once.
IDLE_WAKE = 1.0


class Agent:
    """One node's agent. ``await Agent(config, "n1").run()`` runs until it leaves.

    Args:
        config: the validated cluster config.
        node: this node's name (must be in ``config.nodes``).
        store: an open store (default: opened from ``config.cluster.store``).
        serve_api: serve the REST API and web UI at the node's address.
        apply_config: store this config file when it differs from the applied one.
        clock: where time comes from (default: the machine's; the simulation gives a virtual one).
        watchdog: a watchdog object (``arm``/``ping``/``disarm``; default: the device in the config).
    """

    def __init__(
        self,
        config: Config,
        node: str,
        *,
        store: Store | None = None,
        serve_api: bool = True,
        apply_config: bool = False,
        clock: Clock | None = None,
        watchdog: Any = None,
    ) -> None:
        config.node(node)  # KeyError for an unknown node: the CLI checks first
        self.clock: Clock = clock or SystemClock()
        self.config = config
        self.node = node
        base = str(Path(config.source).resolve().parent) if config.source else None
        #: counts this agent's own writes (``_snapshot_current``)
        self.store = CountingStore(store or open_cluster_store(config.cluster, base_dir=base))
        self.records = ClusterRecords(self.store, config.cluster.name, by=f"agent {node}", source=node, clock=self.clock)
        self.serve_api = serve_api
        self.apply_config = apply_config
        self.config_sha = ""
        self.config_version = 0
        self._bad_config_sha = ""
        #: group -> its new definition, waiting for the old one to stop (``_apply_replacements``)
        self._replacements: dict[str, GroupRuntime] = {}
        c = config.cluster
        from kagemusha._watchdog import watchdog_timeout

        self.watchdog_seconds = watchdog_timeout(c.heartbeat_timeout, c.store_timeout, c.fence_margin)
        self.watchdog: Any = watchdog
        if watchdog is None and c.watchdog is not None:
            from kagemusha._watchdog import Watchdog

            self.watchdog = Watchdog(c.watchdog, self.watchdog_seconds)
        self.groups = {g.name: GroupRuntime.build(config, g, node) for g in config.groups if node in g.nodes}
        self.lease_id: int | None = None
        self._stale_leases: set[int] = set()
        self.valid_until = 0.0  # monotonic
        self._watchdog_fires_at: float | None = None  # monotonic: last ping + watchdog_seconds, while armed
        self.joined_at = 0.0  # wall
        self.leaving = False
        self.fenced_reason = ""
        self.stop_reason = ""
        #: a fence of every group is running (lease loss, stop failure, leave requested twice)
        self._fencing_all = False
        #: monotonic time the current fence last made progress (None: no fence running)
        self._fence_progress_at: float | None = None
        self._fence_now = ""
        self._kick = asyncio.Event()
        self._done = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._notes: dict[str, str] = {}
        self.snapshot = Snapshot()
        #: the running watch delivers every change from this revision on (None: no watch running)
        self._watch_from: int | None = None
        #: the highest revision the watch delivered
        self._seen_rev = 0
        #: ``store.writes`` just before the last read began, and when that read was done (monotonic)
        self._writes_at_read = -1
        self._read_at = 0.0
        self._have_read = asyncio.Event()
        #: the last cycle found nothing to do and nothing pending (the loop then wakes every IDLE_WAKE)
        self._idle = False
        self._stats: dict[str, float] = {"lease_renew_seconds": 0.0, "store_request_seconds": 0.0, "fences": 0}
        self.on_cycle: list[Callable[[], Awaitable[None] | None]] = []

    # -- public -------------------------------------------------------------

    async def run(self) -> int:
        """Run until the agent leaves; returns the process exit code (0 clean, 1 after a fence/stop failure)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_leave, f"signal {signal.Signals(sig).name}")
            except (NotImplementedError, RuntimeError, ValueError):
                pass
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGUSR1, self.dump_tasks)
        Path(self.config.state_dir_of(self.node)).mkdir(parents=True, exist_ok=True)
        # NB: probe before anything that may refuse to start (a config that differs from the applied
        # one exits 2): leftovers of a previous run are fenced whatever happens next.
        await self._initial_probe()
        await self._check_stored_config()
        log.info("agent starting", extra={"kv": {"cluster": self.config.cluster.name, "groups": ",".join(self.groups)}})
        from kagemusha.config import config_warnings

        for key, msg in config_warnings(self.config):
            log.warning("config warning", extra={"kv": {"key": key, "warning": msg}})
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._lease_keeper(), name="lease-keeper")
                tg.create_task(self._decision_loop(), name="decision-loop")
                tg.create_task(self._watcher(), name="watcher")
                if self.serve_api:
                    from kagemusha.api import serve

                    tg.create_task(serve(self, self._api_control), name="api")
                await self._done.wait()
                raise _Exit()
        except* _Exit:
            pass
        finally:
            await self._shutdown()
        log.info("agent stopped", extra={"kv": {"reason": self.stop_reason or "left"}})
        return 1 if self.fenced_reason and not self.leaving else 0

    def dump_tasks(self) -> None:
        """SIGUSR1: log where every task of the agent waits (for an agent that does not do what it should)."""
        import io

        for task in asyncio.all_tasks():
            buf = io.StringIO()
            task.print_stack(limit=12, file=buf)
            log.warning("task", extra={"kv": {"task": task.get_name(), "stack": buf.getvalue()}})

    def request_leave(self, why: str = "requested") -> None:
        """Graceful leave (SIGTERM): stop own groups, release them, revoke the lease, exit.

        A second request while leaving fences at once (proven, like every fence) and exits.
        """
        if self.leaving:
            log.warning("second leave request: fencing now", extra={"kv": {"why": why}})
            self._fence_now = "leave requested twice"
            self._kick.set()
            return
        log.info("leaving the cluster", extra={"kv": {"why": why}})
        self.leaving = True
        self._kick.set()

    def is_member(self) -> bool:
        """True while this node holds its lease and is not fencing (for ``GET /health``)."""
        return self.lease_id is not None and not self.fenced_reason and not self._fencing_all

    def runs(self, group: str) -> bool:
        """True when this node owns ``group`` and it is online here (for ``GET /groups/<g>/primary``)."""
        rt = self.groups.get(group)
        owner = self.snapshot.group(group).owner
        return (
            rt is not None and rt.local == LocalState.RUNNING and self.is_member()
            and owner is not None and owner.node == self.node
        )

    def statistics(self) -> NodeStatistics:
        """A frozen snapshot of this agent's counters (the API's ``/metrics`` reads it)."""
        groups = tuple(
            GroupStatistics(
                name=name, local=rt.local.value, starts=int(rt.stats["starts"]), failovers=int(rt.stats["failovers"]),
                restarts=int(rt.stats["restarts"]), last_start_seconds=float(rt.stats["last_start_seconds"]),
                last_failover_seconds=float(rt.stats["last_failover_seconds"]),
                monitors=tuple(MonitorStatistics(m.spec.name, m.total_failures, m.consecutive, m.last_ok) for m in rt.monitors),
            )
            for name, rt in self.groups.items()
        )
        return NodeStatistics(
            node=self.node, member=self.is_member(), fenced_reason=self.fenced_reason,
            fence_incomplete=tuple(n for n, rt in self.groups.items() if rt.local == LocalState.FENCING),
            lease_renew_seconds=self._stats["lease_renew_seconds"],
            store_request_seconds=self._stats["store_request_seconds"], fences=int(self._stats["fences"]), groups=groups,
        )

    def _api_control(self) -> Any:
        """The control service the API uses: a store client of its own, opened like the agent's (TLS, auth)."""
        from kagemusha.control import ClusterControl

        c = self.config.cluster
        base = str(Path(self.config.source).resolve().parent) if self.config.source else None
        store = open_cluster_store(c, base_dir=base, timeout=max(c.store_timeout, 2.0))
        return ClusterControl(lambda: self.config, store, "api", wait_zero_returns=True)

    # -- configuration in the store ------------------------------------------------

    async def _check_stored_config(self) -> None:
        """Refuse to run a config that differs from the applied one, unless told to apply it.

        Raises:
            ConfigError: the file differs from the stored version and ``apply_config`` is off.
            StoreUnavailable: the store cannot be asked.
        """
        from kagemusha.config._stored import sha256_text
        from kagemusha.control import ActionFailed, apply_config, read_stored_config

        if not self.config.source:
            return
        text = Path(self.config.source).read_text(encoding="utf-8")
        mine = sha256_text(text)
        rec = await read_stored_config(self.store, self.config.cluster.name)
        if rec is None or (rec.sha256 != mine and self.apply_config):
            try:
                rec, summary = await apply_config(self.store, self.config.source, by=f"agent {self.node}")
                log.info("config applied", extra={"kv": {"version": rec.version, "changes": "; ".join(summary)}})
            except ActionFailed:  # another agent applied at the same moment: compare with what it stored
                rec = await read_stored_config(self.store, self.config.cluster.name)
        if rec is None:
            raise StoreUnavailable("the stored config vanished while starting")
        if rec.sha256 != mine:
            raise ConfigError([(
                self.config.source,
                (f"differs from the config applied to cluster {self.config.cluster.name} (version {rec.version}, "
                 f"by {rec.by}): run `kagemusha config diff {self.config.source}`, then `kagemusha config apply` "
                 "it, or start the agent with --apply"),
            )])
        self.config_sha, self.config_version = rec.sha256, rec.version
        if not self._runs_text(text):
            # NB: the file changed between the parse of self.config and this read (a `config apply` at that
            # moment): the sha just compared is not the running config's. Forgotten, so the stored config is
            # applied as a change at the first read (found by the simulation: the change was lost for good).
            self.config_sha = ""
        self._keep_applied(rec.to_value())

    def _runs_text(self, text: str) -> bool:
        """Whether the running config is what ``text`` says (same content as far as the agent is concerned)."""
        from kagemusha.config._stored import StoredConfig, parse_stored

        try:
            other = parse_stored(StoredConfig.new(text, 0, "file"), local_path=self.config.source)
        except (ConfigError, ValueError, KeyError, TypeError):
            return False
        mine = self.config
        return (other.cluster, other.nodes, other.groups) == (mine.cluster, mine.nodes, mine.groups)

    def _keep_applied(self, value: str) -> None:
        """Keep the applied config where the supervisor reads it without the store (its fence after a crash)."""
        path = Path(self.config.state_dir_of(self.node)) / APPLIED_CONFIG
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(value, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            log.error("cannot keep the applied config for the supervisor", extra={"kv": {"path": str(path), "error": str(exc)}})

    async def _maybe_reconfigure(self, record: dict[str, Any] | None) -> None:
        """Apply a newly stored config version: the difference, without restarting the agent."""
        from kagemusha.config._stored import StoredConfig, parse_stored, summarize_diff

        if not record or record.get("sha256") in (self.config_sha, self._bad_config_sha) or not self.config.source:
            return
        try:
            rec = StoredConfig.from_value(json.dumps(record))
            new = parse_stored(rec, local_path=self.config.source)
        except (ConfigError, ValueError, KeyError, TypeError) as exc:
            self._bad_config_sha = str(record.get("sha256"))
            log.error("stored config refused on this node; keeping the running one",
                      extra={"kv": {"version": record.get("version"), "error": str(exc)}})
            return
        old = self.config
        if new.cluster.name != old.cluster.name or self.node not in new.node_names:
            self._bad_config_sha = rec.sha256
            log.error("stored config does not name this cluster/node; keeping the running one",
                      extra={"kv": {"version": rec.version}})
            return
        changes = summarize_diff(old, new)
        log.info("config changed", extra={"kv": {"version": rec.version, "changes": "; ".join(changes)}})
        self.config = new
        self.config_sha, self.config_version = rec.sha256, rec.version
        self._keep_applied(rec.to_value())
        wanted = {g.name: g for g in new.groups if self.node in g.nodes}
        for name, rt in list(self.groups.items()):
            if name not in wanted:
                self._replacements.pop(name, None)
                rt.retiring = True
                await self._cancel_monitors(rt)
        self._retire()
        for name, spec in wanted.items():
            fresh = GroupRuntime.build(new, spec, self.node)
            cur = self.groups.get(name)
            if cur is None:
                self.groups[name] = fresh
                continue
            rt = cur
            if rt.spec.resources != spec.resources:
                self._replacements[name] = fresh
            else:
                self._replacements.pop(name, None)
                rt.spec = spec
                # Monitors are rebuilt from the new spec (interval, timeout, ...); counts of kept ones stay.
                old_mons = {m.spec.name: m for m in rt.monitors}
                rt.monitors = fresh.monitors
                for m in rt.monitors:
                    o = old_mons.get(m.spec.name)
                    if o is not None:
                        m.total_failures, m.last_ok, m.last_detail, m.last_at = o.total_failures, o.last_ok, o.last_detail, o.last_at
                if rt.local == LocalState.RUNNING and rt.worker is None:
                    await self._cancel_monitors(rt)
                    self._start_monitors(rt)
        self._apply_replacements()

    def _apply_replacements(self) -> None:
        """Groups whose resources a config apply changed: the new definition replaces the old once it is stopped.

        A running one is stopped in place first (``_replace``). NB: the replacement stays pending until the
        old definition is stopped, whoever stops it: a fence may cancel the ``_replace`` worker (found by
        the simulation: the node then ran the old resource set for good).
        """
        for name, fresh in list(self._replacements.items()):
            rt = self.groups.get(name)
            if rt is None or rt.retiring:
                del self._replacements[name]
            elif rt.worker is not None:
                continue
            elif rt.local == LocalState.STOPPED:
                del self._replacements[name]
                fresh.env = rt.env
                self.groups[name] = fresh
            elif rt.local == LocalState.RUNNING:
                self._spawn(rt, self._replace(rt))

    async def _stop_in_place(self, rt: GroupRuntime) -> bool:
        """Stop a group's monitors and resources without releasing it. False (STOP_FAILED) if a stop failed."""
        await self._cancel_monitors(rt)
        rt.local = LocalState.STOPPING
        try:
            await rt.stop_resources()
        except StopFailed as exc:
            rt.local, rt.reason = LocalState.STOP_FAILED, str(exc)
            return False
        rt.local = LocalState.STOPPED
        return True

    async def _replace(self, rt: GroupRuntime) -> None:
        """Resources of a running group changed: stop it with the old definition; the new one starts."""
        if await self._stop_in_place(rt):
            fresh = self._replacements.pop(rt.name, None)
            if fresh is not None and self.groups.get(rt.name) is rt:
                fresh.env = rt.env
                self.groups[rt.name] = fresh

    async def _cancel_monitors(self, rt: GroupRuntime) -> None:
        tasks, rt.monitor_tasks = rt.monitor_tasks, []
        await cancel_and_wait(tasks)

    # -- lease ----------------------------------------------------------------

    def _lease_usable(self) -> bool:
        """The lease is held and may still be acted under (not within ``fence_margin`` of its end)."""
        return (
            self.lease_id is not None and not self._fencing_all
            and self.clock.monotonic() < self.valid_until - self.config.cluster.fence_margin
        )

    async def _grant(self) -> None:
        c = self.config.cluster
        sent = self.clock.monotonic()
        lease = await within(self.store.grant_lease(c.heartbeat_timeout), c.store_timeout)
        await self._join(lease.id)
        self.valid_until = sent + min(lease.ttl, c.heartbeat_timeout)
        self.lease_id = lease.id
        # A lease we gave up while the store was unreachable may still hold our keys (etcd keeps leases
        # across its restarts): we fenced, so release them now rather than wait for their expiry.
        for old in list(self._stale_leases):
            try:
                await within(self.store.revoke(old), c.store_timeout)
                self._stale_leases.discard(old)
            except (StoreUnavailable, TimeoutError):
                pass
        if not self.joined_at:
            self.joined_at = self.clock.time()
        self.fenced_reason = ""
        log.info("joined the cluster", extra={"kv": {"lease": lease.id, "ttl": lease.ttl}})
        await self._event(None, EventKind.NODE_UP, f"node {self.node} joined")
        self._kick.set()

    async def _join(self, lease: int) -> None:
        """Write this node's member key under ``lease`` (within ``store_timeout``)."""
        address = self.config.node(self.node).address
        await within(self.records.join(self.node, lease=lease, address=address, pid=os.getpid()),
                     self.config.cluster.store_timeout)

    async def _lease_keeper(self) -> None:
        c = self.config.cluster
        backoff = retry_backoff(c.heartbeat_interval, c.store_timeout)
        while not self._done.is_set():
            if self.lease_id is None:
                if self.leaving:
                    self._done.set()
                    return
                if self._fencing_all or any(rt.local == LocalState.FENCING for rt in self.groups.values()):
                    # NB: no new lease while a fence is incomplete: the node would join with live leftovers.
                    await self.clock.sleep(c.heartbeat_interval)
                    continue
                try:
                    await self._grant()
                except (StoreUnavailable, TimeoutError, LeaseExpired) as exc:
                    self._note("lease", f"cannot get a lease: {exc or 'timeout'}")
                    await self.clock.sleep(c.heartbeat_interval)
                    continue
            await self.clock.sleep(c.heartbeat_interval)
            lease = self.lease_id
            if lease is None:
                continue
            while True:
                sent = self.clock.monotonic()
                # Attempt only if a failed attempt still leaves fence_margin before the lease may end
                # (and before the watchdog fires: the clean fence must come first, docs/fencing.md).
                if sent + c.store_timeout + c.fence_margin > self._renew_deadline():
                    await self._lose_lease(lease, "cannot renew the lease in time")
                    break
                try:
                    ttl = await within(self.store.keepalive(lease), c.store_timeout)
                except LeaseExpired:
                    await self._lose_lease(lease, "lease expired at the store")
                    break
                except (StoreUnavailable, TimeoutError) as exc:
                    # NB: a store that refuses at once must not make this a hot loop, so the next attempt
                    # waits the back-off; whether it may be made at all is decided *before* waiting: a
                    # retry that could not fail in time means fencing now, not after the pause
                    # (tests/agent/test_timing_rule.py; the rule counts the pause: retry_backoff).
                    if self.clock.monotonic() + backoff + c.store_timeout + c.fence_margin > self._renew_deadline():
                        await self._lose_lease(lease, f"cannot renew the lease in time: {exc or 'store timeout'}")
                        break
                    log.warning("lease renewal failed, retrying", extra={"kv": {"error": str(exc) or "timeout"}})
                    self._feed_watchdog()
                    await self.clock.sleep(backoff)
                    continue
                if self.lease_id != lease:
                    break  # fenced meanwhile
                self._stats["lease_renew_seconds"] = self.clock.monotonic() - sent
                # NB: counted from the send, never from the answer (the store may have reset its
                # TTL at any instant in between): tests/testing/test_simulate.py breaks this on purpose.
                self.valid_until = sent + min(ttl, c.heartbeat_timeout)
                self._feed_watchdog()
                break

    def _renew_deadline(self) -> float:
        """When a failed renewal must have left ``fence_margin`` for the fence: the lease's end, or the
        watchdog's if it comes first. NB: retrying until the lease's end made every store outage a
        watchdog reset (W = floor(T - S - M) fires before T - M) instead of a clean fence and disarm."""
        if self._watchdog_fires_at is None:
            return self.valid_until
        return min(self.valid_until, self._watchdog_fires_at)

    async def _lose_lease(self, lease: int, why: str) -> None:
        """The lease cannot be proven any more: fence everything (proven), then forget the lease."""
        await self._fence_all(f"cannot renew lease: {why}")
        if self.lease_id == lease:
            self.lease_id = None
            self._stale_leases.add(lease)

    def _feed_watchdog(self) -> None:
        """Feed the watchdog while it is safe and useful; disarm it when the node runs nothing.

        Fed only if the device, counting from now, fires ``fence_margin`` before the lease may expire at the
        store (``now + watchdog_seconds + fence_margin <= valid_until``), and not while a fence has stopped
        making progress:
        then the machine resets before the lease expires and a standby starts (docs/fencing.md).
        """
        wd = self.watchdog
        if wd is None:
            return
        try:
            if not any(rt.local != LocalState.STOPPED for rt in self.groups.values()) and not self._fencing_all:
                wd.disarm()
                self._watchdog_fires_at = None
                return
            if self._fence_stuck():
                self._note("watchdog", "watchdog not fed: the fence makes no progress")
                return
            if self.clock.monotonic() + self.watchdog_seconds + self.config.cluster.fence_margin > self.valid_until:
                return
            wd.ping()
            self._watchdog_fires_at = self.clock.monotonic() + self.watchdog_seconds
        except OSError as exc:
            log.error("watchdog device error", extra={"kv": {"device": getattr(wd, "path", "?"), "error": str(exc)}})

    def _fence_stuck(self) -> bool:
        at = self._fence_progress_at
        if at is None:
            return False
        c = self.config.cluster
        return self.clock.monotonic() - at > max(c.fence_margin, c.heartbeat_interval)

    def _arm_watchdog(self) -> bool:
        """Arm (and feed) the watchdog before anything starts here. False: nothing may start."""
        wd = self.watchdog
        if wd is None:
            return True
        if self.clock.monotonic() + self.watchdog_seconds + self.config.cluster.fence_margin > self.valid_until:
            return False  # too close to the lease's end: the next renewal makes it safe
        try:
            wd.arm()
            wd.ping()
            self._watchdog_fires_at = self.clock.monotonic() + self.watchdog_seconds
        except OSError as exc:
            self._note("watchdog", f"cannot arm the watchdog {getattr(wd, 'path', '?')}: {exc}; starting nothing")
            log.error("cannot arm the watchdog: starting nothing",
                      extra={"kv": {"device": getattr(wd, "path", "?"), "error": str(exc)}})
            return False
        return True

    async def _fence_groups(self, rts: list[GroupRuntime], reason: str) -> list[str]:
        """One fence attempt of ``rts``: kill/remove/unmount, no scripts. Returns what is not proven gone."""
        for rt in rts:
            await self._cancel_worker(rt)
            if rt.local != LocalState.STOPPED or rt.worker is not None:
                rt.reason = f"fenced: {reason}"
            rt.local = LocalState.FENCING
        results = await asyncio.gather(*(rt.fence() for rt in rts), return_exceptions=True)
        left: list[str] = []
        for rt, res in zip(rts, results):
            problems = [f"{rt.name}: fence error {res}"] if isinstance(res, BaseException) else list(res)
            if problems:
                rt.reason = "fence incomplete: " + "; ".join(problems)
                left += [f"{rt.name}: {p}" for p in problems]
            else:
                rt.local = LocalState.STOPPED
        return left

    async def _fence_group(self, rt: GroupRuntime, reason: str) -> None:
        """One fence attempt of one group (the next cycle tries again while it is not proven)."""
        left = await self._fence_groups([rt], reason)
        if left:
            log.error("fence incomplete: retrying", extra={"kv": {"group": rt.name, "left": "; ".join(left)}})
        self._feed_watchdog()

    async def _fence_all(self, reason: str) -> None:
        """Fence every group until proven; never gives up (the watchdog is the escalation).

        While incomplete the groups stay ``fencing`` here, the lease is kept (never revoked), no new
        lease is taken, and status, the log and the event list say so.
        """
        if self._fencing_all:
            return
        t0 = self.clock.monotonic()
        self._fencing_all = True
        self._fence_progress_at = t0
        self.fenced_reason = reason
        self._stats["fences"] += 1
        try:
            last = None
            said = False
            while True:
                left = await self._fence_groups(list(self.groups.values()), reason)
                if not left:
                    break
                if last is None or len(left) < len(last):
                    self._fence_progress_at = self.clock.monotonic()
                last = left
                if not said:
                    said = True
                    log.error("fence incomplete: keeping the claim and retrying",
                              extra={"kv": {"decision": "fence", "reason": reason, "left": "; ".join(left)}})
                    await self._event(None, EventKind.FENCE_INCOMPLETE, f"{reason}: " + "; ".join(left))
                    for rt in self.groups.values():
                        if rt.local == LocalState.FENCING:
                            await self._write_status(rt)
                self._feed_watchdog()
                await self.clock.sleep(FENCE_RETRY)
        finally:
            self._fencing_all = False
            self._fence_progress_at = None
        log.error(
            "fenced: stopped every resource",
            extra={"kv": {"decision": "fence", "reason": reason, "seconds": round(self.clock.monotonic() - t0, 3)}},
        )
        self._feed_watchdog()  # runs nothing now: disarms

    # -- observe / decide / act -------------------------------------------------

    async def _watcher(self) -> None:
        """Kick the decision loop when anything under the cluster's root changes.

        The watch starts from the revision of the last read + 1, so together with that read it covers
        every change; ``_watch_from`` says so to ``_snapshot_current`` while the watch runs.
        """
        await self._have_read.wait()
        while not self._done.is_set():
            start = self.snapshot.revision + 1
            self._watch_from = start
            try:
                async for ev in self.records.watch(start_revision=start):
                    if self._done.is_set():
                        break  # NB: leaving: never rely on cancellation alone to end this loop
                    self._seen_rev = max(self._seen_rev, ev.revision)
                    self._kick.set()
            except StoreUnavailable:
                pass
            finally:
                self._watch_from = None
            self._kick.set()  # read again: changes may have been missed while the watch was broken
            await self.clock.sleep(self.config.cluster.heartbeat_interval)

    def _snapshot_current(self) -> bool:
        """True when the last read still shows the store as it is: no change since, by the watch or by us.

        That is: a watch runs from no later than the read's revision + 1 and delivered nothing newer than
        it, this agent wrote nothing since the read began (its own writes reach its watch a moment later),
        and the read is less than ``RESYNC_EVERY`` old.
        """
        snap = self.snapshot
        return (
            self._watch_from is not None and self._watch_from <= snap.revision + 1
            and self._seen_rev <= snap.revision
            and self.store.writes == self._writes_at_read
            and self.clock.monotonic() - self._read_at < RESYNC_EVERY
        )

    async def _decision_loop(self) -> None:
        c = self.config.cluster
        while not self._done.is_set():
            try:
                await within(self._kick.wait(), IDLE_WAKE if self._idle else c.heartbeat_interval)
            except TimeoutError:
                pass
            kicked = self._kick.is_set()
            self._kick.clear()
            if self._fence_now:
                await self._leave_fenced(self._fence_now)
                return
            await self._cycle(read=kicked or not self._snapshot_current())
            for cb in self.on_cycle:
                r = cb()
                if r is not None:
                    await r
            if self.leaving and self._left():
                if self.lease_id is not None:
                    try:
                        await within(self.store.revoke(self.lease_id), c.store_timeout)
                    except (StoreUnavailable, TimeoutError):
                        pass
                    self.lease_id = None
                self.stop_reason = "left the cluster"
                self._done.set()
                return

    async def _leave_fenced(self, reason: str) -> None:
        """Fence everything (proven), then give up the lease and exit."""
        await self._fence_all(reason)
        self.stop_reason = reason
        await self._event(None, EventKind.NODE_FENCED, reason)
        lease, self.lease_id = self.lease_id, None
        if lease is not None:
            try:
                await within(self.store.revoke(lease), self.config.cluster.store_timeout)
            except (StoreUnavailable, TimeoutError):
                self._stale_leases.add(lease)
        self._done.set()

    def _left(self) -> bool:
        busy = any(rt.local != LocalState.STOPPED or rt.worker is not None for rt in self.groups.values())
        owned = any(
            (rec.owner is not None and rec.owner.node == self.node) for rec in self.snapshot.groups.values()
        )
        return not busy and (not owned or self.lease_id is None)

    async def _cycle(self, *, read: bool = True) -> None:
        """Decide and act once; with ``read`` (else the last snapshot is current) from a fresh read."""
        c = self.config.cluster
        t0 = self.clock.monotonic()
        self._idle = False
        self._apply_replacements()
        epochs = {name: rt.epoch for name, rt in self.groups.items()}
        if read:
            writes = self.store.writes
            try:
                self.snapshot = await within(self.records.snapshot(), c.store_timeout)
            except (StoreUnavailable, TimeoutError) as exc:
                self._writes_at_read = -1
                self._note("store", f"cannot read the store: {exc or 'timeout'}")
                return
            self._writes_at_read, self._read_at = writes, self.clock.monotonic()
            self._have_read.set()
            self._stats["store_request_seconds"] = self._read_at - t0
            await self._maybe_reconfigure(self.snapshot.config)
        if self._fencing_all:
            return  # the fence owns every group until it is proven
        await self._fence_retired()
        self._retire()
        if await self._rejoin_if_lost():
            return  # decide from a read that shows the member key again (the write kicked the loop)
        view = self.build_view(self.snapshot)
        plan = decide(view, self.config, self.clock.time())
        self._log_plan(plan)
        for action in plan.actions:
            rt = self.groups.get(action.group or "")
            if rt is not None and rt.epoch != epochs.get(rt.name, -1) and action.kind != ActionKind.FENCE_GROUP:
                continue  # a worker finished after the snapshot was read: decide again from fresh data
            await self._execute(action)
        # Idle: nothing decided, nothing waited for (a note is a wait: startup wait, no eligible node, ...),
        # the lease usable, every group at rest. Only a change (a kick) or time can alter the next plan then;
        # what time alters here (failure marks expiring) may wait up to IDLE_WAKE.
        self._idle = (
            not plan.actions and not plan.notes and view.has_lease and not self.leaving and not self._replacements
            and all(rt.worker is None and rt.request is None and rt.local in (LocalState.RUNNING, LocalState.STOPPED)
                    for rt in self.groups.values())
        )

    def _retire(self) -> None:
        """Groups removed from the config: stopped and released by a worker of their own once no other
        worker runs (or by a fence), forgotten once stopped.

        NB: never a second worker beside a running one: a stop spawned while a restart worker ran let
        the restart start the group again after the stop had released it (start without ownership; found
        by the simulation, seed 314:7669). The running worker ends first (a start sees ``retiring`` and
        drops), and this runs again when it does.
        """
        if self._done.is_set():
            return  # the agent is ending: its shutdown fences every group
        for name, rt in list(self.groups.items()):
            if not rt.retiring or rt.worker is not None or rt.local in (LocalState.STOP_FAILED, LocalState.FENCING):
                continue  # a failed stop or an unproven fence is fenced by the cycle (_fence_retired)
            if rt.local == LocalState.STOPPED:
                self._spawn(rt, self._forget(rt))
            else:
                self._spawn(rt, self._stop(rt, Action(ActionKind.STOP, name, event_kind=EventKind.STOP,
                                                      at=self.clock.time(), reason="group removed from config")))

    async def _fence_retired(self) -> None:
        """A group removed from the config whose stop failed is fenced (killed, unmounted, removed; proven),
        as a failed stop always is, and an unproven fence of one is tried again (``decide`` no longer
        sees the group); once proven it is stopped and ``_retire`` forgets it."""
        for rt in [rt for rt in self.groups.values() if rt.retiring and rt.worker is None
                   and rt.local in (LocalState.STOP_FAILED, LocalState.FENCING)]:
            await self._fence_group(rt, f"stop failed for a group removed from the config: {rt.reason}")

    async def _forget(self, rt: GroupRuntime) -> None:
        """A removed group, stopped here: let go of its owner key if this node holds it, then forget it."""
        await self._safe(self.records.release(rt.name, self.node))
        if self.groups.get(rt.name) is rt:
            del self.groups[rt.name]
            log.info("group removed", extra={"kv": {"group": rt.name}})

    async def _rejoin_if_lost(self) -> bool:
        """Write the member key again when the lease is usable but the store shows the key gone, or under
        a lease this agent gave up. True when it wrote it.

        NB: found by the etcd campaign (issue 11): a join that timed out at the client reached etcd after
        the retry's join had succeeded, and put the key under the abandoned lease, which then expired
        and took the key along. The owner keys stayed under the live lease, but without the member key
        ``has_lease`` is false, so the agent fenced its groups and waited, forever: nobody could take
        them over. The member key only says "up"; the lease it goes with is what proves ownership, and
        that lease is renewed, so writing the key again under it is safe. A key under another lease
        that carries another pid is another agent with this node's name: that is left to the operator.
        """
        lease = self.lease_id
        if lease is None or not self._lease_usable() or self.snapshot.member_leases.get(self.node) == lease:
            return False
        held = self.snapshot.members.get(self.node)
        if held is not None and held.get("pid") != os.getpid():
            self._note("member", f"the member key of {self.node} is held by pid {held.get('pid')} under another "
                                 "lease: is another agent running with this node's name?")
            return False
        log.warning("member key lost under a live lease: writing it again",
                    extra={"kv": {"lease": lease, "found": "gone" if held is None else "under another lease"}})
        try:
            await self._join(lease)
        except (StoreUnavailable, TimeoutError, LeaseExpired) as exc:
            self._note("member", f"cannot write the member key again: {exc or 'timeout'}")
            return False
        self._kick.set()
        return True

    def build_view(self, snap: Snapshot) -> ClusterView:
        groups = []
        for name, rt in self.groups.items():
            gv = snap.group(name).view(name, rt.spec.autostart)
            groups.append(
                GroupView(
                    name=gv.name, owner=gv.owner, target_online=gv.target_online, move_to=gv.move_to,
                    last=gv.last, failures=gv.failures, failovers=gv.failovers,
                    local=rt.local, local_reason=rt.reason, restarts=tuple(rt.restarts), request=rt.request,
                )
            )
        members = frozenset(snap.members)
        usable = self._lease_usable()
        return ClusterView(
            node=self.node,
            has_lease=usable and self.node in members and snap.member_leases.get(self.node) == self.lease_id,
            members=members,
            groups=tuple(groups),
            standby=frozenset(snap.standby),
            leaving=self.leaving,
            joined_at=self.joined_at,
            lease=self.lease_id if usable else None,
        )

    def _note(self, key: str, note: str) -> None:
        if self._notes.get(key) != note:
            self._notes[key] = note
            log.info("waiting", extra={"kv": {"decision": "wait", "reason": note}})

    def _log_action(self, a: Action) -> None:
        fields: dict[str, Any] = {"decision": a.kind.value, "group": a.group, "node": self.node, "reason": a.reason}
        if a.event is not None:
            fields["event"] = a.event.value
        log.info("decision", extra={"kv": fields})

    def _log_plan(self, plan: Plan) -> None:
        for n in plan.notes:
            self._note(n.split(" ", 1)[0], n)

    def _under_lease(self, a: Action) -> bool:
        """An action that starts something runs only under the lease it was decided under, still usable."""
        if a.lease is not None and a.lease == self.lease_id and self._lease_usable():
            return True
        log.warning("action dropped: its lease is gone", extra={"kv": {
            "decision": a.kind.value, "group": a.group, "decided_under": a.lease, "lease": self.lease_id}})
        return False

    async def _execute(self, a: Action) -> None:
        rt = self.groups.get(a.group or "")
        if a.kind == ActionKind.LEAVE_FENCED:
            self._log_action(a)
            await self._leave_fenced(a.reason)
            return
        if a.kind == ActionKind.STOP_AGENT:
            self._log_action(a)
            self.request_leave(a.reason)
            return
        if rt is None:
            return
        if a.kind == ActionKind.FENCE_GROUP:
            # NB: never skipped: a worker in the way is cancelled first.
            self._log_action(a)
            await self._fence_group(rt, a.reason)
            await self._write_status(rt)
            return
        if rt.worker is not None:
            return
        self._log_action(a)
        if a.kind == ActionKind.TAKE:
            assert a.event is not None
            if not self._under_lease(a) or not self._arm_watchdog():
                return
            assert a.lease is not None
            try:
                won = await within(
                    self.records.take(rt.name, self.node, event=a.event, lease=a.lease), self.config.cluster.store_timeout
                )
            except (StoreUnavailable, LeaseExpired, TimeoutError) as exc:
                self._note(rt.name, f"group={rt.name} cannot take: {exc or 'timeout'}")
                return
            if not won:
                log.info("lost the race to take the group", extra={"kv": {"group": rt.name}})
                return
            if not self._under_lease(a):
                return  # the owner key went with the lease; the fence takes care of the rest
            await self._safe(self.records.record_run(rt.name, self.node, clean=False, reason="running"))
            if a.clear_move:
                await self._safe(self.records.clear_move(rt.name))
            await self._event(rt.name, a.event_kind or EventKind.START, a.reason)
            # NB: the writes above may have taken up to 3 * store_timeout each, in the decision loop (no
            # fence cancels it): the lease is checked again here and in the worker (found by the
            # simulation: a start after the fence).
            if self._under_lease(a):
                rt.restarts = []  # a new run here: restart_limit counts the restarts in place of one run
                self._spawn(rt, self._start(rt, a.event, a.lease))
        elif a.kind == ActionKind.START:
            assert a.event is not None
            if not self._under_lease(a) or not self._arm_watchdog():
                return
            rt.restarts = []
            self._spawn(rt, self._start(rt, a.event, a.lease))
        elif a.kind == ActionKind.RESTART:
            if not self._under_lease(a) or not self._arm_watchdog():
                return
            rt.request = None
            rt.restarts = list(a.restarts)
            rt.stats["restarts"] += 1
            await self._event(rt.name, EventKind.RESTART, a.reason)
            if self._under_lease(a):
                self._spawn(rt, self._restart(rt, a.lease))
        elif a.kind == ActionKind.STOP:
            rt.request = None
            self._spawn(rt, self._stop(rt, a))

    def _spawn(self, rt: GroupRuntime, coro: Any) -> None:
        """Run ``coro`` as the group's worker, unless a fence owns the group (it is dropped then).

        NB: a fence owns a group until it is proven; a worker spawned meanwhile (a ``config apply``
        that removed the group, read while the lease keeper fenced) moved it out of ``fencing`` under
        the fence's feet and crashed the agent (found by the simulation, seed 7:986).
        """
        assert self._tg is not None
        if rt.local == LocalState.FENCING or self._fencing_all:
            # NB: no kick: the next cycle after the fence decides again (a kick here spun the decision
            # loop for as long as the fence ran).
            coro.close()
            log.debug("worker not started: a fence owns the group", extra={"kv": {"group": rt.name}})
            return
        task = self._tg.create_task(self._guard(rt, coro), name=f"group-{rt.name}")
        # A worker cancelled before its first step (a fence right after the spawn) never awaits ``coro``:
        # close it then, rather than leave Python to warn "coroutine ... was never awaited" (a no-op otherwise).
        task.add_done_callback(lambda _t: coro.close())
        rt.worker = task

    async def _guard(self, rt: GroupRuntime, coro: Any) -> None:
        cancelled = False
        try:
            await coro
        except asyncio.CancelledError:
            cancelled = True
            raise
        except Exception as exc:  # a bug in a driver must not kill the agent: treat as failed stop
            log.exception("group worker crashed", extra={"kv": {"group": rt.name}})
            rt.local = LocalState.STOP_FAILED
            rt.reason = f"internal error: {exc}"
        finally:
            if rt.worker is asyncio.current_task():
                rt.worker = None
            rt.epoch += 1
            if rt.retiring:
                # NB: not from a cancelled worker: its canceller (a fence) owns the group now, and a stop
                # spawned here would run beside the fence; the next cycle retires the group.
                if not cancelled and self.groups.get(rt.name) is rt:
                    self._retire()  # forgotten if stopped, else stopped by a worker of its own
                self._kick.set()
            elif not self._done.is_set() and not cancelled:
                # NB: never a store write in a cancelled worker: whoever cancelled it (a fence) awaits it,
                # and a write to an unreachable store would hold the fence up by store_timeout (found by
                # the simulation: the fence finished after the lease expired).
                await self._write_status(rt)
                self._kick.set()
            else:
                self._kick.set()

    async def _cancel_worker(self, rt: GroupRuntime) -> None:
        for t in rt.monitor_tasks:
            t.cancel()
        rt.monitor_tasks.clear()
        if rt.worker is not None:
            await cancel_and_wait([rt.worker])
        rt.worker = None

    async def _start(self, rt: GroupRuntime, event: ClpEvent, lease: int | None) -> None:
        """Start the group's resources, only while ``lease`` (the one the start was decided under) holds."""
        rt.local = LocalState.STARTING
        rt.reason = ""
        await self._write_status(rt)
        # NB: no await between this check and the first resource's start; a fence later cancels the worker.
        if rt.retiring:
            rt.local, rt.reason = LocalState.STOPPED, "start dropped: the group was removed from the config"
            return
        if lease is None or lease != self.lease_id or not self._lease_usable():
            rt.local, rt.reason = LocalState.STOPPED, "start dropped: its lease is gone"
            log.warning("start dropped: its lease is gone", extra={"kv": {"group": rt.name, "decided_under": lease}})
            return
        # NB: armed again here, not only when the take was decided: the take's store writes run first, and
        # a feed meanwhile, seeing every group stopped, disarmed the device; the start then ran with no
        # watchdog, and a fence slower than fence_margin ran past the lease while the standby started
        # (found by the simulation, seed 99:2621).
        if not self._arm_watchdog():
            rt.local, rt.reason = LocalState.STOPPED, "start dropped: the watchdog cannot be armed in time"
            log.warning("start dropped: the watchdog cannot be armed in time", extra={"kv": {"group": rt.name}})
            return
        t0 = self.clock.monotonic()
        try:
            await rt.start_resources(event)
        except StopFailed as exc:
            rt.local, rt.reason = LocalState.STOP_FAILED, str(exc)
            return
        except KagemushaError as exc:
            rt.local, rt.reason = LocalState.START_FAILED, str(exc)
            log.error("group start failed", extra={"kv": {"group": rt.name, "reason": str(exc)}})
            return
        rt.local = LocalState.RUNNING
        took = self.clock.monotonic() - t0
        rt.stats["starts"] += 1
        rt.stats["last_start_seconds"] = took
        if event == ClpEvent.FAILOVER:
            rt.stats["failovers"] += 1
            rt.stats["last_failover_seconds"] = took
        log.info("group online", extra={"kv": {"group": rt.name, "event": event.value, "seconds": round(took, 3)}})
        await self._event(rt.name, EventKind.ONLINE, f"online on {self.node} ({event.value})")
        self._start_monitors(rt)

    async def _restart(self, rt: GroupRuntime, lease: int | None) -> None:
        if await self._stop_in_place(rt):
            await self._start(rt, rt.env.event, lease)

    async def _stop(self, rt: GroupRuntime, a: Action) -> None:
        """Stop the group, then write what the action says (marks, counts, target, last run) and release it."""
        for t in rt.monitor_tasks:
            t.cancel()
        rt.monitor_tasks.clear()
        rt.local = LocalState.STOPPING
        rt.reason = a.reason
        await self._write_status(rt)
        try:
            await rt.stop_resources()
        except StopFailed as exc:
            rt.local, rt.reason = LocalState.STOP_FAILED, str(exc)
            log.error("group stop failed: fencing", extra={"kv": {"group": rt.name, "reason": str(exc)}})
            return
        rt.local = LocalState.STOPPED
        g = rt.name
        if a.mark_failure:
            await self._safe(self.records.mark_failure(g, self.node, at=a.at, reason=a.reason))
        if a.count_failover:
            await self._safe(self.records.set_failovers(g, a.failovers))
        if a.target_offline:
            await self._safe(self.records.set_target(g, False, by=f"final action on {self.node}"))
        await self._safe(self.records.record_run(g, self.node, clean=a.clean, reason=a.reason))
        if await self._safe(self.records.release(g, self.node)) is None:
            pass  # not released: our lease still holds it, and the next cycle stops and releases again
        rt.request = None
        await self._event(g, a.event_kind or EventKind.STOP, a.reason)

    # -- monitors ---------------------------------------------------------------

    def _start_monitors(self, rt: GroupRuntime) -> None:
        assert self._tg is not None
        for ms in rt.monitors:
            ms.consecutive = 0
            rt.monitor_tasks.append(self._tg.create_task(self._monitor_loop(rt, ms), name=f"mon-{rt.name}-{ms.spec.name}"))

    async def _monitor_loop(self, rt: GroupRuntime, ms: Any) -> None:
        spec = ms.spec
        while rt.local == LocalState.RUNNING:
            await self.clock.sleep(spec.interval)
            if rt.local != LocalState.RUNNING:
                return
            ms.suspended = (rt.name, spec.name) in self.snapshot.suspended
            if ms.suspended:
                continue
            try:
                async with asyncio.timeout(spec.timeout):
                    res = await ms.monitor.check()
                ok, detail = res.ok, res.detail
            except TimeoutError:
                ok, detail = False, f"no answer within timeout {spec.timeout:g}s"
            except Exception as exc:  # noqa: BLE001 - a monitor that raises counts as failed
                ok, detail = False, f"monitor error: {exc}"
            changed = ms.last_ok is not ok
            ms.last_ok, ms.last_detail, ms.last_at = ok, detail, self.clock.time()
            if ok and changed:
                await self._write_status(rt)
            if ok:
                if ms.consecutive:
                    log.info("monitor recovered", extra={"kv": {"group": rt.name, "monitor": spec.name}})
                ms.consecutive = 0
                continue
            ms.consecutive += 1
            ms.total_failures += 1
            log.warning("monitor failed", extra={"kv": {"group": rt.name, "monitor": spec.name, "count": ms.consecutive,
                                                        "retries": spec.retries, "detail": detail}})
            await self._write_status(rt)
            if ms.consecutive >= spec.retries and rt.request is None:
                # NB: the snapshot may be a cycle old; an operator who just suspended the monitor (to work
                # on the service) must not see it recovered: ask the store itself before recovering.
                if await self._safe(self.records.is_suspended(rt.name, spec.name)):
                    ms.suspended, ms.consecutive = True, 0
                    continue
                rt.request = MonitorRequest(spec.name, detail)
                ms.consecutive = 0
                self._kick.set()

    # -- store helpers ------------------------------------------------------------

    async def _safe(self, aw: Awaitable[Any]) -> Any:
        """A write whose failure is not fatal (logged; the next cycle decides again from what is stored)."""
        try:
            return await within(aw, self.config.cluster.store_timeout * 3)
        except (StoreUnavailable, TimeoutError, LeaseExpired) as exc:
            log.warning("store write failed", extra={"kv": {"error": str(exc) or "timeout"}})
            return None

    async def _write_status(self, rt: GroupRuntime) -> None:
        # Only the node that runs (or ran) the group writes its status.
        owner = self.snapshot.group(rt.name).owner
        if owner is None or owner.node == self.node or rt.local != LocalState.STOPPED:
            await self._safe(self.records.write_status(rt.name, rt.status_record()))

    async def _event(self, group: str | None, kind: EventKind, reason: str) -> None:
        await self._safe(self.records.record_event(group, kind.value, reason, node=self.node))
        if len(self.snapshot.events) > EVENTS_KEPT and self.node == min(self.snapshot.members or [self.node]):
            await self._safe(self.records.trim_events(EVENTS_KEPT))

    # -- start-up and shutdown -----------------------------------------------------

    async def _initial_probe(self) -> None:
        """Probe every resource once; anything found running is fenced before joining (we own nothing yet)."""
        for rt in self.groups.values():
            found = await rt.probe_all()
            live = {n: s for n, s in found.items() if s[0] != ProbeState.STOPPED}
            if live:
                log.warning(
                    "resources found running at start-up: fencing them before joining",
                    extra={"kv": {"group": rt.name, "found": json.dumps({k: [v[0].value, v[1]] for k, v in live.items()})}},
                )
                while await self._fence_groups([rt], "found running at start-up"):
                    await self.clock.sleep(FENCE_RETRY)

    async def _shutdown(self) -> None:
        for rt in self.groups.values():
            await self._cancel_worker(rt)
        if any(rt.local != LocalState.STOPPED for rt in self.groups.values()):
            await self._fence_all(self.stop_reason or "agent exiting")
        if self.lease_id is not None:
            try:
                await within(self.store.revoke(self.lease_id), self.config.cluster.store_timeout)
            except (StoreUnavailable, TimeoutError):
                pass
        await self.store.close()
        if self.watchdog is not None and all(rt.local == LocalState.STOPPED for rt in self.groups.values()):
            self.watchdog.disarm()
            self._watchdog_fires_at = None


class _Exit(Exception):
    pass


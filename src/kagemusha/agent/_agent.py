"""The per-node agent: observe -> decide (pure) -> act, plus the lease keeper and the monitors.

Tasks (all in one ``asyncio.TaskGroup`` the agent owns; no orphan tasks):

- lease keeper: renews the node's lease every ``heartbeat_interval``; when a
  renewal fails and the next one could not land before
  ``valid_until - fence_margin``, it fences (kills/removes/unmounts every
  resource of every group, no scripts) and starts nothing until a new lease is
  granted. ``valid_until`` is measured from when the last successful renewal
  was *sent*, so it can only be earlier than the store's own expiry.
- decision loop: every ``heartbeat_interval`` (or at once when something
  changes) reads the cluster's keys, builds a ``ClusterView``, calls
  ``decide`` and hands the plan to the executor; logs one line per action.
- group workers: one task at a time per group for start/stop/restart.
- monitors: one task per monitor of each group that runs here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from kagemusha._clock import Clock, SystemClock
from kagemusha.agent._groups import GroupRuntime, StopFailed
from kagemusha.agent._layout import Snapshot, parse_snapshot, root_of
from kagemusha.cluster import (
    Action,
    ActionKind,
    ClusterView,
    GroupView,
    LocalState,
    MonitorRequest,
    Plan,
    decide,
)
from kagemusha.config import Config
from kagemusha.errors import ConfigError, KagemushaError, LeaseExpired, StoreUnavailable
from kagemusha.resources import ClpEvent, ProbeState
from kagemusha.store import Store, open_cluster_store

__all__ = ["Agent"]

log = logging.getLogger("kagemusha.agent")
EVENTS_KEPT = 500


class Agent:
    """One node's agent. ``await Agent(config, "n1").run()`` runs until it leaves.

    Args:
        config: the validated cluster config.
        node: this node's name (must be in ``config.nodes``).
        store: an open store (default: opened from ``config.cluster.store``).
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
        self.root = root_of(config.cluster.name)
        base = str(Path(config.source).resolve().parent) if config.source else None
        self.store = store or open_cluster_store(config.cluster, base_dir=base)
        self.serve_api = serve_api
        self.apply_config = apply_config
        self.config_sha = ""
        self.config_version = 0
        self._bad_config_sha = ""
        self.watchdog: Any = watchdog
        wd_path = config.cluster.watchdog
        if watchdog is None and wd_path is not None:
            from kagemusha._watchdog import Watchdog, watchdog_timeout

            c = config.cluster
            self.watchdog = Watchdog(wd_path, watchdog_timeout(c.heartbeat_timeout, c.heartbeat_interval, c.store_timeout))
        self.groups = {g.name: GroupRuntime.build(config, g, node) for g in config.groups if node in g.nodes}
        self.lease_id: int | None = None
        self._stale_leases: set[int] = set()
        self.valid_until = 0.0  # monotonic
        self.joined_at = 0.0  # wall
        self.leaving = False
        self.fenced_reason = ""
        self.stop_reason = ""
        self._kick = asyncio.Event()
        self._done = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._notes: dict[str, str] = {}
        self.snapshot = Snapshot()
        self.statistics: dict[str, Any] = {"lease_renew_seconds": 0.0, "store_request_seconds": 0.0, "fences": 0}
        self.on_cycle: list[Callable[[], Awaitable[None] | None]] = []

    # -- public -------------------------------------------------------------

    async def run(self) -> int:
        """Run until the agent leaves; returns the process exit code (0 clean, 1 after a fence/stop failure)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self.request_leave, f"signal {signal.Signals(sig).name}")
            except (NotImplementedError, RuntimeError):
                pass
        Path(self.config.state_dir_of(self.node)).mkdir(parents=True, exist_ok=True)
        await self._check_stored_config()
        log.info("agent starting", extra={"kv": {"cluster": self.config.cluster.name, "groups": ",".join(self.groups)}})
        from kagemusha.config import config_warnings

        for key, msg in config_warnings(self.config):
            log.warning("config warning", extra={"kv": {"key": key, "warning": msg}})
        await self._initial_probe()
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._lease_keeper(), name="lease-keeper")
                tg.create_task(self._decision_loop(), name="decision-loop")
                tg.create_task(self._watcher(), name="watcher")
                if self.serve_api:
                    from kagemusha.api import serve

                    tg.create_task(serve(self), name="api")
                await self._done.wait()
                raise _Exit()
        except* _Exit:
            pass
        finally:
            await self._shutdown()
        log.info("agent stopped", extra={"kv": {"reason": self.stop_reason or "left"}})
        return 1 if self.fenced_reason and not self.leaving else 0

    def request_leave(self, why: str = "requested") -> None:
        """Graceful leave (SIGTERM): stop own groups, release them, revoke the lease, exit.

        A second request while leaving fences at once and exits.
        """
        if self.leaving:
            log.warning("second leave request: fencing now", extra={"kv": {"why": why}})
            asyncio.get_running_loop().create_task(self._fence_all("leave requested twice")).add_done_callback(
                lambda _: self._done.set()
            )
            return
        log.info("leaving the cluster", extra={"kv": {"why": why}})
        self.leaving = True
        self._kick.set()

    def is_member(self) -> bool:
        """True while this node holds its lease (for ``GET /health``)."""
        return self.lease_id is not None and not self.fenced_reason

    def runs(self, group: str) -> bool:
        """True when this node owns ``group`` and it is online here (for ``GET /groups/<g>/primary``)."""
        rt = self.groups.get(group)
        owner = self.snapshot.group(group).owner
        return (
            rt is not None and rt.local == LocalState.RUNNING and self.is_member()
            and owner is not None and owner.node == self.node
        )

    # -- configuration in the store ------------------------------------------------

    async def _check_stored_config(self) -> None:
        """Refuse to run a config that differs from the applied one, unless told to apply it.

        Raises:
            ConfigError: the file differs from the stored version and ``apply_config`` is off.
            StoreUnavailable: the store cannot be asked.
        """
        from kagemusha.config._stored import sha256_text
        from kagemusha.control import apply_config, read_stored_config

        if not self.config.source:
            return
        text = Path(self.config.source).read_text(encoding="utf-8")
        mine = sha256_text(text)
        from kagemusha.control import ActionFailed

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
                f"differs from the config applied to cluster {self.config.cluster.name} (version {rec.version}, "
                f"by {rec.by}): run `kagemusha config diff {self.config.source}`, then `kagemusha config apply` "
                "it, or start the agent with --apply",
            )])
        self.config_sha, self.config_version = rec.sha256, rec.version

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
        wanted = {g.name: g for g in new.groups if self.node in g.nodes}
        for name, rt in list(self.groups.items()):
            if name not in wanted:
                rt.retiring = True
                if rt.local == LocalState.STOPPED and rt.worker is None:
                    del self.groups[name]
                else:
                    await self._cancel_monitors(rt)
                    self._spawn(rt, self._stop(rt, Action(ActionKind.STOP, name, reason="group removed from config")))
        for name, spec in wanted.items():
            fresh = GroupRuntime.build(new, spec, self.node)
            cur = self.groups.get(name)
            if cur is None:
                self.groups[name] = fresh
                continue
            rt = cur
            if rt.spec.resources != spec.resources:
                if rt.local == LocalState.STOPPED and rt.worker is None:
                    self.groups[name] = fresh
                else:
                    self._spawn(rt, self._replace(rt, fresh))
            else:
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

    async def _replace(self, rt: GroupRuntime, fresh: GroupRuntime) -> None:
        """Resources of a running group changed: stop it with the old definition; the new one starts."""
        if await self._stop_in_place(rt):
            fresh.env = rt.env
            self.groups[rt.name] = fresh

    async def _cancel_monitors(self, rt: GroupRuntime) -> None:
        tasks, rt.monitor_tasks = rt.monitor_tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass

    # -- lease ----------------------------------------------------------------

    async def _grant(self) -> None:
        c = self.config.cluster
        lease = await asyncio.wait_for(self.store.grant_lease(c.heartbeat_timeout), c.store_timeout)
        t0 = self.clock.monotonic()
        member = json.dumps({"address": self.config.node(self.node).address, "pid": os.getpid(), "since": self.clock.time()})
        await asyncio.wait_for(self.store.put(self._k(f"members/{self.node}"), member, lease=lease.id), c.store_timeout)
        self.lease_id = lease.id
        self.valid_until = t0 + min(lease.ttl, c.heartbeat_timeout)
        # A lease we gave up while the store was unreachable may still hold our keys (etcd keeps leases
        # across its restarts): we fenced, so release them now rather than wait for their expiry.
        for old in list(self._stale_leases):
            try:
                await asyncio.wait_for(self.store.revoke(old), c.store_timeout)
                self._stale_leases.discard(old)
            except (StoreUnavailable, TimeoutError):
                pass
        if not self.joined_at:
            self.joined_at = self.clock.time()
        self.fenced_reason = ""
        log.info("joined the cluster", extra={"kv": {"lease": lease.id, "ttl": lease.ttl}})
        await self._event(None, "node_up", f"node {self.node} joined")
        self._kick.set()

    async def _lease_keeper(self) -> None:
        c = self.config.cluster
        while not self._done.is_set():
            if self.lease_id is None:
                if self.leaving:
                    self._done.set()
                    return
                try:
                    await self._grant()
                except (StoreUnavailable, TimeoutError, LeaseExpired) as exc:
                    self._note("lease", f"cannot get a lease: {exc or 'timeout'}")
                    await self.clock.sleep(c.heartbeat_interval)
                    continue
            await self.clock.sleep(c.heartbeat_interval)
            if self.lease_id is None:
                continue
            while True:
                sent = self.clock.monotonic()
                try:
                    ttl = await asyncio.wait_for(self.store.keepalive(self.lease_id), c.store_timeout)
                    self.statistics["lease_renew_seconds"] = self.clock.monotonic() - sent
                    self.valid_until = sent + min(ttl, c.heartbeat_timeout)
                    self._feed_watchdog()
                    break
                except LeaseExpired:
                    await self._fence_all("lease expired at the store")
                    break
                except (StoreUnavailable, TimeoutError) as exc:
                    now = self.clock.monotonic()
                    # Retry only if another attempt could still land before we must fence.
                    if now + c.store_timeout + c.fence_margin < self.valid_until:
                        log.warning("lease renewal failed, retrying", extra={"kv": {"error": str(exc) or "timeout"}})
                        # NB: a store that refuses at once (connection refused) must not make this a
                        # hot loop; a short pause still leaves time for the retry before the deadline.
                        await self.clock.sleep(min(c.heartbeat_interval, c.store_timeout) / 4)
                        continue
                    await self._fence_all(f"cannot renew lease: {exc or 'store timeout'}")
                    break

    def _feed_watchdog(self) -> None:
        """Ping the kernel watchdog while groups run here; disarm it when none does."""
        if self.watchdog is None:
            return
        try:
            if any(rt.local != LocalState.STOPPED for rt in self.groups.values()):
                self.watchdog.ping()
            else:
                self.watchdog.disarm()
        except OSError as exc:
            log.error("watchdog device error", extra={"kv": {"device": self.watchdog.path, "error": str(exc)}})

    async def _fence_all(self, reason: str) -> None:
        """Stop every resource at once (no scripts) and forget the lease."""
        if self.lease_id is None and self.fenced_reason:
            return
        t0 = self.clock.monotonic()
        self.fenced_reason = reason
        self.statistics["fences"] += 1
        lease, self.lease_id = self.lease_id, None
        for rt in self.groups.values():
            await self._cancel_worker(rt)
        results = await asyncio.gather(*(rt.fence() for rt in self.groups.values()))
        for rt, problems in zip(self.groups.values(), results):
            if rt.local != LocalState.STOPPED:
                rt.reason = f"fenced: {reason}"
            rt.local = LocalState.STOPPED
            if problems:
                log.error("fence problems", extra={"kv": {"group": rt.name, "problems": "; ".join(problems)}})
        log.error(
            "fenced: stopped every resource",
            extra={"kv": {"decision": "fence", "reason": reason, "seconds": round(self.clock.monotonic() - t0, 3)}},
        )
        if lease is not None:
            try:
                await asyncio.wait_for(self.store.revoke(lease), self.config.cluster.store_timeout)
            except (StoreUnavailable, TimeoutError):
                self._stale_leases.add(lease)

    # -- observe / decide / act -------------------------------------------------

    async def _watcher(self) -> None:
        """Kick the decision loop when anything under the cluster's root changes."""
        while not self._done.is_set():
            try:
                async for _ in self.store.watch(self.root):
                    self._kick.set()
            except StoreUnavailable:
                await self.clock.sleep(self.config.cluster.heartbeat_interval)

    async def _decision_loop(self) -> None:
        c = self.config.cluster
        while not self._done.is_set():
            try:
                await asyncio.wait_for(self._kick.wait(), c.heartbeat_interval)
            except TimeoutError:
                pass
            self._kick.clear()
            await self._cycle()
            for cb in self.on_cycle:
                r = cb()
                if r is not None:
                    await r
            if self.leaving and self._left():
                if self.lease_id is not None:
                    try:
                        await asyncio.wait_for(self.store.revoke(self.lease_id), c.store_timeout)
                    except (StoreUnavailable, TimeoutError):
                        pass
                    self.lease_id = None
                self.stop_reason = "left the cluster"
                self._done.set()
                return

    def _left(self) -> bool:
        busy = any(rt.local != LocalState.STOPPED or rt.worker is not None for rt in self.groups.values())
        owned = any(
            (rec.owner is not None and rec.owner.node == self.node) for rec in self.snapshot.groups.values()
        )
        return not busy and (not owned or self.lease_id is None)

    async def _cycle(self) -> None:
        c = self.config.cluster
        t0 = self.clock.monotonic()
        epochs = {name: rt.epoch for name, rt in self.groups.items()}
        try:
            kvs, rev = await asyncio.wait_for(self.store.get_prefix(self.root), c.store_timeout)
        except (StoreUnavailable, TimeoutError) as exc:
            self._note("store", f"cannot read the store: {exc or 'timeout'}")
            return
        self.statistics["store_request_seconds"] = self.clock.monotonic() - t0
        self.snapshot = parse_snapshot(kvs, rev, self.root)
        await self._maybe_reconfigure(self.snapshot.config)
        view = self.build_view(self.snapshot)
        plan = decide(view, self.config, self.clock.time())
        self._log_plan(plan)
        for action in plan.actions:
            rt = self.groups.get(action.group or "")
            if rt is not None and rt.epoch != epochs[rt.name]:
                continue  # a worker finished after the snapshot was read: decide again from fresh data
            await self._execute(action)

    def build_view(self, snap: Snapshot) -> ClusterView:
        groups = []
        for name, rt in self.groups.items():
            rec = snap.group(name)
            gv = rec.view(name, rt.spec.autostart)
            groups.append(
                GroupView(
                    name=gv.name, owner=gv.owner, target_online=gv.target_online, move_to=gv.move_to,
                    last=gv.last, failures=gv.failures, failovers=gv.failovers,
                    local=rt.local, local_reason=rt.reason, restarts=tuple(rt.restarts), request=rt.request,
                )
            )
        members = frozenset(snap.members)
        return ClusterView(
            node=self.node,
            has_lease=self.lease_id is not None and f"{self.node}" in members,
            members=members,
            groups=tuple(groups),
            standby=frozenset(snap.standby),
            leaving=self.leaving,
            joined_at=self.joined_at,
            lease=self.lease_id,
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

    async def _execute(self, a: Action) -> None:
        rt = self.groups.get(a.group or "")
        if rt is not None and rt.worker is not None:
            return
        self._log_action(a)
        if a.kind == ActionKind.LEAVE_FENCED:
            await self._fence_all(a.reason)
            self.stop_reason = a.reason
            await self._event(a.group, "node_fenced", a.reason)
            self._done.set()
            return
        if a.kind == ActionKind.STOP_AGENT:
            self.request_leave(a.reason)
            return
        assert rt is not None
        if rt.worker is not None:
            return
        if a.kind == ActionKind.FENCE_GROUP:
            problems = await rt.fence()
            rt.local = LocalState.STOPPED
            rt.reason = a.reason
            if problems:
                log.error("fence problems", extra={"kv": {"group": rt.name, "problems": "; ".join(problems)}})
            return
        if a.kind == ActionKind.TAKE:
            assert a.event is not None
            owner = json.dumps({"node": self.node, "event": a.event.value, "since": self.clock.time()})
            try:
                won = await self.store.cas(self._k(f"groups/{rt.name}/owner"), owner, expected_revision=0, lease=self.lease_id)
            except (StoreUnavailable, LeaseExpired) as exc:
                self._note(rt.name, f"group={rt.name} cannot take: {exc}")
                return
            if not won:
                log.info("lost the race to take the group", extra={"kv": {"group": rt.name}})
                return
            rec = self.snapshot.group(rt.name)
            await self._put(f"groups/{rt.name}/last", {"node": self.node, "clean": False, "at": self.clock.time(), "reason": "running"})
            if rec.move_to is not None:
                await self._safe(self.store.delete(self._k(f"groups/{rt.name}/move")))
            await self._event(rt.name, "failover" if a.event == ClpEvent.FAILOVER else "start", a.reason)
            self._spawn(rt, self._start(rt, a.event))
        elif a.kind == ActionKind.START:
            assert a.event is not None
            self._spawn(rt, self._start(rt, a.event))
        elif a.kind == ActionKind.RESTART:
            rt.request = None
            rt.restarts.append(self.clock.time())
            rt.stats["restarts"] += 1
            await self._event(rt.name, "restart", a.reason)
            self._spawn(rt, self._restart(rt))
        elif a.kind == ActionKind.STOP:
            rt.request = None
            self._spawn(rt, self._stop(rt, a))

    def _spawn(self, rt: GroupRuntime, coro: Any) -> None:
        assert self._tg is not None
        task = self._tg.create_task(self._guard(rt, coro), name=f"group-{rt.name}")
        rt.worker = task

    async def _guard(self, rt: GroupRuntime, coro: Any) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug in a driver must not kill the agent: treat as failed stop
            log.exception("group worker crashed", extra={"kv": {"group": rt.name}})
            rt.local = LocalState.STOP_FAILED
            rt.reason = f"internal error: {exc}"
        finally:
            rt.worker = None
            rt.epoch += 1
            if rt.retiring and rt.local == LocalState.STOPPED and self.groups.get(rt.name) is rt:
                del self.groups[rt.name]
                log.info("group removed", extra={"kv": {"group": rt.name}})
                self._kick.set()
                return
            await self._write_status(rt)
            self._kick.set()

    async def _cancel_worker(self, rt: GroupRuntime) -> None:
        for t in rt.monitor_tasks:
            t.cancel()
        rt.monitor_tasks.clear()
        task = rt.worker
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        rt.worker = None

    async def _start(self, rt: GroupRuntime, event: ClpEvent) -> None:
        rt.local = LocalState.STARTING
        rt.reason = ""
        await self._write_status(rt)
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
        log.info("group online", extra={"kv": {"group": rt.name, "event": event.value,
                                                "seconds": round(self.clock.monotonic() - t0, 3)}})
        await self._event(rt.name, "online", f"online on {self.node} ({event.value})")
        self._start_monitors(rt)

    async def _restart(self, rt: GroupRuntime) -> None:
        if await self._stop_in_place(rt):
            await self._start(rt, rt.env.event)

    async def _stop(self, rt: GroupRuntime, a: Action) -> None:
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
        now = self.clock.time()
        g = rt.name
        if a.mark_failure:
            await self._put(f"groups/{g}/failures/{self.node}", {"at": now, "reason": a.reason})
        if a.count_failover:
            times = [t for t in self.snapshot.group(g).failovers if now - t < self.config.cluster.failure_expiry]
            await self._put(f"groups/{g}/failovers", {"times": [*times, now]})
        if a.target_offline:
            await self._put(f"groups/{g}/target", {"online": False, "by": f"final action on {self.node}", "at": now})
        await self._put(f"groups/{g}/last", {"node": self.node, "clean": a.clean, "at": now, "reason": a.reason})
        key = self._k(f"groups/{g}/owner")
        try:
            cur = await self.store.get(key)
            if cur is not None and json.loads(cur.value).get("node") == self.node:
                await self.store.delete(key, expected_revision=cur.mod_revision)
        except (StoreUnavailable, ValueError):
            pass  # not released: our lease still holds it, and the next cycle stops and releases again
        rt.request = None
        kind = "failover_from" if a.count_failover or (a.mark_failure and not a.target_offline) else "stop"
        await self._event(g, kind, a.reason)

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
            except Exception as exc:  # a monitor that raises counts as failed
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
                rt.request = MonitorRequest(spec.name, detail)
                ms.consecutive = 0
                self._kick.set()

    # -- store helpers ------------------------------------------------------------

    def _k(self, rel: str) -> str:
        return self.root + rel

    async def _safe(self, aw: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(aw, self.config.cluster.store_timeout * 3)
        except (StoreUnavailable, TimeoutError, LeaseExpired) as exc:
            log.warning("store write failed", extra={"kv": {"error": str(exc) or "timeout"}})
            return None

    async def _put(self, rel: str, data: dict[str, Any]) -> None:
        await self._safe(self.store.put(self._k(rel), json.dumps(data)))

    async def _write_status(self, rt: GroupRuntime) -> None:
        rec = {**rt.status_record(), "at": self.clock.time()}
        # Only the node that runs (or ran) the group writes its status.
        owner = self.snapshot.group(rt.name).owner
        if owner is None or owner.node == self.node or rt.local != LocalState.STOPPED:
            await self._put(f"groups/{rt.name}/status", rec)

    async def _event(self, group: str | None, kind: str, reason: str, by: str | None = None) -> None:
        at = self.clock.time()
        await self._put(
            f"events/{int(self.clock.time() * 1e9):020d}-{self.node}",
            {"at": at, "node": self.node, "group": group, "kind": kind, "reason": reason, "by": by or f"agent {self.node}"},
        )
        if len(self.snapshot.events) > EVENTS_KEPT and self.node == min(self.snapshot.members or [self.node]):
            try:
                kvs, _ = await self.store.get_prefix(self._k("events/"))
                for kv in kvs[: len(kvs) - EVENTS_KEPT]:
                    await self.store.delete(kv.key)
            except StoreUnavailable:
                pass

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
                await rt.fence()

    async def _shutdown(self) -> None:
        for rt in self.groups.values():
            await self._cancel_worker(rt)
        if any(rt.local != LocalState.STOPPED for rt in self.groups.values()):
            await self._fence_all(self.stop_reason or "agent exiting")
        if self.lease_id is not None:
            try:
                await asyncio.wait_for(self.store.revoke(self.lease_id), self.config.cluster.store_timeout)
            except (StoreUnavailable, TimeoutError):
                pass
        await self.store.close()
        if self.watchdog is not None and all(rt.local == LocalState.STOPPED for rt in self.groups.values()):
            self.watchdog.disarm()


class _Exit(Exception):
    pass

"""Deterministic simulation of the whole agent: real ``Agent``s on one virtual clock, random faults, invariants.

Run::

    python -m kagemusha.testing.simulate --schedules 10000 --seed 1 [--workers 2]
    python -m kagemusha.testing.simulate --replay '<schedule as printed>' --trace

Each *schedule* builds a cluster of 2-3 nodes and 1-2 failover groups (each group: two ``sim`` resources
and one ``sim`` monitor), starts one real ``kagemusha.agent.Agent`` per node (the real lease keeper,
decision loop, ``decide`` and group workers) on a ``VirtualTimeLoop``, each with its own client of one
in-memory store (``_sim.SimStore``), and injects a random list of 1-4 faults (store faults weighted up; half
of them hit the node the previous one hit; a slow link mostly breaks afterwards). Timer presets:
``tight`` (the defaults of ``cluster.toml``), ``retry`` (room for renewal retries, ``fence_margin`` below
``store_timeout``), ``wd`` (with a watchdog), and ``edge`` / ``wd-edge`` whose
``heartbeat_timeout`` is the smallest the timing rule in force accepts (``config.timing_errors``), so the
simulation checks the rule itself. Faults:

==================  =====================================================================================
``crash n``         node crash: the agent dies, every resource of the node dies with it
``agent-crash n``   the agent dies (kill -9); the supervisor fences the node with the config it started
                    with (as ``kagemusha._supervisor.fence_node``, without its thread-based leftover kill)
``hang n d``        the agent hangs for ``d`` s (``LoopClock.hold`` + its store calls and drivers wait);
                    the node's watchdog resets it if not fed in time (only in presets with a watchdog)
``outage d``        no client can reach the store for ``d`` s
``partition n d m`` node ``n`` cannot reach the store for ``d`` s; ``m`` = refuse (at once) | blackhole
                    (no answer until the client's ``store_timeout``)
``slow n d x m``    for ``d`` s each store call of ``n`` takes ``x/2``..``x`` s; m = answer (the store acts
                    at once, the answer is late) | request (it acts late) | both; past ``store_timeout``
                    the client gives up although the write may land; m = lost: half the calls go
                    through at once, the others time out and land up to ``x`` s after the client gave
                    up (TCP retransmits a lost request), after calls made since
``stop-fail n g d`` for ``d`` s stopping ``g`` on ``n`` fails (m = raise | hang past ``stop_timeout``)
``fence-fail n d``  for ``d`` s every fence on ``n`` fails (resources stay up); watchdog presets only
``fence-slow n d x`` for ``d`` s every fence on ``n`` takes ``x`` s (past ``fence_margin`` only with a
                    watchdog)
``monitor-fail n g d`` the group's monitor on ``n`` fails for ``d`` s
``move g n``        ``group move`` through ``kagemusha.control.ClusterControl.move_group``
``apply v``         ``config apply`` (``kagemusha.control.apply_config``) of a changed config:
                    v = add (a group) | drop (the last group) | mon (monitor timing) | res (a resource
                    added) | order (node order reversed, failback auto)
``rejoin n``        a new ``Agent`` on a node whose agent is gone
``leave n``         graceful leave (``Agent.request_leave``, as on SIGTERM)
==================  =====================================================================================

Invariants, checked while it runs and at the end:

- *split-brain*: never two nodes with resources of one group running at the same virtual instant (a
  resource runs from the call of ``start`` until ``stop``/``fence`` returns successfully);
- *owner-without-lease*: after every write, no owner key without a live lease;
- *start-without-lease*: at every ``start``, the starting agent holds a live lease at the store;
- *start-without-ownership*: at every ``start``, the group's owner key names this node under one of the
  starting agent's live leases (an action runs only under the lease it was decided under);
- *run-past-lease*: when a lease ends (expires or is revoked), the node no longer runs any resource of a
  group whose owner key the lease held (a node fences before its lease can expire; the standby may start
  at that instant);
- *agent-error*: an agent ends with an unexpected exception;
- *liveness*: once the faults stop (``t_quiet``: every fault with a duration has ended and all are
  healed), within the bound ``B`` every group with a live eligible node is online: its owner key names a
  node that runs all its resources, and no other node runs any.

The liveness bound, from the timers (``hb`` heartbeat_interval, ``ttl`` heartbeat_timeout, ``st``
store_timeout, ``R`` resources per group, ``stop_timeout``/``start_delay`` of the stand-ins, ``F`` the
longest injected fence, ``W`` the watchdog timeout)::

    B = P + ttl + startup_wait + 3 (hb + st) + R (start_delay + stop_delay) + ttl
    P = max(F, R * stop_timeout, st, W)

``P`` lets whatever was in flight at ``t_quiet`` end (a fence, a stop that hangs until its timeout, a
store call until the client gives up, a watchdog that fires for a hang that just ended); then a dead
owner's lease runs out (``ttl``), the others notice within a decision period and one store round trip
(each of up to three steps: re-grant a lease, see the expiry, take), a first start may wait
``startup_wait``, the old owner's graceful stop and the new owner's start take ``R`` steps each, and one
more ``ttl`` of slack covers an agent that must first let an owner key of its previous lease expire. A
node is *eligible* for the check when its agent is alive, not hung, holds a lease, is one of the group's
nodes and has no failure mark that would still exclude it at ``t_end - B`` (marks expire after
``failure_expiry``).

A run stops early, after ``t_quiet + P``, as soon as every group is online; otherwise at ``t_quiet + B``.

Output: ``N schedules, K violations`` (K = schedules with a violation) and, for each of the first
violations, the schedule seed, what broke, and the schedule shrunk by delta debugging (faults dropped one
by one while it still fails), in the form ``--replay`` takes. Exit status 1 when K > 0. ``--exclude``
leaves fault kinds out (e.g. ``--exclude apply`` while a known ``config apply`` bug would hide the rest).

Determinism: a schedule's faults and every random choice made while it runs (store delays) come from its
seed; the loop runs callbacks in FIFO order and timers by time, then by insertion; ``main`` re-executes
itself with ``PYTHONHASHSEED=0``. No thread, subprocess or real I/O runs on the virtual loop: the
supervisor's ``fence_node`` is replayed without its ``asyncio.to_thread`` leftover kill. NB: the
``kagemusha.control`` functions used for ``move`` and ``apply`` stamp records with the real clock
(``time.time``), which changes no decision.
"""

from __future__ import annotations

import argparse
import asyncio
import contextvars
import logging
import math
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from kagemusha._clock import LoopClock
from kagemusha.errors import ConfigError, KagemushaError, StoreUnavailable
from kagemusha.store._base import KeyValue
from kagemusha.testing._sim import Proc, SimStore, SimWatchdog, World, current_proc, current_world
from kagemusha.testing._vloop import VirtualTimeLoop

__all__ = [
    "Fault",
    "Outcome",
    "Schedule",
    "Setup",
    "generate",
    "main",
    "run_many",
    "run_schedule",
    "shrink",
]

DEFAULT_SCHEDULES = 1000
SIM_TYPES = {"sim": "kagemusha.testing._sim:SimResource"}
SIM_MONITORS = {"sim": "kagemusha.testing._sim:SimMonitor"}


def register() -> None:
    """Register the ``sim`` resource and monitor types (idempotent)."""
    from kagemusha.monitors import REGISTRY as MONITORS
    from kagemusha.resources import REGISTRY as RESOURCES

    RESOURCES.update(SIM_TYPES)
    MONITORS.update(SIM_MONITORS)


# -- schedules ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preset:
    """Timers of a simulated cluster (seconds of virtual time)."""

    name: str
    heartbeat_interval: float
    heartbeat_timeout: float
    store_timeout: float
    fence_margin: float
    startup_wait: float
    failure_expiry: float
    #: watchdog timeout in seconds, or 0 for none (then hangs and failing/long fences are not injected:
    #: nothing could cover them)
    watchdog: float


_FIXED = {
    # the defaults of cluster.toml (config/_schema.py: 0.15, 1.0, 0.25, 0.15)
    "tight": Preset("tight", 0.15, 1.0, 0.25, 0.15, 0.5, 4.0, 0.0),
    # a watchdog counts whole seconds: floor(ttl - hb - st) = 2
    "wd": Preset("wd", 0.5, 3.0, 0.5, 0.5, 1.0, 10.0, 2.0),
    # room for renewal retries (hb + 2 st + fm < ttl) and a fence_margin below store_timeout
    "retry": Preset("retry", 0.2, 1.2, 0.3, 0.1, 0.5, 5.0, 0.0),
}
#: name -> (heartbeat_interval, store_timeout, fence_margin, watchdog): heartbeat_timeout is the smallest
#: the config validation accepts, whatever the timing rule in force is (``config.timing_errors``).
_EDGE = {"edge": (0.2, 0.3, 0.2, False), "wd-edge": (0.5, 0.5, 1.0, True)}
PRESET_NAMES = ("edge", "retry", "tight", "wd", "wd-edge")
_PRESETS: dict[str, Preset] = {}


def preset(name: str) -> Preset:
    """The timers called ``name``; the ``edge`` ones sit exactly at the bound the timing rule allows."""
    if name in _PRESETS:
        return _PRESETS[name]
    if name in _FIXED:
        p = _FIXED[name]
    else:
        hb, st, fm, wd = _EDGE[name]
        ttl = _smallest_valid_ttl(hb, st, fm)
        if wd:
            # a watchdog of whole seconds, longer than a healthy node's longest gap between renewals
            from kagemusha.config._load import retry_backoff

            need_wd = math.floor(hb + 2 * st + retry_backoff(hb, st)) + 1
            ttl = max(ttl, st + fm + need_wd)
        p = Preset(name, hb, ttl, st, fm, 2 * hb, 10 * ttl, float(math.floor(ttl - st - fm + 1e-9)) if wd else 0.0)
    _PRESETS[name] = p
    return p


def _smallest_valid_ttl(hb: float, st: float, fm: float) -> float:
    from kagemusha.config import Config
    from kagemusha.config._load import timing_errors

    base = Config.model_validate({"cluster": {"name": "x"}, "nodes": [{"name": "n1", "address": "127.0.0.1:1"}]})

    def ok(ttl: float) -> bool:
        c = base.model_copy(update={"cluster": base.cluster.model_copy(update={
            "heartbeat_interval": hb, "heartbeat_timeout": ttl, "store_timeout": st, "fence_margin": fm})})
        return not timing_errors(c)

    hi = 60.0
    if not ok(hi):
        raise RuntimeError(f"no heartbeat_timeout up to {hi}s passes the timing rule for hb={hb} st={st} fm={fm}")
    lo_c, hi_c = 1, int(hi * 100)
    while lo_c < hi_c:
        mid = (lo_c + hi_c) // 2
        if ok(mid / 100):
            hi_c = mid
        else:
            lo_c = mid + 1
    return hi_c / 100


START_DELAY = 0.05
STOP_DELAY = 0.05
RESOURCES_PER_GROUP = 2


def stop_timeout(p: Preset) -> float:
    return 2 * p.heartbeat_interval


@dataclass(frozen=True)
class Setup:
    seed: str
    nodes: int
    groups: int
    preset: str

    def __str__(self) -> str:
        return f"seed={self.seed} nodes={self.nodes} groups={self.groups} preset={self.preset}"


@dataclass(frozen=True)
class Fault:
    at: float
    kind: str
    node: str = ""
    group: str = ""
    dur: float = 0.0
    x: float = 0.0
    mode: str = ""

    def __str__(self) -> str:
        parts = [f"{self.at:.3f}", self.kind]
        if self.node:
            parts.append(self.node)
        if self.group:
            parts.append(self.group)
        if self.dur:
            parts.append(f"dur={self.dur:.3f}")
        if self.x:
            parts.append(f"x={self.x:.3f}")
        if self.mode:
            parts.append(f"mode={self.mode}")
        return " ".join(parts)

    @classmethod
    def parse(cls, text: str) -> Fault:
        words = text.split()
        at, kind = float(words[0]), words[1]
        kw: dict[str, Any] = {}
        pos = []
        for w in words[2:]:
            if "=" in w:
                k, _, v = w.partition("=")
                kw[k] = v if k == "mode" else float(v)
            else:
                pos.append(w)
        for w in pos:
            if w.startswith("n") and w[1:].isdigit():
                kw["node"] = w
            else:
                kw["group"] = w
        return cls(at, kind, **kw)


@dataclass(frozen=True)
class Schedule:
    setup: Setup
    faults: tuple[Fault, ...]

    def __str__(self) -> str:
        return f"{self.setup} | " + "; ".join(str(f) for f in self.faults)

    @classmethod
    def parse(cls, text: str) -> Schedule:
        head, _, tail = text.partition("|")
        kv = dict(w.split("=", 1) for w in head.split())
        setup = Setup(kv["seed"], int(kv["nodes"]), int(kv["groups"]), kv["preset"])
        faults = tuple(Fault.parse(f) for f in tail.split(";") if f.strip())
        return cls(setup, faults)

    @property
    def preset(self) -> Preset:
        return preset(self.setup.preset)

    def t_quiet(self) -> float:
        return max([f.at + f.dur for f in self.faults] + [first_fault_at(self.preset)])

    def pending(self) -> float:
        """P: how long something in flight when the faults stop may still take (module docstring)."""
        p = self.preset
        longest_fence = max([f.x for f in self.faults if f.kind == "fence-slow"] + [0.0])
        # a lost request lands up to x after the client's timeout, possibly after the faults stopped
        latest_landing = max([p.store_timeout + f.x for f in self.faults if f.kind == "slow" and f.mode == "lost"] + [0.0])
        return max(longest_fence, latest_landing, RESOURCES_PER_GROUP * stop_timeout(p), p.store_timeout, p.watchdog)

    def settle(self) -> float:
        """After ``t_quiet + settle`` the run may stop as soon as every group is online.

        By then whatever was in flight when the faults stopped has ended (``P``); a group that is online
        then, with every agent awake and the store healthy, stays so unless a bug moves it.
        """
        return self.pending()

    def bound(self) -> float:
        """The liveness bound B (module docstring)."""
        p = self.preset
        return (self.pending() + p.heartbeat_timeout + p.startup_wait + 3 * (p.heartbeat_interval + p.store_timeout)
                + RESOURCES_PER_GROUP * (START_DELAY + STOP_DELAY) + p.heartbeat_timeout)


def first_fault_at(p: Preset) -> float:
    """Faults start once the groups could be online (a few begin while they start)."""
    return p.startup_wait + 2 * p.heartbeat_interval


def generate(seed: str, exclude: frozenset[str] = frozenset()) -> Schedule:
    """A random schedule, fully determined by ``seed`` (and the fault kinds excluded).

    ``exclude`` names fault kinds (``agent-crash``) or an ``apply`` variant (``apply:add``) to leave out.
    """
    rng = random.Random(seed)
    setup = Setup(seed, rng.choice((2, 3)), rng.choice((1, 2)), rng.choice(PRESET_NAMES))
    p = preset(setup.preset)
    nodes = [f"n{i + 1}" for i in range(setup.nodes)]
    groups = [f"g{i + 1}" for i in range(setup.groups)]
    ttl = p.heartbeat_timeout
    t0 = first_fault_at(p)
    window = 2 * ttl
    # kind -> weight: the store faults (which make or break lease safety) come most often
    weights = {"crash": 2, "agent-crash": 2, "outage": 2, "partition": 2, "slow": 3, "stop-fail": 1, "fence-slow": 1,
               "monitor-fail": 1, "move": 2, "apply": 1, "leave": 1}
    if p.watchdog:
        weights |= {"hang": 2, "fence-fail": 1}
    kinds = [k for k, n in weights.items() if k not in exclude for _ in range(n)]
    variants = [v for v in ("add", "drop", "mon", "res", "order") if f"apply:{v}" not in exclude]
    if not variants:
        kinds = [k for k in kinds if k != "apply"]
    faults: list[Fault] = []
    for _ in range(rng.randint(1, 4)):
        at = round(t0 + rng.uniform(0, window), 3)
        kind = rng.choice(kinds)
        # Faults come in clusters: half of them hit the node the previous one hit.
        node = faults[-1].node if faults and faults[-1].node and rng.random() < 0.5 else rng.choice(nodes)
        group = rng.choice(groups)
        dur = round(rng.uniform(0.3, 1.5) * ttl, 3)
        if kind in ("crash", "agent-crash", "leave"):
            faults.append(Fault(at, kind, node))
            if rng.random() < 0.7:
                faults.append(Fault(round(at + rng.uniform(0.2, 2.0) * ttl, 3), "rejoin", node))
        elif kind == "outage":
            faults.append(Fault(at, kind, dur=dur))
        elif kind == "partition":
            faults.append(Fault(at, kind, node, dur=dur, mode=rng.choice(("refuse", "blackhole"))))
        elif kind == "slow":
            how = rng.choice(("answer", "answer", "request", "both", "lost"))
            # lost: a retransmitted request may land after the retry of its call and the calls after that
            most = rng.uniform(0.5, 2.0) * ttl if how == "lost" else rng.uniform(0.6, 1.5) * p.store_timeout
            faults.append(Fault(at, kind, node, dur=dur, x=round(most, 3), mode=how))
            if rng.random() < 0.7:  # a link that degrades, then breaks
                faults.append(Fault(round(at + dur, 3), "partition", node, dur=round(rng.uniform(0.3, 1.5) * ttl, 3),
                                    mode=rng.choice(("refuse", "blackhole", "blackhole"))))
        elif kind == "stop-fail":
            faults.append(Fault(at, kind, node, group, dur=dur, mode=rng.choice(("raise", "hang"))))
        elif kind == "fence-slow":
            most = 1.5 * ttl if p.watchdog else 0.5 * p.fence_margin
            faults.append(Fault(at, kind, node, dur=dur, x=round(rng.uniform(0.01, most), 3)))
        elif kind == "monitor-fail":
            faults.append(Fault(at, kind, node, group, dur=dur))
        elif kind == "move":
            faults.append(Fault(at, kind, node, group))
        elif kind == "apply":
            faults.append(Fault(at, kind, mode=rng.choice(variants)))
        elif kind in ("hang", "fence-fail"):
            faults.append(Fault(at, kind, node, dur=dur))
    faults.sort(key=lambda f: f.at)
    return Schedule(setup, tuple(faults))


# -- the cluster config --------------------------------------------------------------------------


def config_dict(s: Schedule, state_dir: str) -> dict[str, Any]:
    p = s.preset
    nodes = [f"n{i + 1}" for i in range(s.setup.nodes)]
    groups = []
    for gi in range(s.setup.groups):
        order = nodes[gi % len(nodes):] + nodes[: gi % len(nodes)]
        groups.append(group_dict(f"g{gi + 1}", order, p))
    return {
        "cluster": {
            "name": "sim", "store": "local:/nonexistent/sim.db",
            "heartbeat_interval": p.heartbeat_interval, "heartbeat_timeout": p.heartbeat_timeout,
            "store_timeout": p.store_timeout, "fence_margin": p.fence_margin, "startup_wait": p.startup_wait,
            "failure_expiry": p.failure_expiry, "state_dir": state_dir,
        },
        "nodes": [{"name": n, "address": f"127.0.0.1:{7000 + i}"} for i, n in enumerate(nodes)],
        "groups": groups,
    }


def group_dict(name: str, nodes: list[str], p: Preset) -> dict[str, Any]:
    return {
        "name": name, "nodes": nodes,
        "resources": [
            {"name": f"r{i + 1}", "type": "sim", "start_delay": START_DELAY, "stop_delay": STOP_DELAY,
             "stop_timeout": stop_timeout(p)}
            for i in range(RESOURCES_PER_GROUP)
        ],
        "monitors": [{"name": "m1", "type": "sim", "interval": 2 * p.heartbeat_interval,
                      "timeout": 2 * p.heartbeat_interval, "retries": 2}],
    }


def changed_config(cfg: dict[str, Any], how: str, p: Preset) -> dict[str, Any]:
    import copy

    new = copy.deepcopy(cfg)
    groups = new["groups"]
    nodes = [n["name"] for n in new["nodes"]]
    if how == "add":
        names = {g["name"] for g in groups}
        name = next(f"g{i}" for i in range(1, 10) if f"g{i}" not in names)
        groups.append(group_dict(name, list(reversed(nodes)), p))
    elif how == "drop" and len(groups) > 1:
        groups.pop()
    elif how == "mon":
        for g in groups:
            for m in g["monitors"]:
                m["interval"] = round(m["interval"] * 1.5, 3)
    elif how == "res" and groups:
        g = groups[0]
        g["resources"].append({**g["resources"][0], "name": f"r{len(g['resources']) + 1}"})
    elif how == "order" and groups:
        groups[0]["nodes"] = list(reversed(groups[0]["nodes"]))
        groups[0]["failback"] = "auto"
    return new


_CONFIG_CACHE: dict[str, Any] = {}
_TOML_CACHE: dict[str, str] = {}
_WRITTEN: dict[Path, str] = {}


def _toml(d: dict[str, Any]) -> str:
    import json

    import tomli_w

    key = json.dumps(d, sort_keys=True)
    text = _TOML_CACHE.get(key)
    if text is None:
        text = _TOML_CACHE[key] = tomli_w.dumps(d)
    return text


def _write_if_changed(path: Path, text: str) -> None:
    if _WRITTEN.get(path) != text or not path.exists():
        path.write_text(text, encoding="utf-8")
        _WRITTEN[path] = text


def _tempdir() -> tempfile.TemporaryDirectory[str]:
    shm = Path("/dev/shm")
    return tempfile.TemporaryDirectory(prefix="kg-sim-", dir=shm if shm.is_dir() else None)


def load_cached(path: Path, text: str) -> Any:
    from kagemusha.config import load_config

    key = f"{path}\0{text}"
    cfg = _CONFIG_CACHE.get(key)
    if cfg is None:
        cfg = load_config(path)
        if len(_CONFIG_CACHE) > 256:
            _CONFIG_CACHE.clear()
        _CONFIG_CACHE[key] = cfg
    return cfg


def owner_of(kv: KeyValue, root: str) -> str | None:
    """The group whose owner key ``kv`` is, read with the store protocol's own parser."""
    from kagemusha.protocol import parse_snapshot

    snap = parse_snapshot([kv], kv.mod_revision, root)
    for name, rec in snap.groups.items():
        if rec.owner is not None:
            return name
    return None


# -- one run --------------------------------------------------------------------------------------


@dataclass
class Outcome:
    schedule: Schedule
    violations: list[str]
    timeline: list[tuple[float, str, str, str, str]] = field(default_factory=list)
    virtual_seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations


class _Run:
    """The driver of one schedule: starts agents, applies faults, checks liveness at the end."""

    def __init__(self, s: Schedule, workdir: Path, loop: VirtualTimeLoop) -> None:
        from kagemusha.protocol import root_of

        self.s = s
        self.p = s.preset
        self.loop = loop
        self.workdir = workdir
        self.cfg_dict = config_dict(s, str(workdir / "state"))
        self.path = workdir / "cluster.toml"
        self.text = ""
        self.w = World(loop, random.Random(f"{s.setup.seed}:run"), client_timeout=self.p.store_timeout,
                       root=root_of("sim"), owner_of=owner_of)
        self.agents: dict[str, Proc] = {}
        self.supervisor_fences: dict[str, asyncio.Task[Any]] = {}  # node -> its last supervisor fence
        self.ctl = self.w.new_proc("", "ctl")
        self.write_config(self.cfg_dict)
        # As after the first `kagemusha config apply`: agents find their file applied and start at once.
        from kagemusha.config._stored import StoredConfig
        from kagemusha.protocol import Keys

        self.w.backend.set(Keys("sim").config, StoredConfig.new(self.text, 1, "sim").to_value(), None)

    def write_config(self, d: dict[str, Any]) -> None:
        self.text = _toml(d)
        _write_if_changed(self.path, self.text)

    def config(self) -> Any:
        return load_cached(self.path, self.text)

    # -- processes

    def spawn(self, p: Proc, coro: Any) -> asyncio.Task[Any]:
        ctx = contextvars.copy_context()
        ctx.run(current_proc.set, p)
        task = self.loop.create_task(coro, context=ctx)
        p.task = task
        return task

    def start_agent(self, node: str) -> None:
        from kagemusha.agent import Agent

        cur = self.agents.get(node)
        if cur is not None and not cur.dead:
            return
        fencing = self.supervisor_fences.get(node)
        if fencing is not None and not fencing.done():
            # NB: the agent's supervisor fences after its child died and only then exits; the service
            # manager starts the next agent after that (one unit): never while the old fence still runs.
            fencing.add_done_callback(lambda _t: self.start_agent(node))
            return
        cfg = self.config()
        p = self.w.new_proc(node, "agent")
        p.config = cfg
        p.clock = LoopClock()
        wd = None
        if self.p.watchdog:
            wd = self.w.watchdogs.get(node)
            if wd is None:
                wd = self.w.watchdogs[node] = SimWatchdog(self.w, node, self.p.watchdog)
        p.agent = Agent(cfg, node, store=SimStore(self.w, p), serve_api=False, clock=p.clock, watchdog=wd)
        self.agents[node] = p
        self.spawn(p, self._agent_main(p))

    async def _agent_main(self, p: Proc) -> None:
        try:
            await p.agent.run()
        except asyncio.CancelledError:
            raise
        except (StoreUnavailable, TimeoutError, ConfigError):
            pass  # could not start (the store was out): the process exits, systemd would retry
        except Exception as exc:  # noqa: BLE001 - a bug in the agent: report it
            self.w.violation(f"agent-error: agent on {p.node} raised {_describe(exc)}")
        p.dead = True
        self.supervisor_fence(p)  # whatever the exit (kagemusha._supervisor.supervise)

    def supervisor_fence(self, agent: Proc) -> None:
        """``_supervisor.supervise`` after the agent exited: fence with the config it loaded at start and
        the one the agent last applied (the agent keeps it in its state directory)."""
        sup = self.w.new_proc(agent.node, "supervisor")
        self.supervisor_fences[agent.node] = self.spawn(
            sup, self._fence_node(agent.config, agent.node, also=agent.agent.config))

    async def _fence_node(self, config: Any, node: str, also: Any = None) -> None:
        # kagemusha._supervisor.fence_node minus its thread for the tag sweep: the stand-ins leave no
        # processes behind, and threads cannot run on the virtual loop.
        from kagemusha._supervisor import fence_groups

        await fence_groups(config, node, also=also)

    # -- faults

    def at(self, t: float, fn: Callable[[], object]) -> None:
        self.loop.call_at(t, fn)

    def apply_fault(self, f: Fault) -> None:
        w, end = self.w, f.at + f.dur
        a = self.agents.get(f.node)
        alive = a is not None and not a.dead
        if f.kind == "crash":
            w.note(f.node, "", "", "node crash")
            w.node_crash(f.node, "node crash")
        elif f.kind == "agent-crash":
            if alive:
                assert a is not None
                w.note(f.node, "", "", "agent crash")
                w.kill(a)
                self.supervisor_fence(a)
        elif f.kind == "rejoin":
            if not alive:
                self.start_agent(f.node)
        elif f.kind == "leave":
            if alive:
                assert a is not None
                a.agent.request_leave("sim: leave")
        elif f.kind == "hang":
            if alive and a is not None and a.hold is None:
                ev = asyncio.Event()
                a.hold = ev
                a.clock.hold = ev

                def wake(a: Proc = a, ev: asyncio.Event = ev) -> None:
                    ev.set()
                    if a.hold is ev:
                        a.hold = None
                    if a.clock.hold is ev:
                        a.clock.hold = None

                self.at(end, wake)
        elif f.kind == "outage":
            w.outage = True
            self.at(end, lambda: setattr(w, "outage", False))
        elif f.kind == "partition":
            w.partitions[f.node] = f.mode or "refuse"
            self.at(end, lambda: w.partitions.pop(f.node, None))
        elif f.kind == "slow":
            w.slow[f.node] = (f.x, f.mode or "both")
            self.at(end, lambda: w.slow.pop(f.node, None))
        elif f.kind == "stop-fail":
            w.stop_fail[(f.node, f.group)] = f.mode or "raise"
            self.at(end, lambda: w.stop_fail.pop((f.node, f.group), None))
        elif f.kind == "fence-fail":
            w.fence_fail.add(f.node)
            self.at(end, lambda: w.fence_fail.discard(f.node))
        elif f.kind == "fence-slow":
            w.fence_delay[f.node] = f.x
            self.at(end, lambda: w.fence_delay.pop(f.node, None))
        elif f.kind == "monitor-fail":
            w.monitor_fail.add((f.node, f.group))
            self.at(end, lambda: w.monitor_fail.discard((f.node, f.group)))
        elif f.kind == "move":
            self.spawn(self.ctl, self._move(f.group, f.node))
        elif f.kind == "apply":
            self.spawn(self.ctl, self._apply(f.mode))
        w.notify()

    async def _move(self, group: str, to: str) -> None:
        from kagemusha.control import ActionFailed, ClusterControl, UsageError

        ctl = ClusterControl(self.config(), SimStore(self.w, self.ctl), by="sim")
        try:
            await ctl.move_group(group, to, wait=-1.0)
        except (ActionFailed, UsageError, StoreUnavailable):
            pass

    async def _apply(self, how: str) -> None:
        from kagemusha.control import ActionFailed, apply_config

        old_dict, old_text = self.cfg_dict, self.text
        new = changed_config(self.cfg_dict, how, self.p)
        self.write_config(new)
        try:
            await apply_config(SimStore(self.w, self.ctl), str(self.path), by="sim")
            self.cfg_dict = new
        except (ActionFailed, StoreUnavailable, KagemushaError):
            self.cfg_dict = old_dict
            self.text = old_text
            _write_if_changed(self.path, old_text)

    def heal(self) -> None:
        w = self.w
        w.outage = False
        w.partitions.clear()
        w.slow.clear()
        w.stop_fail.clear()
        w.fence_fail.clear()
        w.fence_delay.clear()
        w.monitor_fail.clear()
        for a in self.agents.values():
            if a.hold is not None:
                a.hold.set()
                a.hold = None
                a.clock.hold = None
        w.notify()

    async def main(self) -> None:
        current_world.set(self.w)
        for i in range(self.s.setup.nodes):
            self.start_agent(f"n{i + 1}")
        for f in self.s.faults:
            await asyncio.sleep(max(0.0, f.at - self.loop.time()))
            self.apply_fault(f)
        t_quiet = self.s.t_quiet()
        await asyncio.sleep(max(0.0, t_quiet - self.loop.time()))
        self.heal()
        bound = self.s.bound()
        t_end = t_quiet + bound
        # Stop early once every group is online, after what was in flight had time to end (``settle``).
        await asyncio.sleep(max(0.0, t_quiet + self.s.settle() - self.loop.time()))
        while self.loop.time() < t_end and self.check_liveness(t_end, report=False):
            await asyncio.sleep(min(self.p.heartbeat_interval, t_end - self.loop.time()))
        self.check_liveness(t_end, report=True)

    def check_liveness(self, t_end: float, *, report: bool) -> bool:
        """True while some group that should be online is not (and, with ``report``, say which)."""
        from kagemusha.protocol import parse_snapshot

        w = self.w
        b = w.backend
        b.reap()
        kvs, rev = b.op_get_prefix(w.root)
        snap = parse_snapshot(kvs, rev, w.root)
        cfg = self.config()
        expiry = cfg.cluster.failure_expiry
        wall_start = LoopClock().epoch + t_end - self.s.bound()
        live = {
            n for n, a in self.agents.items()
            if not a.dead and a.hold is None and w.live_lease_of(a) and not a.agent.leaving
        }
        missing = False
        for spec in cfg.groups:
            rec = snap.group(spec.name)
            if rec.target_online is False:
                continue
            marked = {f.node for f in rec.failures if f.at > wall_start - expiry}
            eligible = [n for n in spec.nodes if n in live and n not in marked and n not in snap.standby]
            if not eligible:
                continue
            byn = w.running.get(spec.name, {})
            runs = sorted(n for n, rs in byn.items() if rs)
            owner = rec.owner.node if rec.owner is not None else None
            want = {r.name for r in spec.resources}
            if owner is None or runs != [owner] or byn.get(owner, set()) != want:
                missing = True
                if not report:
                    return True
                w.violation(
                    f"liveness: {spec.name} not online {self.s.bound():.2f}s after the faults stopped "
                    f"(eligible {','.join(eligible)}; owner {owner}; running: "
                    + (", ".join(f"{n} {','.join(sorted(byn[n]))}" for n in runs) or "nothing")
                    + f" of {','.join(sorted(want))})"
                )
        return missing


def _describe(exc: BaseException) -> str:
    """The innermost exceptions of ``exc`` with the frame that raised each."""
    import traceback

    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions)
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno} ({tb[-1].line})" if tb else ""
    return f"{type(exc).__name__}: {exc}{where}"


def _silence(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    pass


def run_schedule(s: Schedule, workdir: Path | None = None, *, trace: bool = False) -> Outcome:
    """Run one schedule on a fresh virtual-time loop; return what broke."""
    register()
    tmp = None
    if workdir is None:
        tmp = _tempdir()
        workdir = Path(tmp.name)
    loop = VirtualTimeLoop()
    loop.set_exception_handler(_silence)
    run = _Run(s, workdir, loop)
    token = current_world.set(run.w)
    try:
        loop.run_until_complete(run.main())
    except Exception as exc:  # noqa: BLE001 - a crash of the simulation itself counts, with its text
        run.w.violation(f"simulation-error: {type(exc).__name__}: {exc}")
    finally:
        _teardown(loop, run.w)
        current_world.reset(token)
        if tmp is not None:
            tmp.cleanup()
    return Outcome(s, run.w.violations, run.w.timeline, loop.time())


def _teardown(loop: VirtualTimeLoop, w: World) -> None:
    w.closing = True
    for _ in range(5):
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        if not tasks:
            break
        for t in tasks:
            t.cancel()
        try:
            loop.run_until_complete(asyncio.wait(tasks, timeout=60.0))
        except Exception:  # noqa: BLE001 - best effort: the run is over
            break
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    except Exception:  # noqa: BLE001, S110 - best effort: the run is over
        pass
    loop.close()


# -- shrinking ------------------------------------------------------------------------------------


def _first_kind(violations: list[str]) -> str:
    """The invariant (and, for agent errors, the exception and place) of the first violation."""
    v = violations[0].split(" ", 2)
    kind = v[1].rstrip(":")
    if kind == "agent-error" and " at " in v[2]:
        return kind + v[2].split(" raised ", 1)[-1].split(":", 1)[0] + v[2].rsplit(" at ", 1)[1].split(" ", 1)[0]
    return kind


def _kinds(violations: list[str]) -> set[str]:
    return {v.split(" ", 2)[1].rstrip(":") for v in violations}


def shrink(s: Schedule, workdir: Path | None = None) -> tuple[Schedule, Outcome]:
    """Drop faults one by one while the schedule still breaks the same invariant (delta debugging, n=1)."""
    first = run_schedule(s, workdir)
    want = _kinds(first.violations)
    best, best_out = s, first
    changed = True
    while changed:
        changed = False
        for i in range(len(best.faults)):
            cand = replace(best, faults=best.faults[:i] + best.faults[i + 1:])
            out = run_schedule(cand, workdir)
            if out.violations and _kinds(out.violations) & want:
                best, best_out, changed = cand, out, True
                break
    return best, best_out


# -- many runs ------------------------------------------------------------------------------------


def schedule_seed(seed: int | str, i: int) -> str:
    return f"{seed}:{i}"


class _TraceFormatter(logging.Formatter):
    """Virtual time, the process (node, kind, pid) that logged, the message and its structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            t = f"{asyncio.get_running_loop().time():9.3f}"
        except RuntimeError:
            t = " " * 9
        p = current_proc.get(None)
        who = f"{p.node or '-':3} {p.kind[:3]} {p.pid}" if p is not None else "-"
        fields = " ".join(f"{k}={v}" for k, v in (getattr(record, "kv", None) or {}).items())
        return f"{t} {who:14} {record.name.removeprefix('kagemusha.'):10} {record.getMessage()} {fields}"


def _trace_logs() -> None:
    h = logging.StreamHandler(sys.stdout)
    h.setFormatter(_TraceFormatter())
    root = logging.getLogger("kagemusha")
    root.handlers[:] = [h]
    root.setLevel(logging.INFO)
    root.propagate = False


def _quiet_logs() -> None:
    logging.getLogger("kagemusha").setLevel(logging.CRITICAL + 10)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL + 10)


def _work(args: tuple[int | str, list[int], bool, frozenset[str]]) -> tuple[list[tuple[int, list[str]]], float, float]:
    seed, indices, stop_first, exclude = args
    _quiet_logs()
    register()
    bad: list[tuple[int, list[str]]] = []
    vsec = 0.0
    cpu0 = time.process_time()
    with _tempdir() as d:
        for i in indices:
            out = run_schedule(generate(schedule_seed(seed, i), exclude), Path(d))
            vsec += out.virtual_seconds
            if out.violations:
                bad.append((i, out.violations))
                if stop_first:
                    break
    return bad, vsec, time.process_time() - cpu0


@dataclass
class Report:
    schedules: int
    failures: list[tuple[int, list[str]]]
    seconds: float
    virtual_seconds: float
    cpu_seconds: float


def run_many(n: int, seed: int | str, *, workers: int = 1, stop_first: bool = False,
             exclude: frozenset[str] = frozenset()) -> Report:
    """Run schedules ``0..n-1`` of ``seed``; in ``workers`` processes when more than one.

    With ``stop_first`` (one worker) it stops at the first violating schedule.
    """
    t0 = time.perf_counter()
    if workers <= 1:
        bad, vsec, cpu = _work((seed, list(range(n)), stop_first, exclude))
    else:
        chunk = max(1, min(50, math.ceil(n / (workers * 4))))
        jobs = [(seed, list(range(i, min(n, i + chunk))), stop_first, exclude) for i in range(0, n, chunk)]
        ctx = multiprocessing.get_context("fork")
        bad, vsec, cpu = [], 0.0, 0.0
        with ctx.Pool(workers) as pool:
            for b, v, c in pool.imap_unordered(_work, jobs):
                bad.extend(b)
                vsec += v
                cpu += c
        bad.sort()
    return Report(n if not (stop_first and bad) else bad[0][0] + 1, bad, time.perf_counter() - t0, vsec, cpu)


def _print_trace(out: Outcome) -> None:
    for t, node, group, res, what in out.timeline:
        print(f"  {t:9.3f}  {node:3} {group:3} {res:3} {what}")


def _iter_chunks(items: list[Any], n: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m kagemusha.testing.simulate", description=__doc__.split("\n")[0])
    ap.add_argument("--schedules", type=int, default=DEFAULT_SCHEDULES)
    ap.add_argument("--seed", default="1")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--replay", help="run one schedule as printed after 'shrunk:'")
    ap.add_argument("--trace", action="store_true", help="with --replay: print the timeline and the agents' log")
    ap.add_argument("--show", type=int, default=3, help="how many violating schedules to shrink and print")
    ap.add_argument("--exclude", default="", help="comma-separated fault kinds (or apply:<variant>) to leave out")
    args = ap.parse_args(argv)
    if os.environ.get("PYTHONHASHSEED") != "0":
        # Same seed, same run: no set/dict order may depend on the per-process string hash.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "kagemusha.testing.simulate", *(argv or sys.argv[1:])], env)
    if args.replay:
        if args.trace:
            _trace_logs()
        else:
            _quiet_logs()
        out = run_schedule(Schedule.parse(args.replay), trace=args.trace)
        _print_trace(out)
        print("\n".join(out.violations) or "no violation")
        return 1 if out.violations else 0
    exclude = frozenset(x.strip() for x in args.exclude.split(",") if x.strip())
    rep = run_many(args.schedules, args.seed, workers=args.workers, exclude=exclude)
    print(f"{rep.schedules} schedules, {len(rep.failures)} violations")
    if rep.failures:
        from collections import Counter

        by_kind = Counter(k for _, v in rep.failures for k in _kinds(v))
        print("by invariant: " + ", ".join(f"{k} {n}" for k, n in sorted(by_kind.items())))
    print(f"({rep.seconds:.1f} s wall, {rep.cpu_seconds:.1f} s CPU in {args.workers} workers, "
          f"{rep.virtual_seconds:.0f} s virtual)")
    _quiet_logs()
    # One of each kind of first violation first (a common bug would fill the list), then the rest in order.
    firsts: dict[str, tuple[int, list[str]]] = {}
    for f in rep.failures:
        firsts.setdefault(_first_kind(f[1]), f)
    shown = list(firsts.values()) + [f for f in rep.failures if f not in firsts.values()]
    for i, violations in shown[: args.show]:
        s = generate(schedule_seed(args.seed, i), exclude)
        small, out = shrink(s)
        print(f"\nschedule {i} (seed {schedule_seed(args.seed, i)}): {violations[0]}")
        for v in violations[1:4]:
            print(f"  also: {v}")
        print(f"  shrunk ({len(small.faults)} of {len(s.faults)} faults): {out.violations[0] if out.violations else '?'}")
        print(f"  replay: python -m kagemusha.testing.simulate --replay '{small}'")
    return 1 if rep.failures else 0


if __name__ == "__main__":
    sys.exit(main())

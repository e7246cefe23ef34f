"""decide() is pure: table-driven cases, exhaustive invariants, and a crash-anywhere simulation."""

from __future__ import annotations

import itertools
import random
from dataclasses import replace

import pytest

from kagemusha.cluster import (
    ActionKind,
    ClusterView,
    FailureMark,
    GroupView,
    LastRun,
    LocalState,
    MonitorRequest,
    OwnerRecord,
    decide,
)
from kagemusha.config import Config, parse_config
from kagemusha.resources import ClpEvent

NOW = 1_000_000.0


def make_config(failback: str = "manual", nodes: tuple[str, ...] = ("n1", "n2"), **mon: object) -> Config:
    monitor = {"name": "m1", "type": "exec", "command": "true", "retries": 1,
               "restart_limit": 1, "failover_limit": 1, "final_action": "none", **mon}
    return parse_config({
        "cluster": {"name": "c", "store": "local:/tmp/x.db", "startup_wait": 5.0},
        "nodes": [{"name": n, "address": f"127.0.0.1:{7000 + i}"} for i, n in enumerate(("n1", "n2", "n3"))],
        "groups": [{"name": "g", "nodes": list(nodes), "failback": failback, "monitors": [monitor]}],
    })


def view(node: str = "n1", *, members: tuple[str, ...] = ("n1", "n2"), lease: bool = True, leaving: bool = False,
         standby: tuple[str, ...] = (), joined_at: float = 0.0, **g: object) -> ClusterView:
    return ClusterView(node=node, has_lease=lease, members=frozenset(members), standby=frozenset(standby),
                       leaving=leaving, joined_at=joined_at, groups=(GroupView(name="g", **g),))  # type: ignore[arg-type]


def kinds(v: ClusterView, cfg: Config | None = None, now: float = NOW) -> list[tuple[ActionKind, object]]:
    plan = decide(v, cfg or make_config(), now)
    return [(a.kind, a.event) for a in plan.actions]


# -- table-driven -------------------------------------------------------------------------

CASES = [
    # (id, view, config kwargs, expected kinds)
    ("home takes unowned group", view("n1"), {}, [(ActionKind.TAKE, ClpEvent.START)]),
    ("standby does not take while home is up", view("n2"), {}, []),
    ("standby takes when home is down", view("n2", members=("n2",), last=LastRun("n1", clean=False)), {},
     [(ActionKind.TAKE, ClpEvent.FAILOVER)]),
    ("clean release -> START event", view("n2", members=("n2",), last=LastRun("n1", clean=True)), {},
     [(ActionKind.TAKE, ClpEvent.START)]),
    ("startup wait for higher-priority node", view("n2", members=("n2",), joined_at=NOW - 1), {}, []),
    ("startup wait over", view("n2", members=("n2",), joined_at=NOW - 10), {}, [(ActionKind.TAKE, ClpEvent.START)]),
    ("owner starts what it owns", view("n1", owner=OwnerRecord("n1", ClpEvent.FAILOVER)), {},
     [(ActionKind.START, ClpEvent.FAILOVER)]),
    ("running owner does nothing", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING), {}, []),
    ("manual failback stays", view("n2", owner=OwnerRecord("n2"), local=LocalState.RUNNING), {}, []),
    ("auto failback returns home", view("n2", owner=OwnerRecord("n2"), local=LocalState.RUNNING), {"failback": "auto"},
     [(ActionKind.STOP, None)]),
    ("auto failback waits for home", view("n2", members=("n2",), owner=OwnerRecord("n2"), local=LocalState.RUNNING),
     {"failback": "auto"}, []),
    ("move: owner stops", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING, move_to="n2"), {},
     [(ActionKind.STOP, None)]),
    ("move: target takes", view("n2", move_to="n2", last=LastRun("n1", True)), {}, [(ActionKind.TAKE, ClpEvent.START)]),
    ("move: home does not take", view("n1", move_to="n2", last=LastRun("n1", True)), {}, []),
    ("group stop", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING, target_online=False), {},
     [(ActionKind.STOP, None)]),
    ("offline target not taken", view("n1", target_online=False), {}, []),
    ("leaving owner stops", view("n1", leaving=True, owner=OwnerRecord("n1"), local=LocalState.RUNNING), {},
     [(ActionKind.STOP, None)]),
    ("leaving node takes nothing", view("n1", leaving=True), {}, []),
    ("standby node drains", view("n1", standby=("n1",), owner=OwnerRecord("n1"), local=LocalState.RUNNING), {},
     [(ActionKind.STOP, None)]),
    ("standby node is skipped in placement", view("n2", standby=("n1",), last=LastRun("n1", True)), {},
     [(ActionKind.TAKE, ClpEvent.START)]),
    ("no lease, running -> fence", view("n1", lease=False, owner=OwnerRecord("n1"), local=LocalState.RUNNING), {},
     [(ActionKind.FENCE_GROUP, None)]),
    ("no lease, stopped -> nothing", view("n1", lease=False), {}, []),
    ("running without ownership -> fence", view("n1", owner=OwnerRecord("n2"), local=LocalState.RUNNING), {},
     [(ActionKind.FENCE_GROUP, None)]),
    ("running, owner key gone -> fence", view("n1", local=LocalState.RUNNING), {}, [(ActionKind.FENCE_GROUP, None)]),
    ("start failed -> release with failure", view("n1", owner=OwnerRecord("n1"), local=LocalState.START_FAILED), {},
     [(ActionKind.STOP, None)]),
    ("stop failed -> leave fenced", view("n1", owner=OwnerRecord("n1"), local=LocalState.STOP_FAILED), {},
     [(ActionKind.LEAVE_FENCED, None)]),
    ("starting -> wait", view("n1", owner=OwnerRecord("n1"), local=LocalState.STARTING), {}, []),
    ("excluded node does not take", view("n1", failures=(FailureMark("n1", NOW - 5),), last=LastRun("n2", False)), {}, []),
    ("next node takes past an excluded one", view("n2", failures=(FailureMark("n1", NOW - 5),), last=LastRun("n1", False)),
     {}, [(ActionKind.TAKE, ClpEvent.FAILOVER)]),
    ("expired failure mark no longer excludes", view("n1", failures=(FailureMark("n1", NOW - 10_000),)), {},
     [(ActionKind.TAKE, ClpEvent.START)]),
    ("monitor: restart first", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING,
                                    request=MonitorRequest("m1", "down")), {}, [(ActionKind.RESTART, None)]),
    ("monitor: failover after restart_limit", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING,
                                                   request=MonitorRequest("m1", "down"), restarts=(NOW - 1,)), {},
     [(ActionKind.STOP, None)]),
    ("monitor: final none after failover_limit", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING,
                                                      request=MonitorRequest("m1", "x"), restarts=(NOW - 1,),
                                                      failovers=(NOW - 1,)), {}, []),
    ("monitor: final stop_group", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING,
                                       request=MonitorRequest("m1", "x"), restarts=(NOW - 1,), failovers=(NOW - 1,)),
     {"final_action": "stop_group"}, [(ActionKind.STOP, None)]),
    ("monitor: final stop_agent", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING,
                                       request=MonitorRequest("m1", "x"), restarts=(NOW - 1,), failovers=(NOW - 1,)),
     {"final_action": "stop_agent"}, [(ActionKind.STOP_AGENT, None)]),
    ("monitor: expired restarts count again", view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING,
                                                   request=MonitorRequest("m1", "x"), restarts=(NOW - 10_000,)), {},
     [(ActionKind.RESTART, None)]),
    ("monitor: failover with nowhere to go -> final", view("n1", members=("n1",), owner=OwnerRecord("n1"),
                                                           local=LocalState.RUNNING, request=MonitorRequest("m1", "x"),
                                                           restarts=(NOW - 1,)),
     {"final_action": "stop_group"}, [(ActionKind.STOP, None)]),
]


@pytest.mark.parametrize("v,cfg_kw,expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_decide_table(v: ClusterView, cfg_kw: dict[str, object], expected: list[tuple[ActionKind, object]]) -> None:
    failback = str(cfg_kw.pop("failback", "manual")) if "failback" in cfg_kw else "manual"
    cfg = make_config(failback, **cfg_kw)
    cfg_kw.setdefault("failback", failback)  # keep the table entry intact across reruns
    assert kinds(v, cfg) == expected


def test_failover_release_is_unclean_and_marks_failure() -> None:
    v = view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING, request=MonitorRequest("m1", "x"),
             restarts=(NOW - 1,))
    (a,) = decide(v, make_config(), NOW).actions
    assert (a.clean, a.mark_failure, a.count_failover) == (False, True, True)
    assert "n2" in a.reason


def test_planned_stops_are_clean() -> None:
    for v in (view("n1", leaving=True, owner=OwnerRecord("n1"), local=LocalState.RUNNING),
              view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING, move_to="n2"),
              view("n1", owner=OwnerRecord("n1"), local=LocalState.RUNNING, target_online=False)):
        (a,) = decide(v, make_config(), NOW).actions
        assert a.clean and not a.mark_failure


def test_decide_is_pure_and_deterministic() -> None:
    v = view("n2", members=("n2",), last=LastRun("n1", False))
    cfg = make_config()
    assert decide(v, cfg, NOW) == decide(v, cfg, NOW)


# -- exhaustive invariants over node states x group states x failback -------------------------

OWNERS = (None, "n1", "n2")
LOCALS = tuple(LocalState)
LASTS = (None, LastRun("n1", True), LastRun("n1", False), LastRun("n2", False))
MEMBERS = (("n1", "n2"), ("n1",), ("n2",), ())


def all_views() -> list[tuple[ClusterView, str]]:
    out = []
    for me, owner, local, target, last, members, lease, leaving, standby, failback, move in itertools.product(
        ("n1", "n2"), OWNERS, LOCALS, (True, False), LASTS, MEMBERS, (True, False), (False, True),
        ((), ("n1",)), ("manual", "auto"), (None, "n2"),
    ):
        if lease and me not in members:
            continue  # a node with a lease is a member
        v = view(me, members=members, lease=lease, leaving=leaving, standby=standby, joined_at=0.0,
                 owner=OwnerRecord(owner) if owner else None, local=local, target_online=target, last=last,
                 move_to=move)
        out.append((v, failback))
    return out


CFGS = {fb: make_config(fb) for fb in ("manual", "auto")}


def test_exhaustive_invariants() -> None:
    views = all_views()
    assert len(views) > 10_000
    for v, fb in views:
        plan = decide(v, CFGS[fb], NOW)
        g = v.groups[0]
        for a in plan.actions:
            ctx = f"{a} for {v} failback={fb}"
            if not v.has_lease:
                assert a.kind == ActionKind.FENCE_GROUP, ctx
            if a.kind == ActionKind.TAKE:
                assert g.owner is None and g.target_online and not v.leaving, ctx
                assert v.node not in v.standby, ctx
                assert a.event == (ClpEvent.FAILOVER if g.last and not g.last.clean else ClpEvent.START), ctx
            if a.kind == ActionKind.START:
                assert g.owner is not None and g.owner.node == v.node and g.local == LocalState.STOPPED, ctx
                assert g.target_online and not v.leaving and v.node not in v.standby, ctx
            if a.kind == ActionKind.STOP:
                assert g.owner is not None and g.owner.node == v.node, ctx
        # Running here without owning it is always fenced at once.
        if v.has_lease and g.local in (LocalState.RUNNING, LocalState.STARTING) and (g.owner is None or g.owner.node != v.node):
            assert [a.kind for a in plan.actions] == [ActionKind.FENCE_GROUP], v
        # A failed stop is never followed by anything but fencing.
        if g.local == LocalState.STOP_FAILED and v.has_lease:
            assert [a.kind for a in plan.actions] in ([ActionKind.LEAVE_FENCED], [ActionKind.FENCE_GROUP]), v


def test_at_most_one_node_takes_a_group() -> None:
    for owner, last, members, standby, failback, move in itertools.product(
        (None,), LASTS, MEMBERS, ((), ("n1",), ("n2",)), ("manual", "auto"), (None, "n1", "n2")
    ):
        takers = []
        for me in members:
            v = view(me, members=members, standby=standby, last=last, move_to=move, joined_at=0.0)
            if any(a.kind == ActionKind.TAKE for a in decide(v, CFGS[failback], NOW).actions):
                takers.append(me)
        assert len(takers) <= 1, (members, standby, last, move, takers)
        eligible = [n for n in members if n not in standby]
        if eligible:
            assert takers, f"someone must take the group: members={members} standby={standby}"


# -- crash-anywhere simulation ----------------------------------------------------------------

class World:
    """A tiny model of the store and the nodes, to replay plans and crash at every step."""

    def __init__(self, cfg: Config, nodes: tuple[str, ...]) -> None:
        self.cfg = cfg
        self.alive = set(nodes)
        self.owner: OwnerRecord | None = None
        self.last: LastRun | None = None
        self.local = {n: LocalState.STOPPED for n in nodes}
        self.move: str | None = None
        self.running_log: list[set[str]] = []

    def view(self, me: str) -> ClusterView:
        return view(me, members=tuple(sorted(self.alive)), owner=self.owner, local=self.local[me], last=self.last,
                    move_to=self.move, joined_at=0.0)

    def crash(self, n: str) -> None:
        self.alive.discard(n)
        self.local[n] = LocalState.STOPPED  # the node's processes died with it
        if self.owner and self.owner.node == n:
            self.owner = None  # lease expired

    def step(self, me: str) -> None:
        if me not in self.alive:
            return
        for a in decide(self.view(me), self.cfg, NOW).actions:
            if a.kind == ActionKind.TAKE and self.owner is None:
                self.owner = OwnerRecord(me, a.event or ClpEvent.START)
                self.last = LastRun(me, False)
                if self.move == me:
                    self.move = None
                self.local[me] = LocalState.RUNNING
            elif a.kind == ActionKind.START:
                self.local[me] = LocalState.RUNNING
            elif a.kind == ActionKind.STOP:
                self.local[me] = LocalState.STOPPED
                self.last = LastRun(me, a.clean)
                self.owner = None
            elif a.kind == ActionKind.FENCE_GROUP:
                self.local[me] = LocalState.STOPPED
        self.running_log.append({n for n, s in self.local.items() if s == LocalState.RUNNING})


def test_simulation_never_runs_a_group_twice() -> None:
    rng = random.Random(1234)
    nodes = ("n1", "n2", "n3")
    for failback in ("manual", "auto"):
        cfg = make_config(failback, nodes=nodes)
        for _ in range(300):
            w = World(cfg, nodes)
            for _ in range(40):
                r = rng.random()
                if r < 0.1 and w.alive:
                    w.crash(rng.choice(sorted(w.alive)))
                elif r < 0.2:
                    w.alive.add(rng.choice(nodes))
                elif r < 0.25:
                    w.move = rng.choice(nodes)
                w.step(rng.choice(nodes))
            for running in w.running_log:
                assert len(running) <= 1, f"group ran on {running}"
            # Given time and a live node, the group converges to running exactly once.
            if w.alive:
                for _ in range(10):
                    for n in nodes:
                        w.step(n)
                assert len(w.running_log[-1]) == 1, (w.alive, w.owner, w.local)


def test_replay_from_every_interruption_point() -> None:
    """A failover interrupted after any action (the node crashes) still converges with one runner."""
    cfg = make_config("auto")
    script = ["n1", "n2", "crash n1", "n2", "n2", "up n1", "n1", "n2", "n1", "n2", "n1"]
    for cut in range(len(script) + 1):
        w = World(cfg, ("n1", "n2"))
        for s in script[:cut]:
            if s.startswith("crash"):
                w.crash(s.split()[1])
            elif s.startswith("up"):
                w.alive.add(s.split()[1])
            else:
                w.step(s)
        # interruption: the node that acted last crashes now and comes back
        victim = script[cut - 1] if cut and not script[cut - 1].startswith(("crash", "up")) else "n1"
        w.crash(victim)
        w.alive.add(victim)
        for _ in range(6):
            w.step("n1")
            w.step("n2")
        assert all(len(r) <= 1 for r in w.running_log)
        expected = {"n1"} if "n1" in w.alive else {"n2"}
        assert w.running_log[-1] == expected, f"cut={cut}: auto failback ends on home n1 when it is up, got {w.running_log[-1]}"


def test_owner_key_from_a_previous_lease_is_not_ours() -> None:
    """After a fence, etcd may still hold our old owner key: never start under it; fence if running."""
    stale = OwnerRecord("n1", ClpEvent.START, lease=7)
    v = replace(view("n1", owner=stale, local=LocalState.RUNNING), lease=8)
    assert kinds(v, make_config()) == [(ActionKind.FENCE_GROUP, None)]
    v = replace(view("n1", owner=stale), lease=8)
    assert kinds(v, make_config()) == []
    v = replace(view("n1", owner=OwnerRecord("n1", ClpEvent.START, lease=8)), lease=8)
    assert kinds(v, make_config()) == [(ActionKind.START, ClpEvent.START)]

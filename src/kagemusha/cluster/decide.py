"""``decide(view, config, now) -> Plan``: the whole failover policy as a pure function.

No clock, socket, file or sleep in here: ``now`` (wall seconds) is passed in,
the view is a frozen snapshot. Split by topic: ownership of groups we hold
(``_handle_owned``), placement of groups nobody holds (``_handle_unowned``),
recovery (``recovery.next_recovery``). Each group is decided on its own, so a
plan interrupted half way is simply decided again from the next view (tests
replay every prefix of a plan: ``tests/cluster/test_decide.py``).
"""

from __future__ import annotations

from dataclasses import replace

from kagemusha.cluster._model import (
    LIVE_STATES,
    Action,
    ActionKind,
    ClusterView,
    EventKind,
    GroupView,
    LocalState,
    Plan,
    RecoveryAction,
)
from kagemusha.cluster.recovery import next_recovery, recent
from kagemusha.config import Config, Failback, FinalAction, GroupSpec
from kagemusha.model import ClpEvent

__all__ = ["decide", "eligible_nodes", "placement"]


def _excluded(g: GroupView, now: float, expiry: float) -> frozenset[str]:
    return frozenset(f.node for f in g.failures if now - f.at < expiry)


def eligible_nodes(view: ClusterView, spec: GroupSpec, g: GroupView, now: float, expiry: float) -> list[str]:
    """Nodes that may run ``g`` now, best first: alive, not in standby, not excluded by a failure."""
    excluded = _excluded(g, now, expiry)
    order = list(spec.nodes)
    if g.move_to and g.move_to in order:
        order.remove(g.move_to)
        order.insert(0, g.move_to)
    return [n for n in order if n in view.members and n not in view.standby and n not in excluded]


def placement(view: ClusterView, spec: GroupSpec, g: GroupView, now: float, expiry: float) -> str | None:
    """The node that should take ``g`` if nobody holds it, or ``None``."""
    cands = eligible_nodes(view, spec, g, now, expiry)
    return cands[0] if cands else None


def decide(view: ClusterView, config: Config, now: float) -> Plan:
    """Return what this node should do next, and notes on why it waits.

    Args:
        view: snapshot of the store and of this node's groups.
        config: the validated cluster config.
        now: wall-clock seconds (fail counts and startup wait are measured with it).
    """
    actions: list[Action] = []
    notes: list[str] = []
    for g in view.groups:
        try:
            spec = config.group(g.name)
        except KeyError:
            continue
        if not view.has_lease:
            # NB: the lease keeper fences on lease loss; this catches a group started meanwhile.
            if g.local in LIVE_STATES:
                actions.append(Action(ActionKind.FENCE_GROUP, g.name, at=now, reason="no lease: cannot prove ownership"))
            continue
        owner = g.owner
        if owner is not None and owner.node == view.node and not _same_lease(owner.lease, view.lease):
            # Our name, but a lease we no longer hold: stale until it expires. Never start under it.
            if g.local in LIVE_STATES:
                act, note = Action(ActionKind.FENCE_GROUP, g.name, reason="owner key is from a previous lease of this node"), ""
            else:
                act, note = None, "waiting: owner key is from a previous lease of this node"
        elif owner is not None and owner.node == view.node:
            act, note = _handle_owned(view, config, spec, g, now)
        elif g.local in LIVE_STATES:
            holder = owner.node if owner else "nobody"
            act, note = Action(ActionKind.FENCE_GROUP, g.name, reason=f"running here but owned by {holder}"), ""
        elif owner is None:
            act, note = _handle_unowned(view, config, spec, g, now)
        else:
            act, note = None, ""
        if act is not None:
            act = replace(act, lease=view.lease, at=now)
            actions.append(act)
            if act.kind in (ActionKind.LEAVE_FENCED, ActionKind.STOP_AGENT):
                return Plan((act,), tuple(notes))
        elif note:
            notes.append(f"group={g.name} {note}")
    return Plan(tuple(actions), tuple(notes))


def _same_lease(a: int | None, b: int | None) -> bool:
    return a is None or b is None or a == b


def _handle_owned(
    view: ClusterView, config: Config, spec: GroupSpec, g: GroupView, now: float
) -> tuple[Action | None, str]:
    me = view.node
    expiry = config.cluster.failure_expiry
    if g.local == LocalState.STOP_FAILED:
        return Action(ActionKind.LEAVE_FENCED, g.name, reason=f"stop failed: {g.local_reason}"), ""
    if g.local == LocalState.FENCING:
        return None, "waiting: fence not proven complete"
    if g.local in (LocalState.STARTING, LocalState.STOPPING):
        return None, f"waiting: {g.local.value}"
    if g.local == LocalState.START_FAILED:
        return Action(
            ActionKind.STOP, g.name, clean=False, mark_failure=True, event_kind=EventKind.FAILOVER_FROM,
            reason=f"start failed on {me}: {g.local_reason}",
        ), ""
    if view.leaving:
        return Action(ActionKind.STOP, g.name, clean=True, event_kind=EventKind.STOP, reason="agent leaving"), ""
    if not g.target_online:
        return Action(ActionKind.STOP, g.name, clean=True, event_kind=EventKind.STOP, reason="group stop requested"), ""
    if me in view.standby:
        return Action(ActionKind.STOP, g.name, clean=True, event_kind=EventKind.STOP, reason=f"node {me} in standby"), ""
    if g.local == LocalState.STOPPED:
        assert g.owner is not None
        return Action(ActionKind.START, g.name, event=g.owner.event, reason=f"owned by {me}, not running"), ""
    # RUNNING
    if g.request is not None:
        mon = next((m for m in spec.monitors if m.name == g.request.monitor), None)
        if mon is not None:
            step = next_recovery(
                mon, restarts=recent(g.restarts, now, expiry), failovers=recent(g.failovers, now, expiry)
            )
            why = f"monitor {mon.name} failed {mon.retries}x: {g.request.reason}"
            if step == RecoveryAction.RESTART:
                kept = tuple(t for t in g.restarts if now - t < expiry)
                return Action(ActionKind.RESTART, g.name, restarts=(*kept, now), event_kind=EventKind.RESTART,
                              reason=why), ""
            others = [n for n in eligible_nodes(view, spec, g, now, expiry) if n != me]
            if step == RecoveryAction.FAILOVER and others:
                kept = tuple(t for t in g.failovers if now - t < expiry)
                return Action(
                    ActionKind.STOP, g.name, clean=False, mark_failure=True, count_failover=True,
                    failovers=(*kept, now), event_kind=EventKind.FAILOVER_FROM,
                    reason=f"{why}; failing over (to {others[0]})",
                ), ""
            # FINAL, or a failover with nowhere to go.
            final = mon.final_action
            if step == RecoveryAction.FAILOVER:
                why += "; no other node can take it"
            if final == FinalAction.STOP_GROUP:
                return Action(
                    ActionKind.STOP, g.name, clean=True, target_offline=True, mark_failure=True,
                    event_kind=EventKind.STOP, reason=f"{why}; final action stop_group",
                ), ""
            if final == FinalAction.STOP_AGENT:
                return Action(ActionKind.STOP_AGENT, g.name, reason=f"{why}; final action stop_agent"), ""
            return None, f"{why}; final action none: leaving it running"
    cands = eligible_nodes(view, spec, g, now, expiry)
    if g.move_to and g.move_to != me and cands and cands[0] == g.move_to:
        return Action(ActionKind.STOP, g.name, clean=True, event_kind=EventKind.STOP, reason=f"move to {g.move_to} requested"), ""
    if (
        spec.failback == Failback.AUTO
        and not g.move_to
        and spec.home != me
        and cands
        and cands[0] == spec.home
    ):
        return Action(ActionKind.STOP, g.name, clean=True, event_kind=EventKind.STOP, reason=f"failback auto: home {spec.home} is up"), ""
    return None, ""


def _handle_unowned(
    view: ClusterView, config: Config, spec: GroupSpec, g: GroupView, now: float
) -> tuple[Action | None, str]:
    me = view.node
    if not g.target_online:
        return None, ""
    if view.leaving:
        return None, "not taking: agent leaving"
    target = placement(view, spec, g, now, config.cluster.failure_expiry)
    if target is None:
        return None, "no eligible node"
    if target != me:
        return None, ""
    if g.last is None and now - view.joined_at < config.cluster.startup_wait:
        above = spec.nodes[: spec.nodes.index(me)] if me in spec.nodes else ()
        missing = [n for n in above if n not in view.members]
        if missing:
            return None, f"startup wait: higher-priority node(s) {','.join(missing)} not up yet"
    event = ClpEvent.FAILOVER if g.last is not None and not g.last.clean else ClpEvent.START
    if g.last is not None and not g.last.clean:
        why = f"last owner {g.last.node} did not release it cleanly"
    elif g.move_to == me:
        why = "move requested"
    else:
        why = "unowned and this node is first eligible"
    kind = EventKind.FAILOVER if event == ClpEvent.FAILOVER else EventKind.START
    return Action(ActionKind.TAKE, g.name, event=event, event_kind=kind, clear_move=g.move_to is not None, reason=why), ""

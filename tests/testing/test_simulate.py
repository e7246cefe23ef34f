"""The deterministic simulation (``kagemusha.testing.simulate``): it runs, it is deterministic, it can fail.

The self-tests break one safety rule at a time in a copy of the decision, lease or agent code (a textual
mutation of one function, installed with ``monkeypatch``) and check that the simulation reports it within
its default schedule count. When a mutation target is no longer found the test fails and says which
line to update: the agent is being rewritten, and a self-test that silently stops mutating anything
would prove nothing.
"""

from __future__ import annotations
import __future__

import asyncio
import importlib
import inspect
import textwrap
from typing import Any

import pytest

from kagemusha.testing import simulate as sim
from kagemusha.testing._vloop import Deadlock, VirtualTimeLoop


@pytest.fixture(autouse=True)
def _quiet() -> None:
    sim._quiet_logs()
    sim.register()


# -- the virtual-time loop ---------------------------------------------------------------


def test_virtual_loop_jumps_to_the_next_timer() -> None:
    loop = VirtualTimeLoop()

    async def main() -> tuple[float, bool]:
        await asyncio.sleep(3600)
        timed_out = False
        try:
            async with asyncio.timeout(5):
                await asyncio.sleep(10)
        except TimeoutError:
            timed_out = True
        return loop.time(), timed_out

    try:
        now, timed_out = loop.run_until_complete(main())
    finally:
        loop.close()
    assert now == pytest.approx(3605.0)
    assert timed_out


def test_virtual_loop_reports_a_deadlock() -> None:
    loop = VirtualTimeLoop()

    async def main() -> None:
        await loop.create_future()  # nothing will ever resolve it

    try:
        with pytest.raises(Deadlock):
            loop.run_until_complete(main())
    finally:
        loop.close()


# -- schedules -----------------------------------------------------------------------------


def test_schedule_text_round_trips() -> None:
    for i in range(50):
        s = sim.generate(f"rt:{i}")
        assert sim.Schedule.parse(str(s)) == s


def test_same_schedule_same_run() -> None:
    for i in range(3):
        s = sim.generate(f"det:{i}")
        a, b = sim.run_schedule(s), sim.run_schedule(s)
        assert a.timeline == b.timeline
        assert a.violations == b.violations


def test_a_quiet_cluster_brings_every_group_online() -> None:
    for preset in sim.PRESET_NAMES:
        out = sim.run_schedule(sim.Schedule(sim.Setup("quiet:1", 3, 2, preset), ()))
        assert out.violations == []
        started = {(n, g) for _, n, g, _, what in out.timeline if what == "started"}
        assert {g for _, g in started} == {"g1", "g2"}


# -- the real code -------------------------------------------------------------------------
#
# Bugs the simulation found in the agent as it is (issue 10). Each is a shrunk schedule that breaks an
# invariant today; the tests are strict xfails, so each one fails (XPASS) once the bug is fixed: then drop
# its entry here. Replay one with its trace: python -m kagemusha.testing.simulate --replay '<schedule>' --trace

AGENT_BUGS = {
    "apply-add-crashes-agents": (
        ("`config apply` adding a group crashes every agent: KeyError in Agent._cycle (the epochs are taken "
        "before _maybe_reconfigure adds the group)"),
        "seed=1:2 nodes=2 groups=2 preset=tight | 1.837 apply mode=add",
    ),
    "apply-drop-during-fence": (
        ("`config apply` removing a group while the node fences: RuntimeError 'dictionary changed size during "
        "iteration' in Agent._fence_all (a retiring group's worker deletes it from self.groups)"),
        "seed=7:523 nodes=2 groups=2 preset=tight | 1.040 apply mode=drop; 1.053 partition n2 dur=0.480 mode=blackhole",
    ),
    "apply-res-lost-on-fence": (
        ("`config apply` changing a running group's resources is lost when a fence cancels the _replace worker: "
        "the node runs the old resource set for good (liveness: r3 never starts)"),
        "seed=r:58 nodes=2 groups=1 preset=tight | 1.000 slow n1 dur=1.500 x=0.400 mode=answer; 1.738 apply mode=res",
    ),
    "supervisor-fences-with-start-config": (
        ("the supervisor fences with the config the agent started with: a resource added by `config apply` "
        "survives kill -9 of the agent while the standby starts the group"),
        "seed=7:319 nodes=2 groups=2 preset=tight | 1.244 apply mode=res; 1.859 agent-crash n1",
    ),
    "take-runs-after-fence": (
        ("a TAKE decided before a fence still runs after it (slow store): the node starts the group without "
        "owning it while the owner runs it"),
        "seed=t:5 nodes=3 groups=1 preset=tight | 1.415 slow n2 dur=1.468 x=0.399 mode=answer; 2.135 move n2 g1",
    ),
    "timing-rule-misses-round-trip": (
        ("at the smallest heartbeat_timeout the timing rule accepts (preset edge), a renewal answered late "
         "(answer leg > fence_margin) followed by a store that stops answering makes the node fence after its "
         "lease expired at the store, while the standby already runs the group"),
        ("seed=e:24 nodes=2 groups=1 preset=edge | 1.000 slow n1 dur=0.812 x=0.290 mode=answer; "
        "1.812 partition n1 dur=2.000 mode=blackhole"),
    ),
    "start-after-fence-in-decision-loop": (
        ("a TAKE's store writes (slow store) ran in the decision loop while the lease keeper fenced; the start "
         "was spawned afterwards without checking the lease again (found on the redesigned agent)"),
        ("seed=1:3126 nodes=3 groups=1 preset=tight | 1.283 move n3 g1; 1.288 partition n3 dur=0.432 mode=blackhole; "
         "1.577 slow n3 dur=0.835 x=0.195 mode=answer; 2.412 partition n3 dur=0.402 mode=blackhole"),
    ),
    "start-after-fence-edge": (
        "the same, at the timing rule's bound (preset edge)",
        ("seed=1:917 nodes=3 groups=1 preset=edge | 2.158 slow n2 dur=1.260 x=0.246 mode=both; 2.825 move n2 g1; "
         "3.418 partition n2 dur=1.532 mode=blackhole"),
    ),
    "fence-waits-for-a-status-write": (
        ("a fence cancelled a worker whose cleanup wrote its status to an unreachable store: the fence waited "
         "store_timeout and finished after the lease expired (found on the redesigned agent)"),
        ("seed=1:1813 nodes=3 groups=2 preset=retry | 2.811 agent-crash n1; 2.841 outage dur=0.507; "
         "3.038 slow n2 dur=1.464 x=0.348 mode=answer; 4.502 partition n2 dur=1.643 mode=blackhole"),
    ),
    "watchdog-unarmed-after-start": (
        ("the watchdog is armed only at the first renewal after a group starts: an agent that hangs in between "
        "is never reset and runs the group past its lease while the standby starts it"),
        "seed=wd:1 nodes=2 groups=1 preset=wd | 2.500 crash n1; 5.300 hang n2 dur=4.000; 6.000 rejoin n1",
    ),
    "apply-drop-while-fencing": (
        ("`config apply` removing a group, read by an agent that woke from a hang while its lease keeper fenced: "
         "the stop worker moved the group out of fencing, the worker crashed, and the fence's own end crashed "
         "the agent (InvalidTransition)"),
        "seed=7:986 nodes=2 groups=2 preset=wd-edge | 2.792 move n1 g2; 5.928 hang n2 dur=2.822; 8.296 apply mode=drop",
    ),
    "watchdog-disarmed-between-take-and-start": (
        ("the watchdog armed when a TAKE was decided was disarmed by a feed while the take's store writes ran "
         "(every group still stopped here); the start then ran with no watchdog, and a fence slower than "
         "fence_margin ran past the lease while the standby started the group (split brain)"),
        ("seed=99:2621 nodes=2 groups=2 preset=wd | 2.194 partition n1 dur=1.629 mode=refuse; "
         "2.552 slow n1 dur=4.377 x=0.513 mode=request; 5.302 fence-slow n1 dur=4.424 x=2.364; "
         "6.929 partition n1 dur=3.299 mode=blackhole"),
    ),
    "apply-drop-during-restart": (
        ("`config apply` removing a group while a restart worker ran: a stop worker was spawned beside it, "
         "stopped and released the group, and the restart then started it again without owning it"),
        "seed=314:7669 nodes=3 groups=2 preset=wd-edge | 4.954 monitor-fail n2 g2 dur=3.830; 6.111 apply mode=drop",
    ),
    "member-key-lost-under-live-lease": (
        ("packet loss on a node's store link: a join that timed out at the client landed after its retry's join, "
         "under the abandoned lease, which then expired and took the member key; the agent kept its live lease "
         "and owner key but, no longer a member, fenced the group and never joined again (liveness: the group "
         "stuck on it; the etcd campaign's wedge, issue 11)"),
        "seed=w:7 nodes=2 groups=1 preset=tight | 1.000 slow n1 dur=4.000 x=2.000 mode=lost",
    ),
    "apply-while-an-agent-starts": (
        ("a `config apply` that rewrote cluster.toml while an agent started: the agent compared the stored config "
         "with the file as it read it then (new) but ran the config it had parsed before (old), took both for "
         "the same and never applied the change (the group ran the old resources for good; a liveness break)"),
        "seed=5:1500 nodes=2 groups=2 preset=retry | 1.356 agent-crash n1; 2.221 rejoin n1; 2.221 apply mode=res",
    ),
}


@pytest.mark.parametrize("bug", sorted(AGENT_BUGS))
def test_fixed_agent_bug_stays_fixed(bug: str) -> None:
    """Each schedule broke an invariant on the agent before the safety redesign (issue 10); now none does."""
    why, schedule = AGENT_BUGS[bug]
    out = sim.run_schedule(sim.Schedule.parse(schedule))
    assert out.violations == [], f"{bug} is back: {why}"


def test_real_agent_holds_every_invariant() -> None:
    """A few hundred random schedules on the real code: 0 violations (stops at the first one)."""
    rep = sim.run_many(300, "real", stop_first=True)
    assert rep.failures == []


# -- the simulation can fail: one broken safety rule at a time -------------------------------


Mutant = tuple[Any, str, Any]  # (owner, attribute, replacement)


def mutant(owner: Any, name: str, *edits: tuple[str, str]) -> Mutant:
    """A copy of ``owner.name`` (a function or method) with ``edits`` applied to its source."""
    func = inspect.unwrap(getattr(owner, name))
    src = textwrap.dedent(inspect.getsource(func))
    for old, new in edits:
        assert src.count(old) == 1, (
            f"mutation target not found once in {owner.__name__}.{name}: {old!r}; update this self-test "
            "to break the same rule in the new code"
        )
        src = src.replace(old, new)
    code = compile(src, inspect.getsourcefile(func) or "<mutant>", "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    ns: dict[str, Any] = {}
    exec(code, func.__globals__, ns)  # noqa: S102 - a mutant of our own code, for the self-test
    return (owner, name, ns[name])


#: fault kinds left out of the self-tests (none: the agent bugs above are fixed)
MASKING: frozenset[str] = frozenset()


#: every fault kind but the store's: for a rule that only a slow or broken store exposes
STORE_FAULTS_ONLY = frozenset({"crash", "agent-crash", "stop-fail", "fence-slow", "monitor-fail", "move", "apply",
                               "leave", "hang", "fence-fail"})


def caught(monkeypatch: pytest.MonkeyPatch, mutants: list[Mutant], kinds: set[str],
           exclude: frozenset[str] = MASKING) -> int:
    """The first schedule (of the default count) that breaks one of ``kinds`` with the mutants installed and
    none without them: the broken rule, not a known bug, is what the simulation reports."""
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in mutants]
    for i in range(sim.DEFAULT_SCHEDULES):
        s = sim.generate(sim.schedule_seed("selftest", i), exclude)
        with monkeypatch.context() as m:
            for owner, name, fn in mutants:
                m.setattr(owner, name, fn)
            out = sim.run_schedule(s)
        if not out.violations or not sim._kinds(out.violations) & kinds:
            continue
        assert all(getattr(o, n) is f for o, n, f in originals)
        if sim.run_schedule(s).violations:
            continue  # a known bug of the real code, not the mutation
        print(f"caught in schedule {i}: {out.violations[0]}")
        return i
    raise AssertionError(f"the simulation did not notice the broken rule in {sim.DEFAULT_SCHEDULES} schedules")


def test_finds_fence_skipped_on_lease_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    from kagemusha.agent._agent import Agent

    caught(monkeypatch, [mutant(Agent, "_fence_groups", (
        "results = await asyncio.gather(*(rt.fence() for rt in rts), return_exceptions=True)",
        "results = [[] for _ in rts]",
    ))], {"split-brain", "run-past-lease"})


def test_finds_renewal_deadline_counted_from_the_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    from kagemusha.agent._agent import Agent

    caught(monkeypatch, [mutant(Agent, "_lease_keeper", (
        "self.valid_until = sent + min(ttl, c.heartbeat_timeout)",
        "self.valid_until = self.clock.monotonic() + min(ttl, c.heartbeat_timeout)",
    ))], {"split-brain", "start-without-lease", "start-without-ownership", "run-past-lease"}, STORE_FAULTS_ONLY)


def test_finds_renewal_retried_past_the_fence_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    from kagemusha.agent._agent import Agent

    caught(monkeypatch, [mutant(Agent, "_lease_keeper", (
        "if sent + c.store_timeout + c.fence_margin > self._renew_deadline():",
        "if sent > self.valid_until:",
    ), (
        "if self.clock.monotonic() + backoff + c.store_timeout + c.fence_margin > self._renew_deadline():",
        "if self.clock.monotonic() > self.valid_until:",
    ))], {"split-brain", "start-without-lease", "start-without-ownership", "run-past-lease"})


def test_finds_take_while_the_owner_lease_lives(monkeypatch: pytest.MonkeyPatch) -> None:
    """A move target that takes the group at once, overwriting the owner key, instead of waiting for it."""
    import kagemusha.agent._agent as agent_mod
    from kagemusha.protocol._records import ClusterRecords

    decide_mod = importlib.import_module("kagemusha.cluster.decide")
    broken = mutant(decide_mod, "decide", (
        "elif owner is None:",
        "elif owner is None or (g.move_to == view.node and owner.node != view.node):",
    ))
    caught(monkeypatch, [
        broken,
        (agent_mod, "decide", broken[2]),
        mutant(ClusterRecords, "take", (
            "return await self.store.cas(self.keys.group(group, \"owner\"), owner, expected_revision=0, lease=lease)",
            "await self.store.put(self.keys.group(group, \"owner\"), owner, lease=lease)\n    return True",
        )),
    ], {"split-brain"})


def test_finds_an_owner_key_written_without_a_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    from kagemusha.protocol._records import ClusterRecords

    caught(monkeypatch, [mutant(ClusterRecords, "take", (
        "expected_revision=0, lease=lease)",
        "expected_revision=0, lease=None)",
    ))], {"owner-without-lease"})


def test_finds_a_start_under_a_previous_lease(monkeypatch: pytest.MonkeyPatch) -> None:
    """An owner key of this node's previous lease taken as proof of ownership."""
    decide_mod = importlib.import_module("kagemusha.cluster.decide")
    caught(monkeypatch, [(decide_mod, "_same_lease", lambda a, b: True)],
           {"start-without-ownership", "split-brain"})


def test_a_rejoin_waits_for_the_previous_supervisors_fence() -> None:
    """The model, not the agent: a new agent starts only once the dead one's supervisor has fenced and
    exited (one service unit). Before, a slow supervisor fence stopped the new agent's resources under
    it (seed 6:1936, a liveness break no real node can have)."""
    schedule = ("seed=6:1936 nodes=2 groups=1 preset=wd | 3.089 fence-slow n1 dur=3.891 x=3.141; "
                "6.354 agent-crash n1; 7.023 rejoin n1")
    assert sim.run_schedule(sim.Schedule.parse(schedule)).violations == []

"""Carry out a node's build, uninstall and verification, one outcome line per step."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kagemusha._aio import within
from kagemusha.errors import KagemushaError
from kagemusha.procedure._steps import (
    BuildContext,
    Step,
    StepFailed,
    build_steps,
    mounted,
    preflight,
)

__all__ = ["ENV_CRASH_AFTER", "Outcome", "PreflightFailed", "run_build", "run_uninstall", "run_verify"]

#: Test hook: ``build`` exits (code 75, as if killed) right after step K's work, before the
#: manifest marks it done: the worst moment, which the next ``build`` must resume from.
ENV_CRASH_AFTER = "KAGEMUSHA_BUILD_CRASH_AFTER"


class PreflightFailed(KagemushaError):
    """Preflight checks failed; nothing was changed. ``problems`` has one line per failed check."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Outcome:
    """One line of progress: ``status`` is done, already done, would do, failed, ok or skipped."""

    step: str
    title: str
    status: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


Emit = Callable[[Outcome], None]


def _checked(ctx: BuildContext, steps: list[Step]) -> dict[str, str | None]:
    done: dict[str, str | None] = {}
    for s in steps:
        try:
            done[s.id] = s.check(ctx)
        except Exception:  # noqa: BLE001 - cannot tell (e.g. store down): not done; preflight says why
            done[s.id] = None
    return done


def _record_manifest_dirs(ctx: BuildContext) -> None:
    ctx.manifest.data["service"] = ctx.service
    if ctx.manifest.exists:
        return
    missing = []
    p = ctx.manifest.path.parent
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        ctx.manifest.data["entries"].append({"step": "manifest", "kind": "dir", "path": str(d), "tree": False})
    ctx.manifest.save()


def run_build(ctx: BuildContext, *, dry_run: bool = False, emit: Emit = lambda o: None,
              begin: Callable[[str], None] = lambda title: None) -> list[Outcome]:
    """Build this node's part of the plan.

    Raises:
        PreflightFailed: before anything changed.
        StepFailed, KagemushaError: a step failed; the steps before it stay done and the next
            build resumes at it.
    """
    steps = build_steps(ctx)
    done = _checked(ctx, steps)
    problems = preflight(ctx, steps, done)
    if problems:
        raise PreflightFailed(problems)
    out: list[Outcome] = []

    def say(o: Outcome) -> None:
        out.append(o)
        emit(o)

    if dry_run:
        for s in steps:
            say(Outcome(s.id, s.title, "already done" if done[s.id] is not None else "would do", done[s.id] or ""))
        return out
    crash_after = int(os.environ.get(ENV_CRASH_AFTER, "0") or 0)
    for i, s in enumerate(steps, 1):
        if done[s.id] is not None:
            if not ctx.manifest.is_done(s.id) and ctx.manifest.exists:
                ctx.manifest.mark_done(s.id, str(done[s.id]))
            say(Outcome(s.id, s.title, "already done", str(done[s.id])))
            if crash_after == i:
                os._exit(75)
            continue
        _record_manifest_dirs(ctx)
        begin(s.title)
        try:
            detail = s.do(ctx)
        except (KagemushaError, OSError) as exc:
            say(Outcome(s.id, s.title, "failed", str(exc)))
            raise StepFailed(f"{s.title}: {exc}") from exc
        if crash_after == i:
            os._exit(75)
        ctx.manifest.mark_done(s.id, detail)
        say(Outcome(s.id, s.title, "done", detail))
    return out


# -- uninstall --------------------------------------------------------------------------------


def _status(ctx: BuildContext) -> dict[str, Any] | None:
    from kagemusha.config import load_config
    from kagemusha.control import ClusterControl

    async def go() -> dict[str, Any]:
        async with ClusterControl.open(load_config(ctx.plan.cluster_toml)) as ctl:
            return await ctl.status()

    try:
        return asyncio.run(within(go(), 15))
    except Exception:  # noqa: BLE001 - store unreachable: no status
        return None


def _release_groups(ctx: BuildContext, all_groups: bool) -> str:
    """Move the groups this node runs to another live node (or stop them, or every group, with --all)."""
    from kagemusha.config import load_config
    from kagemusha.control import ClusterControl

    st = _status(ctx)
    if st is None:
        return "store not reachable: no group moved"
    up = [n["name"] for n in st["nodes"] if n["state"] == "up" and n["name"] != ctx.node]
    actions: list[str] = []

    async def go() -> None:
        async with ClusterControl.open(load_config(ctx.plan.cluster_toml), by=f"kagemusha uninstall on {ctx.node}") as ctl:
            for g in st["groups"]:
                spec = next((x for x in ctx.plan.groups if x.name == g["name"]), None)
                if spec is None:
                    continue
                if all_groups:
                    if g["state"] != "offline":
                        await ctl.stop_group(g["name"], wait=700)
                        actions.append(f"stopped {g['name']}")
                    continue
                if g["node"] != ctx.node:
                    continue
                others = [n for n in spec.nodes if n in up]
                if others:
                    await ctl.move_group(g["name"], others[0], wait=700)
                    actions.append(f"moved {g['name']} to {others[0]}")
                else:
                    await ctl.stop_group(g["name"], wait=700)
                    actions.append(f"stopped {g['name']} (no other node is up)")

    asyncio.run(go())
    return ", ".join(actions) or "no group runs here"


def _other_markers(ctx: BuildContext) -> list[str]:
    async def go(store: Any) -> list[str]:
        from kagemusha.protocol import ClusterRecords

        return await ClusterRecords(store, ctx.plan.facts.cluster, by="kagemusha uninstall").built_nodes()

    return [n for n in ctx.store_call(go) if n != ctx.node]


def _delete_domains(ctx: BuildContext) -> str:
    """Last node: the seed's 5.x domain deletion and removal of the domains directories."""
    from kagemusha.domains import delete_domain
    from kagemusha.domains._layout import DomainLayout

    gone = []
    for g in ctx.plan.groups:
        with mounted(g, ctx.plan.facts.fstype, take_over=True):  # every agent has stopped
            root = Path(g.domains_root)
            if DomainLayout(root / g.domain).exists():
                delete_domain(g.domain, root, admin_user=ctx.plan.facts.admin_user,
                              admin_password=ctx.password(), registry=ctx.registry())
                gone.append(g.domain)
            with contextlib.suppress(OSError):
                root.rmdir()  # the seed: delete the domains directory (only when nothing else is in it)
    return f"deleted {', '.join(gone)} from the switchover disks" if gone else "no domain left on the disks"


def _delete_cluster_keys(ctx: BuildContext) -> str:
    from kagemusha.protocol import ClusterRecords

    async def go(store: Any) -> tuple[int, bool]:
        n = await ClusterRecords(store, ctx.plan.facts.cluster, by="kagemusha uninstall").delete_cluster()
        rest, _ = await store.get_prefix("/")
        return n, not rest

    n, empty = ctx.store_call(go, timeout=60)
    detail = f"deleted {n} key(s) of cluster {ctx.plan.facts.cluster}"
    store = ctx.plan.facts.store
    if empty and store.startswith("local:"):
        path = Path(store.removeprefix("local:"))
        for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
        detail += f"; the store {path} was empty and is removed"
    return detail


def run_uninstall(ctx: BuildContext, *, all_groups: bool = False, dry_run: bool = False, last: bool = False,
                  emit: Emit = lambda o: None, begin: Callable[[str], None] = lambda title: None) -> list[Outcome]:
    """Undo this node's build (the seed's chapter 5); see ``kagemusha uninstall``."""
    out: list[Outcome] = []

    def say(o: Outcome) -> None:
        out.append(o)
        emit(o)

    if not ctx.manifest.exists:
        say(Outcome("manifest", "read the build manifest", "skipped",
                    f"no manifest at {ctx.manifest.path}: build changed nothing on this node"))
        return out
    steps = {s.id: s for s in build_steps(ctx)}
    try:
        last = last or not _other_markers(ctx)
    except Exception as exc:
        raise StepFailed(f"cannot reach the store {ctx.plan.facts.store} to learn whether this is the last node: "
                         f"{exc}") from exc
    order = ["start", "service", "store-config"]
    if dry_run:
        say(Outcome("groups", "release the groups this node runs", "would do",
                    "stop every group" if all_groups else "move them to another live node"))
        for sid in order:
            say(Outcome(sid, f"undo: {steps[sid].title}", "would do"))
        if last:
            say(Outcome("domains", "delete the domains from the switchover disks (last node)", "would do"))
            say(Outcome("store-keys", "delete the cluster's keys from the store (last node)", "would do"))
        for sid in reversed([s for s in steps if s not in order]):
            say(Outcome(sid, f"undo: {steps[sid].title}", "would do"))
        say(Outcome("manifest", "remove the manifest", "would do", str(ctx.manifest.path)))
        return out

    def step(sid: str, title: str, fn: Callable[[], str]) -> None:
        begin(title)
        try:
            detail = fn()
        except (KagemushaError, OSError) as exc:
            say(Outcome(sid, title, "failed", str(exc)))
            raise StepFailed(f"{title}: {exc}") from exc
        say(Outcome(sid, title, "done", detail))

    step("groups", "release the groups this node runs", lambda: _release_groups(ctx, all_groups))
    for sid in order:
        step(sid, f"undo: {steps[sid].title}", lambda s=steps[sid]: s.undo(ctx))  # type: ignore[misc]
    if last:
        step("domains", "delete the domains from the switchover disks (last node)", lambda: _delete_domains(ctx))
        step("store-keys", "delete the cluster's keys from the store (last node)", lambda: _delete_cluster_keys(ctx))
    for sid in reversed([s for s in steps if s not in order]):
        step(sid, f"undo: {steps[sid].title}", lambda s=steps[sid]: s.undo(ctx))  # type: ignore[misc]

    def drop_manifest() -> str:
        ctx.manifest.remove()
        for e in reversed(ctx.manifest.entries_of("manifest")):
            with contextlib.suppress(OSError):
                Path(e["path"]).rmdir()
        left = [e for e in ctx.manifest.entries if e.get("step") != "manifest"]
        return f"removed {ctx.manifest.path}" + (f" ({len(left)} entries could not be undone)" if left else "")

    step("manifest", "remove the manifest", drop_manifest)
    return out


# -- verification ------------------------------------------------------------------------------


def _answer(url: str, wait: float = 20.0) -> str:
    import httpx

    deadline = time.monotonic() + wait
    last = ""
    while True:
        try:
            r = httpx.get(url, timeout=2.0, trust_env=False)
            if r.status_code == 200:
                return r.text.strip()[:120]
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() > deadline:
            raise StepFailed(f"{url} does not answer: {last}")
        time.sleep(0.2)


def run_verify(ctx: BuildContext, *, emit: Emit = lambda o: None, wait: float = 120.0) -> list[Outcome]:
    """The seed's checks: each group online on its home node, moved to the other node and back,
    its domain answering through the VIP each time. Every check gives one outcome (ok/failed)."""
    from kagemusha.config import load_config
    from kagemusha.control import ClusterControl

    cfg = load_config(ctx.config_file if ctx.config_file.exists() else ctx.plan.cluster_toml)
    out: list[Outcome] = []

    def say(o: Outcome) -> None:
        out.append(o)
        emit(o)

    async def ctl_call(fn: Callable[[ClusterControl], Any]) -> Any:
        async with ClusterControl.open(cfg, by=f"kagemusha build --verify on {ctx.node}") as ctl:
            return await fn(ctl)

    def check(sid: str, title: str, fn: Callable[[], str]) -> bool:
        try:
            say(Outcome(sid, title, "ok", fn()))
            return True
        except Exception as exc:  # noqa: BLE001 - every failure is one line of the report
            say(Outcome(sid, title, "failed", str(exc).splitlines()[0] if str(exc) else type(exc).__name__))
            return False

    def move(group: str, to: str) -> str:
        g2 = asyncio.run(ctl_call(lambda c: c.move_group(group, to, wait=wait)))
        return f"{g2['state']} on {to}"

    for g in ctx.plan.groups:
        url = f"http://{g.vip_ip}:{g.http_port}/"

        def answer(url: str = url) -> str:
            return _answer(url)

        def online_home(g: Any = g) -> str:
            st = asyncio.run(ctl_call(lambda c: c.wait_group(g.name, lambda x: x["state"] == "online", wait, "online")))
            if st["node"] != g.home:
                move(g.name, g.home)
                return f"was on {st['node']}; moved home to {g.home}"
            return f"online on {g.home}"

        if not check(f"{g.name}-home", f"{g.name} online on its home node {g.home}", online_home):
            continue
        check(f"{g.name}-answer-{g.home}", f"{g.domain} answers through {g.vip_ip} on {g.home}", answer)
        status = asyncio.run(ctl_call(lambda c: c.status()))
        up = {n["name"] for n in status["nodes"] if n["state"] == "up"}
        other = next((n for n in g.nodes[1:] if n in up), None)
        if other is None:
            say(Outcome(f"{g.name}-move", f"{g.name} moved to another node", "failed",
                        f"no other node of {g.name} is up ({', '.join(g.nodes[1:])})"))
            continue
        there = functools.partial(move, g.name, other)
        home = functools.partial(move, g.name, g.home)
        if check(f"{g.name}-move", f"{g.name} moved to {other}", there):
            check(f"{g.name}-answer-{other}", f"{g.domain} answers through {g.vip_ip} on {other}", answer)
        if check(f"{g.name}-back", f"{g.name} moved back to {g.home}", home):
            check(f"{g.name}-answer-back", f"{g.domain} answers through {g.vip_ip} on {g.home} again", answer)
    return out

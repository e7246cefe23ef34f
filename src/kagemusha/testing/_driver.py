"""Conformance suite for the ``Resource`` contract: Pacemaker's ocf-tester script, replayed.

Run it against every real driver, for real::

    report = await check_driver(FloatingIP, {"address": "198.18.0.100/24", "interface": "eth0"})
    print(report)

or with a factory when the driver needs a context of your own::

    await check_driver(lambda p: ExecResource(ExecResource.Params.model_validate(p), ctx), params)

The script: probe while stopped → start → probe → start again → probe → stop
→ probe → stop again → probe; then, when the driver overrides ``fence``:
start → fence → probe → fence again → probe → stop → probe. ``start`` and
``stop`` must succeed when repeated, ``probe`` must say ``RUNNING`` after a
start and ``STOPPED`` after a stop or fence, never ``FAILED`` in this clean
run, and give the same answer twice in a row (probe changes nothing).

NB: each operation runs on a *fresh* driver from ``make_driver`` (like
ocf-tester, which runs the agent afresh each time), so a driver that keeps
what it started only in memory fails here, as it would after an agent
restart. Pass ``fresh=False`` to reuse one instance.

Raises ``AssertionError`` naming the step and the duty. Whatever happens, the
suite stops (and fences) the resource before it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias, cast

from pydantic import ValidationError

from kagemusha.resources._base import DriverParams, Probe, ProbeState, Resource, ResourceContext, StartEnv

__all__ = ["DriverReport", "DriverStep", "check_driver"]

MakeDriver: TypeAlias = type[Resource] | Callable[[Any], Resource | Awaitable[Resource]]
AfterStep: TypeAlias = Callable[[str, bool], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class DriverStep:
    """One step of the script: what ran, what probe said (for probes), how long it took."""

    name: str
    probe: Probe | None
    seconds: float


@dataclass(frozen=True, slots=True)
class DriverReport:
    """What ``check_driver`` saw; ``str()`` prints it as a table."""

    driver: str
    steps: tuple[DriverStep, ...]

    def __str__(self) -> str:
        lines = [f"check_driver {self.driver}: {len(self.steps)} steps passed"]
        for s in self.steps:
            said = f" -> {s.probe.state}" + (f" ({s.probe.reason})" if s.probe.reason else "") if s.probe else ""
            lines.append(f"  {s.seconds * 1000:8.1f} ms  {s.name}{said}")
        return "\n".join(lines)


class _Run:
    def __init__(
        self,
        make: Callable[[], Awaitable[Resource]],
        env: StartEnv,
        timeout: float | None,
        fresh: bool,
        after_step: AfterStep | None,
    ) -> None:
        self.make = make
        self.env = env
        self.timeout = timeout
        self.fresh = fresh
        self.after_step = after_step
        self.steps: list[DriverStep] = []
        self._driver: Resource | None = None
        self.cleaned = False

    async def driver(self) -> Resource:
        if self._driver is None or self.fresh:
            self._driver = await self.make()
        return self._driver

    def _limit(self, d: Resource, op: str) -> float:
        if self.timeout is not None:
            return self.timeout
        if op == "start":
            return d.default_start_timeout
        if op in ("stop", "fence"):
            return d.default_stop_timeout
        return 30.0

    async def op(self, name: str, op: str, *, running_after: bool) -> None:
        d = await self.driver()
        t0 = time.monotonic()
        limit = self._limit(d, op)
        try:
            async with asyncio.timeout(limit):
                if op == "start":
                    await d.start(self.env)
                elif op == "stop":
                    await d.stop(self.env)
                else:
                    await d.fence()
        except TimeoutError:
            raise AssertionError(f"{name}: did not finish within {limit:g} s") from None
        except Exception as exc:
            why = {
                "start again": "start on a started resource must succeed",
                "stop again": "stop on a stopped resource must succeed",
                "fence again": "fence on a fenced resource must succeed",
                "stop after fence": "stop after fence must succeed",
            }.get(name, f"{op} must succeed in a clean run")
            raise AssertionError(f"{name}: {why}, but it raised {type(exc).__name__}: {exc}") from exc
        self.steps.append(DriverStep(name, None, time.monotonic() - t0))
        await self._after(name, running_after)

    async def probe(self, name: str, want: ProbeState, why: str) -> None:
        answers: list[Probe] = []
        took: list[float] = []
        for _ in range(2):
            d = await self.driver()
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(self.timeout or 30.0):
                    p = await d.probe()
            except TimeoutError:
                raise AssertionError(f"{name}: probe did not answer within {self.timeout or 30.0:g} s") from None
            except Exception as exc:
                raise AssertionError(
                    f"{name}: probe must answer, not raise; it raised {type(exc).__name__}: {exc}"
                ) from exc
            if not isinstance(p, Probe):
                raise AssertionError(f"{name}: probe returned {p!r}, not a Probe")  # noqa: TRY004
            answers.append(p)
            took.append(time.monotonic() - t0)
            if p.state != want:
                raise AssertionError(
                    f"{name}: probe said {p.state}" + (f" ({p.reason})" if p.reason else "") + f"; {why}"
                )
        if answers[0].state != answers[1].state:
            raise AssertionError(f"{name}: probe twice in a row said {answers[0]} then {answers[1]}")
        self.steps.append(DriverStep(name, answers[0], took[0]))
        await self._after(name, want == ProbeState.RUNNING)

    async def _after(self, name: str, running: bool) -> None:
        if self.after_step is None:
            return
        try:
            r = self.after_step(name, running)
            if inspect.isawaitable(r):
                await r
        except AssertionError as exc:
            raise AssertionError(f"{name}: after_step check failed: {exc}") from exc

    async def cleanup(self) -> list[str]:
        self.cleaned = True
        notes = []
        for op in ("stop", "fence"):
            try:
                d = await self.make()
                async with asyncio.timeout(self._limit(d, op)):
                    await (d.stop(self.env) if op == "stop" else d.fence())
            except Exception as exc:  # noqa: BLE001 - cleanup reports, never masks
                notes.append(f"cleanup {op} raised {type(exc).__name__}: {exc}")
        return notes


async def check_driver(
    make_driver: MakeDriver,
    params: Mapping[str, Any] | DriverParams,
    *,
    env: StartEnv | None = None,
    ctx: ResourceContext | None = None,
    timeout: float | None = None,
    fresh: bool = True,
    after_step: AfterStep | None = None,
) -> DriverReport:
    """Replay ocf-tester's script against a real driver.

    Args:
        make_driver: a ``Resource`` subclass (built with ``ctx``, its parameters
            validated by its ``Params``), or a callable ``make_driver(params)``
            returning a driver (or an awaitable of one).
        params: the driver's parameters, as a mapping or a ``Params`` model.
        env: the ``StartEnv`` passed to start and stop (default ``StartEnv()``).
        ctx: the context for a ``Resource`` subclass; default: names
            ``check``/``check``/<type>, this host, a temporary state directory
            kept for the whole run.
        timeout: seconds for each operation; default: the driver's
            ``default_start_timeout``/``default_stop_timeout``, 30 s for probes.
        fresh: build a new driver for every operation (default), as ocf-tester does.
        after_step: ``after_step(step_name, expect_running)`` called after
            every step, to assert what is really on the system (the address
            on the interface, the mount in the table). Raise AssertionError.

    Returns:
        A ``DriverReport`` of every step.

    Raises:
        AssertionError: a duty does not hold; the message names the step.
    """
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if isinstance(make_driver, type) and issubclass(make_driver, Resource):
        cls = make_driver
        model = params if isinstance(params, DriverParams) else cls.Params.model_validate(dict(params))
        if not isinstance(params, DriverParams):
            with contextlib.suppress(ValidationError):
                cls.Params.model_validate({**dict(params), "kg_no_such_parameter": 1})
                raise AssertionError(f"{cls.__name__}.Params accepts unknown keys; it must subclass DriverParams")
        if ctx is None:
            tmp = tempfile.TemporaryDirectory(prefix="kg-check-driver-")
            ctx = ResourceContext(
                cluster="check",
                group="check",
                resource=getattr(cls, "type_name", cls.__name__),
                node=socket.gethostname(),
                state_dir=Path(tmp.name) / "state",
            )
        the_ctx = ctx

        async def make() -> Resource:
            return cls(model, the_ctx)

        name = cls.__name__
    else:
        factory = cast(Callable[[Any], Any], make_driver)

        async def make() -> Resource:
            d = factory(params)
            if inspect.isawaitable(d):
                d = await d
            if not isinstance(d, Resource):
                raise AssertionError(f"make_driver returned {d!r}, not a Resource")  # noqa: TRY004
            return d

        name = ""

    run = _Run(make, env or StartEnv(), timeout, fresh, after_step)
    first = await make()
    name = name or type(first).__name__
    has_fence = type(first).fence is not Resource.fence
    ok = False
    try:
        S, R = ProbeState.STOPPED, ProbeState.RUNNING
        await run.probe(
            "probe while stopped",
            S,
            "the resource must be stopped before the check (clean up first), and probe must say STOPPED then",
        )
        await run.op("start", "start", running_after=True)
        await run.probe("probe after start", R, "a started resource must probe RUNNING")
        await run.op("start again", "start", running_after=True)
        await run.probe("probe after start again", R, "a started resource must probe RUNNING")
        await run.op("stop", "stop", running_after=False)
        await run.probe("probe after stop", S, "a stopped resource must probe STOPPED")
        await run.op("stop again", "stop", running_after=False)
        await run.probe("probe after stop again", S, "a stopped resource must probe STOPPED")
        if has_fence:
            await run.op("start for fence", "start", running_after=True)
            await run.probe("probe before fence", R, "a started resource must probe RUNNING")
            await run.op("fence", "fence", running_after=False)
            await run.probe("probe after fence", S, "fence must leave the resource STOPPED")
            await run.op("fence again", "fence", running_after=False)
            await run.probe("probe after fence again", S, "fence must leave the resource STOPPED")
            await run.op("stop after fence", "stop", running_after=False)
            await run.probe("probe after stop after fence", S, "a stopped resource must probe STOPPED")
        ok = True
        return DriverReport(name, tuple(run.steps))
    except AssertionError as exc:
        notes = await run.cleanup()
        done = ", ".join(s.name for s in run.steps) or "nothing"
        msg = f"check_driver {name}: {exc}\n  passed before: {done}"
        if notes:
            msg += "\n  " + "\n  ".join(notes)
        raise AssertionError(msg) from exc
    finally:
        if not ok and not run.cleaned:
            # Cancelled or an unexpected error: still leave nothing behind.
            with contextlib.suppress(BaseException):
                await asyncio.shield(run.cleanup())
        if tmp is not None:
            tmp.cleanup()

"""check_driver itself, against small drivers that keep or break the contract (no root needed)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest
from pydantic import ConfigDict

from kagemusha.errors import ResourceFailed
from kagemusha.resources._base import DriverParams, Probe, Resource, ResourceContext, StartEnv
from kagemusha.testing._driver import DriverReport, check_driver


class FileParams(DriverParams):
    path: str


class FileResource(Resource):
    """Running = a file exists. Keeps the contract; subclasses break one duty each."""

    type_name: ClassVar[str] = "file"
    Params = FileParams
    params: FileParams
    default_start_timeout: ClassVar[float] = 2.0
    default_stop_timeout: ClassVar[float] = 2.0

    @property
    def p(self) -> Path:
        return Path(self.params.path)

    async def start(self, env: StartEnv) -> None:
        self.p.touch()

    async def stop(self, env: StartEnv) -> None:
        self.p.unlink(missing_ok=True)

    async def probe(self) -> Probe:
        return Probe.running() if self.p.exists() else Probe.stopped()


class WithFence(FileResource):
    async def fence(self) -> None:
        self.p.unlink(missing_ok=True)


class StartNotIdempotent(FileResource):
    async def start(self, env: StartEnv) -> None:
        if self.p.exists():
            raise ResourceFailed("already there")
        self.p.touch()


class StopNotIdempotent(FileResource):
    async def stop(self, env: StartEnv) -> None:
        if not self.p.exists():
            raise ResourceFailed("nothing to stop")
        self.p.unlink()


class LyingProbe(FileResource):
    async def probe(self) -> Probe:
        return Probe.stopped()  # "stopped" without looking: how split brain starts


class FailedWhenStopped(FileResource):
    async def probe(self) -> Probe:
        return Probe.running() if self.p.exists() else Probe.failed("cannot tell")


class MemoryOnly(FileResource):
    """Remembers that it started only in the instance: fails with fresh instances."""

    started = False

    async def start(self, env: StartEnv) -> None:
        self.started = True

    async def stop(self, env: StartEnv) -> None:
        self.started = False

    async def probe(self) -> Probe:
        return Probe.running() if self.started else Probe.stopped()


class HangingStart(FileResource):
    async def start(self, env: StartEnv) -> None:
        self.p.touch()
        await asyncio.sleep(3600)


class FenceDoesNothing(FileResource):
    async def fence(self) -> None:
        pass


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_good_driver_passes_and_reports(tmp_path: Path) -> None:
    report = run(check_driver(FileResource, {"path": str(tmp_path / "f")}))
    assert isinstance(report, DriverReport)
    names = [s.name for s in report.steps]
    assert names == [
        "probe while stopped", "start", "probe after start", "start again", "probe after start again",
        "stop", "probe after stop", "stop again", "probe after stop again",
    ]
    assert "9 steps passed" in str(report)


def test_fence_phase_runs_when_driver_fences(tmp_path: Path) -> None:
    report = run(check_driver(WithFence, {"path": str(tmp_path / "f")}))
    assert "probe after fence again" in [s.name for s in report.steps]


def test_factory_and_after_step(tmp_path: Path) -> None:
    path = tmp_path / "f"
    seen: list[tuple[str, bool]] = []
    ctx = ResourceContext("c", "g", "r", "n", tmp_path / "state")

    def after(step: str, running: bool) -> None:
        assert path.exists() == running, f"{step}: file exists={path.exists()}"
        seen.append((step, running))

    run(check_driver(lambda p: WithFence(FileParams(**p), ctx), {"path": str(path)}, after_step=after))
    assert seen[0] == ("probe while stopped", False)
    assert ("start", True) in seen and ("fence", False) in seen


def test_after_step_failure_names_step(tmp_path: Path) -> None:
    def after(step: str, running: bool) -> None:
        assert step != "stop", "the thing is still there"

    with pytest.raises(AssertionError, match=r"stop: after_step check failed: the thing is still there"):
        run(check_driver(FileResource, {"path": str(tmp_path / "f")}, after_step=after))
    assert not (tmp_path / "f").exists(), "the suite must clean up after a failure"


@pytest.mark.parametrize(
    ("cls", "message"),
    [
        (StartNotIdempotent, r"start again: start on a started resource must succeed.*already there"),
        (StopNotIdempotent, r"stop again: stop on a stopped resource must succeed.*nothing to stop"),
        (LyingProbe, r"probe after start: probe said stopped; a started resource must probe RUNNING"),
        (FailedWhenStopped, r"probe while stopped: probe said failed \(cannot tell\)"),
        (MemoryOnly, r"probe after start: probe said stopped"),
        (FenceDoesNothing, r"probe after fence: probe said running; fence must leave the resource STOPPED"),
    ],
)
def test_broken_drivers_fail_with_the_duty_named(tmp_path: Path, cls: type[Resource], message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        run(check_driver(cls, {"path": str(tmp_path / "f")}))
    assert not (tmp_path / "f").exists(), "the suite must stop the resource after a failure"


def test_memory_only_passes_with_one_instance(tmp_path: Path) -> None:
    run(check_driver(MemoryOnly, {"path": str(tmp_path / "f")}, fresh=False))


def test_timeout_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match=r"start: did not finish within 0.2 s"):
        run(check_driver(HangingStart, {"path": str(tmp_path / "f")}, timeout=0.2))
    assert not (tmp_path / "f").exists()


def test_already_running_is_reported(tmp_path: Path) -> None:
    (tmp_path / "f").touch()
    with pytest.raises(AssertionError, match="must be stopped before the check"):
        run(check_driver(FileResource, {"path": str(tmp_path / "f")}))


def test_params_validated_and_unknown_keys_refused(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="path"):
        run(check_driver(FileResource, {}))

    class LooseParams(DriverParams):
        model_config = ConfigDict(extra="allow", frozen=True)
        path: str

    class Loose(FileResource):
        Params = LooseParams

    with pytest.raises(AssertionError, match="accepts unknown keys"):
        run(check_driver(Loose, {"path": str(tmp_path / "f")}))

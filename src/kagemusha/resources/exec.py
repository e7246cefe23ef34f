"""``exec`` resource: CLUSTERPRO's EXEC resource, a start and a stop script.

The scripts get what the seed's ``start.sh``/``stop.sh`` read: ``CLP_EVENT``
(``START`` or ``FAILOVER``), ``CLP_SERVER`` (``HOME``/``OTHER``), ``CLP_DISK``
(``SUCCESS``/``FAILURE``), plus ``KAGEMUSHA_GROUP``, ``KAGEMUSHA_RESOURCE`` and
``KAGEMUSHA_NODE``. The stop script gets the event the group was started
with. Exit 0 is success; anything else, or the timeout (default 1800 s, like
CLUSTERPRO), is a failure, and on a timeout the script's whole process tree is
killed (every process carrying this run's tag, detached ones included).

State: a start record in the resource's state directory says "started here";
``probe`` answers RUNNING with it, STOPPED only when there is neither a record
nor any process tagged with this resource, FAILED otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from pathlib import Path
from typing import ClassVar

from pydantic import Field, field_validator

from kagemusha import _proc
from kagemusha._aio import within
from kagemusha.errors import NotConfigured, ResourceFailed
from kagemusha.resources._base import (
    ClpEvent,
    DriverParams,
    Probe,
    Resource,
    StartEnv,
)

__all__ = ["ExecResource", "run_script"]


class ExecParams(DriverParams):
    start: str = Field(description="start script (absolute, or relative to cluster.toml)")
    stop: str = Field(description="stop script (absolute, or relative to cluster.toml)")
    env: dict[str, str] = Field(default_factory=dict, description="extra environment for both scripts")

    @field_validator("start", "stop")
    @classmethod
    def _nonempty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("script path must not be empty")
        return v


def _resolve(path: str, base_dir: Path | None) -> Path:
    p = Path(path)
    return p if p.is_absolute() or base_dir is None else base_dir / p


#: A script's output is logged line by line, each cut at this many characters ...
MAX_LINE = 2000
#: ... and at most this many lines per run (the rest is drained and counted, never logged).
MAX_LINES = 1000


def describe_exit(rc: int) -> str:
    """``exited with 3``, or ``was killed by signal 9 (SIGKILL)`` for a negative code."""
    if rc >= 0:
        return f"exited with {rc}"
    try:
        name = f" ({signal.Signals(-rc).name})"
    except ValueError:
        name = ""
    return f"was killed by signal {-rc}{name}"


class _OutputLines:
    """Split a script's output into log lines: printable text only, long lines cut, a bounded count.

    NB: scripts may print binary junk, endless lines or floods; the pipe is always drained (a script
    blocked on a full pipe would never exit), and the log stays readable and bounded.
    """

    def __init__(self, log: object, prefix: str) -> None:
        self.log, self.prefix = log, prefix
        self.buf = bytearray()
        self.skipping = False  # inside an endless line whose head was logged
        self.logged = self.dropped = 0

    def feed(self, chunk: bytes) -> None:
        self.buf += chunk
        while (nl := self.buf.find(b"\n")) >= 0:
            line, self.buf = bytes(self.buf[:nl]), self.buf[nl + 1:]
            if self.skipping:
                self.skipping = False
            else:
                self._emit(line)
        if self.skipping:
            self.buf.clear()
        elif len(self.buf) > 4 * MAX_LINE:  # an endless line: log its head, skip to its end
            self._emit(bytes(self.buf[:MAX_LINE]), cut=True)
            self.buf.clear()
            self.skipping = True

    def close(self) -> None:
        if self.buf and not self.skipping:
            self._emit(bytes(self.buf))
        self.buf.clear()
        if self.dropped:
            self.log.info("%s (%d more lines not logged)", self.prefix, self.dropped)  # type: ignore[attr-defined]

    def _emit(self, raw: bytes, *, cut: bool = False) -> None:
        text = raw.decode("utf-8", "replace")
        text = "".join(ch if ch.isprintable() or ch == "\t" else "\ufffd" for ch in text[:MAX_LINE]).rstrip()
        if not text:
            return
        if self.logged >= MAX_LINES:
            self.dropped += 1
            return
        self.logged += 1
        if cut or len(raw) > MAX_LINE:
            text += " [cut]"
        self.log.info("%s %s", self.prefix, text)  # type: ignore[attr-defined]


async def run_script(
    argv: list[str],
    *,
    env: dict[str, str],
    tag: dict[str, str],
    log: object,
    log_prefix: str,
) -> int:
    """Run a script, log its output line by line, and return its exit code.

    On cancellation (the caller's timeout) every process carrying this run's
    tag is killed before the cancellation propagates.
    """
    run_id = uuid.uuid4().hex
    full_env = {**os.environ, **env, **tag, "KAGEMUSHA_RUN_ID": run_id}
    proc = await asyncio.create_subprocess_exec(
        *argv,
        env=full_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )

    async def pump() -> None:
        assert proc.stdout is not None
        lines = _OutputLines(log, log_prefix)
        while chunk := await proc.stdout.read(65536):  # NB: not readline: a line may be endless junk
            lines.feed(chunk)
        lines.close()

    try:
        pumper = asyncio.ensure_future(pump())
        rc = await proc.wait()
        # Output after exit comes from detached children still holding the pipe: stop reading soon.
        try:
            await within(asyncio.shield(pumper), 0.5)
        except TimeoutError:
            pumper.cancel()
        return rc
    except asyncio.CancelledError:
        await asyncio.to_thread(_proc.kill_tagged, {"KAGEMUSHA_RUN_ID": run_id}, sig=signal.SIGKILL)
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        await proc.wait()
        raise


class ExecResource(Resource):
    """Runs the group's start/stop scripts."""

    type_name: ClassVar[str] = "exec"
    Params = ExecParams
    default_start_timeout: ClassVar[float] = 1800.0
    default_stop_timeout: ClassVar[float] = 1800.0

    params: ExecParams

    @classmethod
    def check_params(cls, params: DriverParams, *, base_dir: Path | None = None) -> list[tuple[str, str]]:
        assert isinstance(params, ExecParams)
        errors = []
        for key in ("start", "stop"):
            p = _resolve(getattr(params, key), base_dir)
            if not p.is_file():
                errors.append((key, f"script {p} does not exist"))
            elif not os.access(p, os.R_OK):
                errors.append((key, f"script {p} is not readable"))
        return errors

    @property
    def _record(self) -> Path:
        return self.ctx.state_dir / f"{self.ctx.resource}.started"

    def _argv(self, which: str) -> list[str]:
        path = _resolve(getattr(self.params, which), self.ctx.base_dir)
        if not path.is_file():
            raise NotConfigured(f"{self.ctx.group}/{self.ctx.resource}: {which} script {path} does not exist")
        if os.access(path, os.X_OK):
            return [str(path)]
        return ["/bin/sh", str(path)]

    def _env(self, env: StartEnv) -> dict[str, str]:
        return {
            **self.ctx.env,  # the node's [[nodes]] env, then the resource's own
            **self.params.env,
            "CLP_EVENT": env.event.value,
            "CLP_SERVER": env.server.value,
            "CLP_DISK": env.disk.value,
            "CLP_GROUPNAME": self.ctx.group,
            "CLP_RESOURCENAME": self.ctx.resource,
            "KAGEMUSHA_GROUP": self.ctx.group,
            "KAGEMUSHA_RESOURCE": self.ctx.resource,
            "KAGEMUSHA_NODE": self.ctx.node,
            "KAGEMUSHA_CLUSTER": self.ctx.cluster,
        }

    async def _run(self, which: str, env: StartEnv) -> None:
        rc = await run_script(
            self._argv(which),
            env=self._env(env),
            tag=self.ctx.tag_env(),
            log=self.ctx.log,
            log_prefix=f"group={self.ctx.group} resource={self.ctx.resource} script={which} |",
        )
        if rc != 0:
            raise ResourceFailed(f"{self.ctx.group}/{self.ctx.resource}: {which} script {describe_exit(rc)}")

    async def start(self, env: StartEnv) -> None:
        if self._record.exists():
            return
        self.ctx.state_dir.mkdir(parents=True, exist_ok=True)
        await self._run("start", env)
        tmp = self._record.with_suffix(".tmp")
        tmp.write_text(json.dumps({"event": env.event.value, "server": env.server.value, "disk": env.disk.value}))
        tmp.replace(self._record)

    def started_env(self) -> StartEnv | None:
        """The env the resource was started with, from its start record (None when not started)."""
        try:
            data = json.loads(self._record.read_text())
        except (OSError, ValueError):
            return None
        from kagemusha.resources._base import ClpDisk, ClpServer

        try:
            return StartEnv(ClpEvent(data["event"]), ClpServer(data["server"]), ClpDisk(data["disk"]))
        except (KeyError, ValueError):
            return None

    async def stop(self, env: StartEnv) -> None:
        if not self._record.exists() and not await asyncio.to_thread(_proc.find_tagged, self._tag()):
            return
        started = self.started_env() or env
        await self._run("stop", started)
        left = await asyncio.to_thread(_proc.kill_tagged, self._tag(), sig=signal.SIGKILL)
        if left:
            self.ctx.log.warning(
                "group=%s resource=%s stop script left processes %s running; killed them", self.ctx.group, self.ctx.resource, left
            )
        self._record.unlink(missing_ok=True)

    def _tag(self) -> dict[str, str]:
        return self.ctx.tag_env()

    async def probe(self) -> Probe:
        if self._record.exists():
            return Probe.running("start record present")
        procs = await asyncio.to_thread(_proc.find_tagged, self._tag())
        if procs:
            return Probe.failed(f"no start record but processes {[p.pid for p in procs]} are tagged with this resource")
        return Probe.stopped()

    async def fence(self) -> None:
        left = await asyncio.to_thread(_proc.fence_tagged, self._tag(), wait=0.5)
        if left:
            raise ResourceFailed(f"exec {self.ctx.resource}: processes {left} still alive after SIGKILL")
        self._record.unlink(missing_ok=True)

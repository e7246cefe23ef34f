"""A cluster of real agent processes on one local store, for integration tests and benchmarks.

The groups' exec resources are recorder scripts: the start script appends
``start <group> <node> <CLP_EVENT> <CLP_SERVER> <CLP_DISK> <time>`` to a trace
file and starts a service process (``sleep``); the stop script kills it and
appends ``stop ...``. ``crash(node)`` kills the node's agent and every process
it started (found by their ``KAGEMUSHA_*`` tags) and records the time, so
``assert_no_overlap`` can check that no group ever ran on two nodes at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from kagemusha import _proc
from kagemusha.config import Config, load_config
from kagemusha.control import ClusterControl

START_SH = """#!/bin/sh
echo "start $KAGEMUSHA_GROUP $KAGEMUSHA_NODE $CLP_EVENT $CLP_SERVER $CLP_DISK $(date +%s.%N)" >> "$TRACE"
sleep 3600 > /dev/null 2>&1 &
echo $! > "$SVC/$KAGEMUSHA_GROUP.$KAGEMUSHA_NODE.pid"
exit 0
"""
STOP_SH = """#!/bin/sh
f="$SVC/$KAGEMUSHA_GROUP.$KAGEMUSHA_NODE.pid"
if [ -f "$f" ]; then kill "$(cat "$f")" 2>/dev/null; rm -f "$f"; fi
echo "stop $KAGEMUSHA_GROUP $KAGEMUSHA_NODE $CLP_EVENT $CLP_SERVER $CLP_DISK $(date +%s.%N)" >> "$TRACE"
exit 0
"""


@dataclass
class TraceLine:
    kind: str
    group: str
    node: str
    event: str
    server: str
    disk: str
    at: float


@dataclass
class LocalCluster:
    dir: Path
    nodes: tuple[str, ...] = ("n1", "n2")
    groups: list[dict[str, Any]] = field(default_factory=list)
    cluster: dict[str, Any] = field(default_factory=dict)
    base_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    crashes: list[tuple[str, float]] = field(default_factory=list)
    config: Config | None = None
    #: when set, written to ``api.token`` (mode 0600) and named by ``cluster.api_token_file``
    api_token: str | None = None

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "svc").mkdir(exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        for name, text in (("start.sh", START_SH), ("stop.sh", STOP_SH)):
            p = self.dir / name
            p.write_text(text)
            p.chmod(0o755)
        self.trace_file = self.dir / "trace"
        self.trace_file.touch()
        if not self.base_port:
            self.base_port = 20000 + (os.getpid() * 7 + int(time.time() * 1000)) % 20000
        if not self.groups:
            self.groups = [self.group("webotx1", list(self.nodes))]
        if self.api_token is not None:
            token_file = self.dir / "api.token"
            token_file.touch(mode=0o600)
            token_file.chmod(0o600)
            token_file.write_text(self.api_token + "\n")
            self.cluster.setdefault("api_token_file", str(token_file))
        self.write_config()

    def group(self, name: str, nodes: list[str], **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "nodes": nodes,
            "resources": [{"name": "exec1", "type": "exec", "start": "start.sh", "stop": "stop.sh",
                           "env": {"TRACE": str(self.trace_file), "SVC": str(self.dir / "svc")}}],
            **extra,
        }

    def write_config(self) -> None:
        import tomli_w  # type: ignore[import-not-found]

        data = {
            "cluster": {"name": "itest", "store": f"local:{self.dir / 'store.db'}", "state_dir": str(self.dir / "state"),
                        "startup_wait": 2.0, **self.cluster},
            "nodes": [{"name": n, "address": f"127.0.0.1:{self.base_port + i}"} for i, n in enumerate(self.nodes)],
            "groups": self.groups,
        }
        (self.dir / "cluster.toml").write_text(tomli_w.dumps(data))
        self.config = load_config(self.dir / "cluster.toml")

    @property
    def config_path(self) -> Path:
        return self.dir / "cluster.toml"

    def api_url(self, node: str) -> str:
        """The base URL of ``node``'s API (http; https when the config names a TLS certificate)."""
        assert self.config is not None
        scheme = "https" if self.config.cluster.tls_cert_file else "http"
        return f"{scheme}://{self.config.node(node).address}"

    # -- processes -----------------------------------------------------------------

    def start(self, node: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "KAGEMUSHA_LOG_FORMAT": "json"}
        with open(self.dir / "logs" / f"{node}.log", "ab") as log:  # the child keeps its own copy
            p = subprocess.Popen(
                [sys.executable, "-m", "kagemusha", "agent", "--config", str(self.config_path), "--node", node],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            )
        self.procs[node] = p
        return p

    def start_all(self, *, wait: bool = True) -> None:
        """Start every node's agent; with ``wait``, return once all have joined (a test that moves or
        crashes right after "online on n1" otherwise races the other agents' start on a loaded machine:
        "cannot move webotx1 to n2: node n2 is down")."""
        for n in self.nodes:
            self.start(n)
        if wait:
            self.wait_up(*self.nodes)

    def crash(self, node: str) -> float:
        """kill -9 the agent and every process it started: the node "crashes".

        First waits until every other agent still running has joined: a crash before the standby had
        joined tests its start-up, not the failover (test_three_nodes_priority_order saw n2 take the
        group because n3, first in order, had not joined yet on a loaded machine).
        """
        others = [n for n, q in self.procs.items() if n != node and q.poll() is None]
        self.wait_up(node, *others)
        p = self.procs.pop(node)
        children = self.agent_children(p)
        p.send_signal(signal.SIGKILL)  # the supervisor first, so it cannot fence: the whole node dies at once
        for ch in children:
            try:
                ch.kill()
            except psutil.Error:
                pass
        assert self.config is not None
        _proc.kill_tagged({"KAGEMUSHA_CLUSTER_ID": self.config.cluster_id, "KAGEMUSHA_NODE": node}, wait=1.0)
        t = time.time()  # every process of the node is gone (or a zombie) now
        p.wait(5)
        self.crashes.append((node, t))
        return t

    @staticmethod
    def agent_children(p: subprocess.Popen[bytes]) -> list[psutil.Process]:
        """The supervisor's whole process tree (the agent and anything it left attached)."""
        try:
            return psutil.Process(p.pid).children(recursive=True)
        except psutil.Error:
            return []

    def agent_pid(self, node: str, timeout: float = 10) -> int:
        """The pid of the real agent (the supervisor's child)."""
        deadline = time.monotonic() + timeout
        while True:
            kids = [k for k in self.agent_children(self.procs[node]) if "agent" in " ".join(k.cmdline())]
            if kids:
                return kids[0].pid
            assert time.monotonic() < deadline, f"no agent child under the supervisor of {node}"
            time.sleep(0.05)

    def leave(self, node: str, timeout: float = 30) -> int:
        p = self.procs.pop(node)
        p.send_signal(signal.SIGTERM)
        return p.wait(timeout)

    def close(self) -> None:
        for node in list(self.procs):
            p = self.procs.pop(node)
            children = self.agent_children(p)
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
                p.wait(5)
            for ch in children:
                try:
                    ch.kill()
                except psutil.Error:
                    pass
        if self.config is not None:
            for node in self.nodes:
                _proc.kill_tagged({"KAGEMUSHA_CLUSTER_ID": self.config.cluster_id, "KAGEMUSHA_NODE": node}, wait=1.0)

    def log(self, node: str) -> str:
        return (self.dir / "logs" / f"{node}.log").read_text(errors="replace")

    # -- observing ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        assert self.config is not None
        cfg = self.config

        async def go() -> dict[str, Any]:
            async with ClusterControl.open(cfg) as ctl:
                return await ctl.status()

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(go())
        # NB: called under a running loop (Playwright's sync API runs one in this thread): a thread of its own
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, go()).result()

    def group_status(self, name: str) -> dict[str, Any]:
        return next(g for g in self.status()["groups"] if g["name"] == name)

    def wait_up(self, *nodes: str, timeout: float = 30.0) -> None:
        """Wait until ``nodes`` are members of the cluster (their agents joined)."""
        deadline = time.monotonic() + timeout
        while True:
            up = {n["name"] for n in self.status()["nodes"] if n["state"] == "up"}
            if set(nodes) <= up:
                return
            assert time.monotonic() < deadline, f"nodes {set(nodes) - up} did not join within {timeout}s"
            time.sleep(0.05)

    def wait_group(self, name: str, state: str, node: str | None = None, timeout: float = 20.0) -> tuple[dict[str, Any], float]:
        deadline = time.monotonic() + timeout
        while True:
            g = self.group_status(name)
            if g["state"] == state and (node is None or g["node"] == node):
                return g, time.time()
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {n}\n{self.log(n)[-3000:]}" for n in self.nodes)
                raise AssertionError(f"group {name} not {state} on {node} after {timeout}s: {g}\n{logs}")
            time.sleep(0.05)

    def cli(self, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "kagemusha", *args, "--config", str(self.config_path)],
                              capture_output=True, text=True, timeout=timeout, check=False)

    def trace(self) -> list[TraceLine]:
        out = []
        for line in self.trace_file.read_text().splitlines():
            parts = line.split()
            if len(parts) == 7:
                out.append(TraceLine(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5], float(parts[6])))
        return out

    def starts(self, group: str) -> list[TraceLine]:
        return [t for t in self.trace() if t.kind == "start" and t.group == group]

    def fences(self) -> list[tuple[str, float]]:
        """When each node fenced itself (agent or supervisor), from its log: that ends its runs too."""
        from datetime import UTC, datetime

        out = []
        for node in self.nodes:
            p = self.dir / "logs" / f"{node}.log"
            if not p.exists():
                continue
            for line in p.read_text(errors="replace").splitlines():
                if '"fenced: stopped every resource"' in line or '"agent died: fenced the node"' in line:
                    try:
                        ts = json.loads(line)["ts"]
                    except (ValueError, KeyError):
                        continue
                    at = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()
                    out.append((node, at))
        return out

    def assert_no_overlap(self) -> None:
        """No group ever ran on two nodes at once (start..stop, or start..crash/fence of that node)."""
        lines = self.trace()
        for group in {t.group for t in lines}:
            intervals: list[tuple[float, float, str]] = []
            open_: dict[str, float] = {}
            events = sorted([(t.at, t.kind, t.node) for t in lines if t.group == group]
                            + [(at, "crash", n) for n, at in self.crashes + self.fences()])
            for at, kind, node in events:
                if kind == "start":
                    open_[node] = at
                elif node in open_:
                    intervals.append((open_.pop(node), at, node))
            for node, at in open_.items():
                intervals.append((at, float("inf"), node))
            intervals.sort()
            for (s1, e1, n1), (s2, e2, n2) in itertools.pairwise(intervals):
                assert n1 == n2 or s2 >= e1, f"group {group} ran on {n1} [{s1}, {e1}] and {n2} [{s2}, {e2}] at once"


@contextmanager
def cluster_factory(root: Path, build: Callable[..., LocalCluster]) -> Iterator[Callable[..., LocalCluster]]:
    """Make clusters under ``root`` with ``build(path, **kw)``; on exit stop them all, then check no overlap."""
    made: list[LocalCluster] = []

    def make(**kw: Any) -> LocalCluster:
        c = build(root / f"c{len(made)}", **kw)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
    for c in made:
        c.assert_no_overlap()

"""``make demo``: a two-node one-way standby cluster on the local store, a failover, then a cluster to play with.

What it builds under ``./demo-cluster`` (``--dir``):

- ``data1/domains``: the "switchover disk" (a directory: both nodes share this host);
- ``domain1`` created from the seed's ``domain1.properties`` (ports +30000, so the seed's 80 is 30080),
  serving ``kagemusha.demo_app`` (it says which node serves it and keeps writes on the disk);
- per-node domain registries (``n1`` created the domain, ``n2`` ran ``domain setup``: the seed's steps);
- ``cluster.toml``: group ``webotx1`` (home n1, standby n2) whose exec resource runs the seed's Linux
  ``start.sh``/``stop.sh`` with ``/opt/WebOTX/bin/otxadmin`` replaced by ``kagemusha domain``, and an
  ``http`` monitor on the application.

Then it starts both agents, crashes n1 (``kill -9`` of its agent and every process it started), shows
the group come up on n2 and the application answer from there, restarts n1, and leaves the cluster
running until Ctrl-C, when both agents leave gracefully (``--exit`` stops right after the failover).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from kagemusha import _proc

SEED_PROPERTIES = """domain.hostname=localhost
domain.name=domain1
domain.admin.user=admin
domain.admin.password=adminadmin
domain.admin.port=36212
domain.admin.jmxmp.port=36712
domain.http.port=30080
domain.https.port=30443
domain.http.admin.port=35858
domain.http.adminrest.port=50101
domain.http.ajp.port=38099
domain.jms.port=39700
domain.jms.user.port=39701
domain.jms.admin.port=39702
domain.java.debugger.port=39010
domain.ipv6-enable=false
domain.embedded-iiop-service.port=37780
server.corba-service.oadj.Port=39826
server.corba-service.namesv.NameServicePort=32809
server.corba-service.namesv.NameServiceRoundRobin=true
server.corba-service.oad.OadPort=39825
tpsystem.IIOPListener.listenerPortNumber=35151
tpsystem.AJPListener.listenerPortNumber=50102
domain.app=kagemusha.demo_app:app
"""
ADMIN_PORT = "36202"
APP_URL = "http://127.0.0.1:30080/"


def say(msg: str = "") -> None:
    print(f"\033[1;36m==>\033[0m {msg}" if msg else "", flush=True)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only (0600) from the first byte.

    NB: ``write_text`` then ``chmod`` leaves the secret readable by everyone (umask 022) in between.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an existing file keeps its mode on open
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _seed_script(name: str) -> str:
    # The seed's Linux one-way scripts, kept verbatim in the package's examples; otxadmin -> kagemusha domain.
    here = Path(__file__).resolve()
    for root in (here.parents[2] / "examples" / "oneway", here.parent / "examples" / "oneway"):
        p = root / name
        if p.exists():
            return p.read_text()
    raise SystemExit(f"demo: cannot find examples/oneway/{name}")


class Demo:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        bindir = str(Path(sys.executable).parent)
        self.env = {**os.environ, "PATH": f"{bindir}:{os.environ.get('PATH', '')}", "KAGEMUSHA_LOG_FORMAT": "text"}

    # -- set-up ----------------------------------------------------------------------
    def kagemusha(self, *args: str, node: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if node:
            env["KAGEMUSHA_DOMAIN_REGISTRY"] = str(self.root / node / "registry")
        r = subprocess.run([sys.executable, "-m", "kagemusha", *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        if check and r.returncode != 0:
            raise SystemExit(f"demo: kagemusha {' '.join(args)} failed: {r.stderr.strip() or r.stdout.strip()}")
        return r

    def build(self) -> None:
        self.cleanup_previous()
        if self.root.exists():
            shutil.rmtree(self.root)
        (self.root / "logs").mkdir(parents=True)
        for n in ("n1", "n2"):
            (self.root / n).mkdir()
        props = self.root / "domain1.properties"
        write_private(props, SEED_PROPERTIES)  # the seed's file holds domain.admin.password
        domains = self.root / "data1" / "domains"
        domains.mkdir(parents=True)
        say("creating domain1 on the switchover directory from the seed's domain1.properties (ports +30000)")
        self.kagemusha("domain", "create-domain", "--user", "admin", "--password", "adminadmin", "--port", ADMIN_PORT,
                       f"--file={props}", f"--domaindir={domains}", "domain1", node="n1")
        self.kagemusha("domain", "setup", "--domains-root", str(domains), "--port", ADMIN_PORT, node="n2")
        import secrets

        write_private(self.root / "api.token", secrets.token_urlsafe(24) + "\n")
        for name in ("start.sh", "stop.sh"):
            p = self.root / name
            p.write_text(_seed_script(name))
            p.chmod(0o755)
        cfg = f"""# kagemusha demo: the seed's one-way standby on one host (local store)
[cluster]
name = "demo"
store = "local:{self.root}/store.db"
state_dir = "{self.root}/state"
startup_wait = 2.0
api_token_file = "{self.root}/api.token"

[[nodes]]
name = "n1"
address = "127.0.0.1:37701"
env = {{ KAGEMUSHA_DOMAIN_REGISTRY = "{self.root}/n1/registry" }}

[[nodes]]
name = "n2"
address = "127.0.0.1:37702"
env = {{ KAGEMUSHA_DOMAIN_REGISTRY = "{self.root}/n2/registry" }}

[[groups]]
name = "webotx1"
nodes = ["n1", "n2"]
failback = "manual"

[[groups.resources]]
name = "exec1"
type = "exec"
start = "start.sh"
stop = "stop.sh"
start_timeout = 120
stop_timeout = 660

[[groups.monitors]]
name = "webotxw1"
type = "http"
url = "{APP_URL}"
interval = 1.0
timeout = 3.0
retries = 3
restart_limit = 1
failover_limit = 1
final_action = "stop_group"
"""
        (self.root / "cluster.toml").write_text(cfg)
        r = self.kagemusha("config", "validate", str(self.root / "cluster.toml"), check=False)
        if r.returncode != 0:
            raise SystemExit(f"demo: generated config is invalid:\n{r.stderr}")

    def cleanup_previous(self) -> None:
        """Stop agents a previous demo in the same directory left running (by the pids it recorded)."""
        pids = self.root / "agents.json"
        if not pids.exists():
            return
        try:
            recorded = json.loads(pids.read_text())
        except ValueError:
            return
        import psutil

        for node, pid in recorded.items():
            try:
                p = psutil.Process(pid)
                if str(self.root / "cluster.toml") in " ".join(p.cmdline()):
                    say(f"stopping agent {node} left by a previous demo (pid {pid})")
                    p.send_signal(signal.SIGTERM)
                    p.wait(60)
            except (psutil.Error, OSError):
                continue

    # -- running ---------------------------------------------------------------------------
    def start_agent(self, node: str) -> None:
        with open(self.root / "logs" / f"{node}.log", "ab") as log:  # the child keeps its own copy
            self.procs[node] = subprocess.Popen(
                [sys.executable, "-m", "kagemusha", "agent", "--config", str(self.root / "cluster.toml"), "--node", node],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True,
            )
        (self.root / "agents.json").write_text(json.dumps({n: p.pid for n, p in self.procs.items()}))

    def status(self) -> dict[str, object]:
        r = self.kagemusha("status", "--config", str(self.root / "cluster.toml"), "--json")
        data: dict[str, object] = json.loads(r.stdout)
        return data

    def show_status(self) -> None:
        r = self.kagemusha("status", "--config", str(self.root / "cluster.toml"))
        print(r.stdout, flush=True)

    def wait_online(self, node: str, timeout: float = 60) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            g = self.status()["groups"][0]  # type: ignore[index]
            if g["state"] == "online" and g["node"] == node:
                return time.time()
            time.sleep(0.1)
        raise SystemExit(f"demo: webotx1 did not come online on {node} within {timeout}s; see {self.root}/logs")

    def wait_app(self, node: str, timeout: float = 60) -> float:
        """Ask the application every 10 ms until it answers from ``node``; the wall time of that answer."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                with urllib.request.urlopen(APP_URL, timeout=0.5) as r:
                    if f"served by {node}" in r.read().decode():
                        return time.time()
            except OSError:
                pass
            time.sleep(max(0.0, 0.01 - (time.monotonic() - t0)))
        raise SystemExit(f"demo: the application did not answer from {node} within {timeout}s; see {self.root}/logs")

    def phases(self, node: str, since: float) -> dict[str, float]:
        """From ``node``'s log: when (s after ``since``) it decided to take the group, when the group was
        online, and how long its start (the start script) took."""
        out: dict[str, float] = {}
        try:
            lines = (self.root / "logs" / f"{node}.log").read_text(errors="replace").splitlines()
        except OSError:
            return out
        day = time.localtime(since)
        for line in lines:
            m = re.match(r"(\d\d):(\d\d):(\d\d)\.(\d{3}) \w \[" + re.escape(node) + r"\] (.*)", line)
            if not m:
                continue
            hh, mm, ss, ms, rest = int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5]
            at = time.mktime((day.tm_year, day.tm_mon, day.tm_mday, hh, mm, ss, 0, 0, -1)) + ms / 1000
            if at < since - 43200:  # the log line is from after midnight
                at += 86400
            if at < since - 1:
                continue
            if rest.startswith("decision ") and "decision=take" in rest and "decided" not in out:
                out["decided"] = at - since
            elif rest.startswith("group online ") and "online" not in out:
                out["online"] = at - since
                took = re.search(r"seconds=([0-9.]+)", rest)
                if took:
                    out["start"] = float(took[1])
        return out

    def fetch(self) -> str:
        try:
            with urllib.request.urlopen(APP_URL, timeout=2) as r:
                return str(r.read().decode().strip())
        except OSError as exc:
            return f"(no answer: {exc})"

    def crash(self, node: str) -> float:
        """The node dies at once: its supervisor, its agent and every process it started."""
        import psutil

        p = self.procs.pop(node)
        try:
            tree = psutil.Process(p.pid).children(recursive=True)
        except psutil.Error:
            tree = []
        t = time.time()  # the crash: from here the node's lease is no longer renewed
        p.send_signal(signal.SIGKILL)
        for child in tree:
            try:
                child.kill()
            except psutil.Error:
                pass
        cid = self.cluster_id()
        _proc.kill_tagged({"KAGEMUSHA_CLUSTER_ID": cid, "KAGEMUSHA_NODE": node}, wait=2.0)
        p.wait(10)
        return t

    def cluster_id(self) -> str:
        from kagemusha.config import load_config

        return load_config(self.root / "cluster.toml").cluster_id

    def stop_all(self) -> None:
        for node, p in list(self.procs.items()):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for node, p in list(self.procs.items()):
            try:
                p.wait(120)
            except subprocess.TimeoutExpired:
                p.kill()
        # Whatever a leave could not stop (it should be nothing) goes by its tags.
        try:
            cid = self.cluster_id()
            for node in ("n1", "n2"):
                _proc.kill_tagged({"KAGEMUSHA_CLUSTER_ID": cid, "KAGEMUSHA_NODE": node}, wait=2.0)
        except Exception:  # noqa: BLE001, S110 - the config may not exist if the build failed
            pass
        self.procs.clear()
        (self.root / "agents.json").unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description="kagemusha demo: a two-node cluster with a failover")
    ap.add_argument("--dir", default="demo-cluster", help="where to build the demo (default ./demo-cluster)")
    ap.add_argument("--exit", action="store_true", help="stop the cluster after showing the failover")
    args = ap.parse_args()
    demo = Demo(Path(args.dir))
    demo.build()
    cfg = demo.root / "cluster.toml"
    try:
        say(f"starting the agents of n1 and n2 (logs in {demo.root}/logs)")
        demo.start_agent("n1")
        demo.start_agent("n2")
        demo.wait_online("n1")
        say(f"webotx1 is online on n1; the application says: {demo.fetch()}")
        demo.show_status()
        say("crashing n1: kill -9 of its agent and of every process it started (the domain too)")
        t = demo.crash("n1")
        answered = demo.wait_app("n2")
        say(f"webotx1 failed over to n2: the application answered from n2 {answered - t:.2f}s after the crash "
            "(from the kill of n1's agent to the first answer from n2, asking every 10 ms)")
        demo.wait_online("n2")
        ph = demo.phases("n2", t)
        if {"decided", "online", "start"} <= ph.keys():
            say(f"    n2 decided to take webotx1 at +{ph['decided']:.2f}s (n1's lease expired); its start (the "
                f"seed's start.sh: kagemusha domain start) took {ph['start']:.2f}s; the group was online at "
                f"+{ph['online']:.2f}s (the script returns after the application answers)")
        say(f"the application now says: {demo.fetch()}")
        demo.show_status()
        say("n1 comes back (failback is manual, so webotx1 stays on n2)")
        demo.start_agent("n1")
        time.sleep(2.5)
        demo.show_status()
        if args.exit:
            return
        k = f"{sys.executable} -m kagemusha"
        token = (demo.root / "api.token").read_text().strip()
        say("the cluster keeps running. Web UI: http://127.0.0.1:37701/ (or :37702), token: " + token)
        say("try, in another terminal:")
        print(f"""
    {k} status --config {cfg}
    {k} group move webotx1 --to n1 --config {cfg}
    curl {APP_URL}    curl -X PUT -d hello {APP_URL}kv/greeting
    kill -9 $(python3 -c 'import json;print(json.load(open("{demo.root}/agents.json"))["n1"])')   # crash n1's agent
    tail -f {demo.root}/logs/n1.log {demo.root}/logs/n2.log

  Press Ctrl-C here to stop the cluster (both agents leave gracefully).
""", flush=True)
        while True:
            time.sleep(1)
            for node, p in list(demo.procs.items()):
                if p.poll() is not None:
                    say(f"agent {node} exited ({p.returncode}); restarting it")
                    demo.start_agent(node)
    except KeyboardInterrupt:
        print()
    finally:
        say("stopping the cluster: both agents leave gracefully")
        demo.stop_all()
        say("stopped")


if __name__ == "__main__":
    main()

"""Real etcd members for tests: one for the conformance run, three for partition tests.

Usage::

    with EtcdCluster(1) as etcd:                      # 127.0.0.1, free ports, tmp data dir
        store = open_store(etcd.endpoints)            # "etcd://127.0.0.1:41235"
        etcd.stop_member(0)                           # SIGTERM, data dir kept
        etcd.start_member(0)                          # same ports and data, waits until healthy

    # Partition tests: each member inside a node's network namespace (kagemusha.testing.netns).
    with Harness(["n1", "n2", "n3"]) as h, EtcdCluster(
        3, hosts=[str(h.address(n).ip) for n in ("n1", "n2", "n3")], nodes=["n1", "n2", "n3"], popen=h.popen
    ) as etcd:                                        # members on 198.18.0.11-13:2379
        h.python("n2", code, etcd.endpoints)          # clients run inside nodes too
        h.link_down("n1"); ...; h.link_up("n1"); etcd.wait_healthy(0)

Members use short raft timings (heartbeat 50 ms, election 500 ms) so leader
elections and lease expiry take under a second; that also makes etcd's minimum
lease TTL one second. Teardown signals only the processes this object started,
by pid. NB: Debian's etcd 3.4 on amd64 (and arm64) runs without
``ETCD_UNSUPPORTED_ARCH``; other architectures need it set, which is done here.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import httpx

__all__ = ["ETCDCTL_BIN", "ETCD_BIN", "EtcdCluster", "EtcdMember", "EtcdTLS", "PopenInNode", "make_test_pki", "require_etcd"]

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
ETCDCTL_BIN = shutil.which("etcdctl") or "/usr/bin/etcdctl"

_SUPPORTED_ARCHES = {"x86_64", "amd64", "aarch64", "arm64"}


def require_etcd() -> None:
    """In a pytest test: skip when etcd/etcdctl are not installed, but fail under ``CI=true``.

    CI must not go green by skipping the tests that matter most.
    """
    import pytest

    missing = [b for b in (ETCD_BIN, ETCDCTL_BIN) if not os.access(b, os.X_OK)]
    if missing:
        reason = f"etcd not installed ({', '.join(missing)} missing; apt install etcd-server etcd-client)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: etcd tests must run, not skip)")
        pytest.skip(reason)


class PopenInNode(Protocol):
    """Runs ``argv`` inside ``node`` (e.g. a network namespace): ``kagemusha.testing.netns.Harness.popen``.

    Extra keyword arguments (``stdout``, ``stderr``) go to ``subprocess.Popen``.
    """

    def __call__(
        self, node: Any, argv: Sequence[str], *, env: Mapping[str, str], **kwargs: Any
    ) -> subprocess.Popen[Any]: ...


@dataclass(frozen=True)
class EtcdTLS:
    """TLS files for members (server side) and for clients.

    ``client_cert_auth`` makes members demand a client certificate signed by ``ca_file``.
    """

    ca_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str
    client_cert_auth: bool = True


@dataclass
class EtcdMember:
    """One member: where it listens, its data, and its process while it runs."""

    index: int
    name: str
    host: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_file: Path
    node: Any
    scheme: str = "http"
    process: subprocess.Popen[Any] | None = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client listener, as in a store URL."""
        return f"{self.host}:{self.client_port}"

    @property
    def client_url(self) -> str:
        return f"{self.scheme}://{self.endpoint}"

    @property
    def peer_url(self) -> str:
        return f"http://{self.host}:{self.peer_port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None


def _free_ports(host: str, count: int) -> list[int]:
    # Hold every socket until all are chosen so the ports differ; etcd binds them a
    # moment later (a small race we accept in tests).
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    """Start, stop and restart real etcd members for tests.

    Args:
        size: number of members (1 or 3 in practice; any size works).
        hosts: one IP per member. Default: every member on 127.0.0.1 with free
            ports. With distinct hosts, members use ``client_port``/``peer_port``.
        nodes: what to pass to ``popen`` for each member (default: the member index).
        popen: run each member through this (e.g. ``NetnsHarness.popen``) instead of
            ``subprocess.Popen``; health checks then run ``etcdctl`` through it too,
            so the test process needs no route to the members.
        base_dir: where data dirs and logs go; default a fresh temp dir, removed on stop.
        client_port: client port when hosts are distinct (default 2379).
        peer_port: peer port when hosts are distinct (default 2380).
        heartbeat_ms: raft heartbeat interval.
        election_ms: raft election timeout.
        tls: serve clients over TLS with these files (see ``make_test_pki``).
        extra_args: appended to every member's command line.
        start_timeout: seconds to wait for the cluster to become healthy.
        etcd_bin: the etcd binary.
    """

    def __init__(
        self,
        size: int = 1,
        *,
        hosts: Sequence[str] | None = None,
        nodes: Sequence[Any] | None = None,
        popen: PopenInNode | None = None,
        base_dir: str | os.PathLike[str] | None = None,
        client_port: int = 2379,
        peer_port: int = 2380,
        heartbeat_ms: int = 50,
        election_ms: int = 500,
        tls: EtcdTLS | None = None,
        extra_args: Sequence[str] = (),
        start_timeout: float = 15.0,
        etcd_bin: str = ETCD_BIN,
    ) -> None:
        if size < 1:
            raise ValueError("an etcd cluster needs at least one member")
        if hosts is not None and len(hosts) != size:
            raise ValueError(f"{size} members but {len(hosts)} hosts")
        if nodes is not None and len(nodes) != size:
            raise ValueError(f"{size} members but {len(nodes)} nodes")
        self.size = size
        self.tls = tls
        self.popen = popen
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.extra_args = tuple(extra_args)
        self.start_timeout = start_timeout
        self.etcd_bin = etcd_bin
        self._own_dir = base_dir is None
        self.base_dir = Path(base_dir) if base_dir is not None else Path(tempfile.mkdtemp(prefix="kg-etcd-"))
        self.token = f"kg-{os.getpid()}-{id(self):x}"
        host_list = list(hosts) if hosts is not None else ["127.0.0.1"] * size
        # Free ports unless every member has a host of its own (namespaces: standard ports).
        free = hosts is None or len(set(host_list)) < len(host_list)
        scheme = "https" if tls else "http"
        self.members: list[EtcdMember] = []
        for i, host in enumerate(host_list):
            cport, pport = _free_ports(host, 2) if free else (client_port, peer_port)
            name = f"m{i}"
            self.members.append(
                EtcdMember(
                    index=i,
                    name=name,
                    host=host,
                    client_port=cport,
                    peer_port=pport,
                    data_dir=self.base_dir / f"{name}.etcd",
                    log_file=self.base_dir / f"{name}.log",
                    node=nodes[i] if nodes is not None else i,
                    scheme=scheme,
                )
            )

    # -- whole cluster ----------------------------------------------------

    @property
    def endpoints(self) -> str:
        """The store URL for every member: ``etcd://h:p,h:p,...``."""
        return "etcd://" + ",".join(m.endpoint for m in self.members)

    def url(self, *indices: int) -> str:
        """The store URL for some members only, in the order given."""
        return "etcd://" + ",".join(self.members[i].endpoint for i in indices)

    @property
    def pids(self) -> list[int]:
        """Pids of the members running now (only processes this object started)."""
        return [m.process.pid for m in self.members if m.process is not None and m.is_running()]

    def start(self) -> Self:
        """Start every member and wait until each is healthy.

        Raises:
            RuntimeError: a member exited or the cluster was not healthy in time
                (the message has the tail of the member's log).
        """
        self.base_dir.mkdir(parents=True, exist_ok=True)
        try:
            for m in self.members:
                self._spawn(m)
                if len(self.members) > 1:
                    self._wait_serving_peers(m)
            deadline = time.monotonic() + self.start_timeout
            for m in self.members:
                self._wait_healthy(m, deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Kill every member this object started (by pid); remove the temp dir if it made one.

        NB: SIGKILL, not SIGTERM: etcd fsyncs its WAL, so a kept data dir stays
        usable, and a graceful stop of members that are all going away costs
        seconds of leadership hand-over attempts for nothing.
        """
        for m in self.members:
            self._terminate(m, kill=True)
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- one member ---------------------------------------------------------

    def stop_member(self, i: int, *, kill: bool = False) -> None:
        """Stop member ``i`` (SIGTERM, or SIGKILL with ``kill``); its data dir is kept."""
        self._terminate(self.members[i], kill=kill)

    def start_member(self, i: int, *, wait: bool = True) -> None:
        """Start member ``i`` again with its data dir; with ``wait``, until it is healthy.

        NB: in a three-member cluster a restarted member is healthy only once it
        reaches a quorum, so start enough members before waiting on one.
        """
        m = self.members[i]
        if m.is_running():
            return
        self._spawn(m)
        if wait:
            self._wait_healthy(m, time.monotonic() + self.start_timeout)

    def wait_healthy(self, i: int, timeout: float | None = None) -> None:
        """Wait until member ``i`` answers ``/health`` with true (it sees a leader)."""
        self._wait_healthy(self.members[i], time.monotonic() + (timeout or self.start_timeout))

    def etcdctl(self, *args: str, member: int = 0, env: Mapping[str, str] | None = None) -> str:
        """Run ``etcdctl`` against member ``member`` and return its stdout.

        With ``popen`` it runs inside that member's node (so it needs no route
        from the test process), else here.

        Raises:
            RuntimeError: etcdctl failed or took over 30 s (its stderr is in the message).
        """
        m = self.members[member]
        argv = [ETCDCTL_BIN, f"--endpoints={m.client_url}", "--command-timeout=5s", *self._ctl_tls(), *args]
        full_env = {**self._env(), **(env or {})}
        if self.popen is not None:
            proc = self.popen(m.node, argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        else:
            proc = subprocess.Popen(argv, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise RuntimeError(f"etcdctl {' '.join(args)} timed out") from None
        text_out = out.decode(errors="replace") if isinstance(out, bytes) else str(out)
        if proc.returncode != 0:
            text_err = err.decode(errors="replace") if isinstance(err, bytes) else str(err)
            raise RuntimeError(f"etcdctl {' '.join(args)} failed: {text_err.strip()}")
        return text_out

    def leader(self) -> int | None:
        """Index of the member that is raft leader now, as the running members see it; None if none.

        Partition tests use it to know whether a cut also costs the majority an election.
        """
        ids: dict[int, int] = {}
        leaders: set[int] = set()
        for m in self.members:
            if not m.is_running():
                continue
            try:
                status = json.loads(self.etcdctl("endpoint", "status", "-w", "json", member=m.index))
            except (RuntimeError, ValueError):
                continue
            for entry in status:
                st = entry.get("Status") or {}
                ids[int(st.get("header", {}).get("member_id", 0))] = m.index
                if st.get("leader"):
                    leaders.add(int(st["leader"]))
        if len(leaders) != 1:
            return None
        return ids.get(leaders.pop())

    # -- plumbing -------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "ETCDCTL_API": "3"}
        if platform.machine() not in _SUPPORTED_ARCHES:
            env["ETCD_UNSUPPORTED_ARCH"] = platform.machine()
        return env

    def _ctl_tls(self) -> list[str]:
        if self.tls is None:
            return []
        return [
            f"--cacert={self.tls.ca_file}",
            f"--cert={self.tls.client_cert_file}",
            f"--key={self.tls.client_key_file}",
        ]

    def _argv(self, m: EtcdMember) -> list[str]:
        cluster = ",".join(f"{o.name}={o.peer_url}" for o in self.members)
        argv = [
            self.etcd_bin,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={m.client_url}",
            f"--advertise-client-urls={m.client_url}",
            f"--listen-peer-urls={m.peer_url}",
            f"--initial-advertise-peer-urls={m.peer_url}",
            f"--initial-cluster={cluster}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token={self.token}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--logger=zap",
            f"--log-outputs={m.log_file}",
            "--log-level=info",  # _wait_serving_peers reads an info line
        ]
        if self.tls is not None:
            argv += [
                f"--cert-file={self.tls.server_cert_file}",
                f"--key-file={self.tls.server_key_file}",
                f"--trusted-ca-file={self.tls.ca_file}",
            ]
            if self.tls.client_cert_auth:
                argv.append("--client-cert-auth")
        return argv + list(self.extra_args)

    def _spawn(self, m: EtcdMember) -> None:
        # NB: with a data dir already there etcd ignores --initial-cluster*, so the same
        # command line restarts a member (start_member) as well as creating it.
        argv = self._argv(m)
        if self.popen is not None:
            m.process = self.popen(
                m.node, argv, env=self._env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        else:
            m.process = subprocess.Popen(
                argv, env=self._env(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )

    def _terminate(self, m: EtcdMember, *, kill: bool) -> None:
        proc = m.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        m.process = None

    def _wait_serving_peers(self, m: EtcdMember, timeout: float = 2.0) -> None:
        """Wait (at most ``timeout``) until ``m`` serves its peer port, read from its log.

        NB: a new member first asks every peer whether it was already bootstrapped;
        a peer that has opened its port but does not serve yet (it is asking too)
        holds that question for a full second. Members started together therefore
        often stall 2 s; started one after the other, they do not. The log is read
        rather than the port probed so this works for members inside namespaces.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and m.is_running():
            try:
                if "serving peer traffic" in m.log_file.read_text(errors="replace"):
                    return
            except OSError:
                pass
            time.sleep(0.01)

    def _is_healthy(self, m: EtcdMember) -> bool:
        if self.popen is not None:
            argv = [ETCDCTL_BIN, f"--endpoints={m.client_url}", "--command-timeout=1s", *self._ctl_tls(),
                    "endpoint", "health"]
            probe = self.popen(m.node, argv, env=self._env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                return probe.wait(timeout=3) == 0
            except subprocess.TimeoutExpired:
                probe.kill()
                probe.wait()
                return False
        verify: ssl.SSLContext | bool = True
        if self.tls is not None:
            ctx = ssl.create_default_context(cafile=self.tls.ca_file)
            ctx.load_cert_chain(self.tls.client_cert_file, self.tls.client_key_file)
            verify = ctx
        try:
            # NB: /health blocks until a leader is known; a short timeout keeps probing brisk.
            resp = httpx.get(f"{m.client_url}/health", timeout=0.3, verify=verify, trust_env=False)
        except httpx.HTTPError:
            return False
        return resp.status_code == 200 and '"true"' in resp.text

    def _wait_healthy(self, m: EtcdMember, deadline: float) -> None:
        while True:
            if not m.is_running():
                raise RuntimeError(f"etcd member {m.name} ({m.endpoint}) exited:\n{self._log_tail(m)}")
            if self._is_healthy(m):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"etcd member {m.name} ({m.endpoint}) not healthy in time:\n{self._log_tail(m)}")
            time.sleep(0.05)

    @staticmethod
    def _log_tail(m: EtcdMember, lines: int = 20) -> str:
        try:
            return "\n".join(m.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def make_test_pki(directory: str | os.PathLike[str], hosts: Sequence[str] = ("127.0.0.1",), *,
                  client_subject: str = "/CN=kagemusha-client") -> EtcdTLS:
    """Create a throwaway CA, a server certificate for ``hosts`` and a client certificate.

    NB: with etcd auth enabled, etcd's JSON gateway (which ``EtcdStore`` speaks) refuses a client
    certificate that carries a CommonName ("CommonName of client sending a request against gateway
    will be ignored"); for TLS plus auth pass a subject without CN, e.g. ``client_subject="/O=kagemusha"``.

    Uses the ``openssl`` command. Files are written to ``directory``.

    Raises:
        RuntimeError: openssl is missing or failed.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed")

    def run(*args: str) -> None:
        proc = subprocess.run([openssl, *args], capture_output=True, text=True, cwd=d, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {proc.stderr.strip()}")

    san = ",".join(f"IP:{h}" for h in hosts) + ",DNS:localhost"
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=kagemusha-test-ca",
        "-keyout", "ca-key.pem", "-out", "ca.pem")
    for name, ext in (("server", f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth"),
                      ("client", "extendedKeyUsage=clientAuth")):
        (d / f"{name}.ext").write_text(ext + "\n")
        subject = client_subject if name == "client" else "/CN=kagemusha-server"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subject,
            "-keyout", f"{name}-key.pem", "-out", f"{name}.csr")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
            "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return EtcdTLS(
        ca_file=str(d / "ca.pem"),
        server_cert_file=str(d / "server.pem"),
        server_key_file=str(d / "server-key.pem"),
        client_cert_file=str(d / "client.pem"),
        client_key_file=str(d / "client-key.pem"),
    )

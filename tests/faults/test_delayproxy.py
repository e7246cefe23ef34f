"""The slow-store fault's delaying proxy (kagemusha.testing._delayproxy) in namespaces of the test (root).

n1 runs the proxy and the nftables redirect of its connections to two servers on n2; the servers say
which of them answered and whom they saw. Checked: forwarding to each connection's original
destination (SO_ORIGINAL_DST), pass-through at delay 0 (nothing held), every chunk held for the
delay each way, half-close carried, an exempt process never delayed, and the nft script.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kagemusha.testing import netns
from kagemusha.testing._delayproxy import nft_rules, spawn

pytestmark = pytest.mark.root

# Two servers on n2: each answers every chunk with "<name> <peer address>|<chunk>", and its EOF with its own.
SERVERS = r'''
import socket, sys, threading
def serve(name, s):
    while True:
        c, peer = s.accept()
        def one(c=c, peer=peer):
            while data := c.recv(65536):
                c.sendall(f"{name} {peer[0]}|".encode() + data)
            c.shutdown(socket.SHUT_WR)
            c.close()
        threading.Thread(target=one, daemon=True).start()
ports = []
for name in ("A", "B"):
    s = socket.socket()
    s.bind((sys.argv[1], 0))
    s.listen()
    ports.append(s.getsockname()[1])
    threading.Thread(target=serve, args=(name, s), daemon=True).start()
print(" ".join(map(str, ports)), flush=True)
threading.Event().wait()
'''

# In n1: connect to (host, port), optionally rename this process (comm) first; send b"x", time the answer,
# then half-close and read to EOF. Prints JSON.
CLIENT = r'''
import json, socket, sys, time
host, port, comm = sys.argv[1], int(sys.argv[2]), sys.argv[3]
if comm:
    open("/proc/self/comm", "w").write(comm)
s = socket.create_connection((host, port), timeout=30)
t0 = time.monotonic()
s.sendall(b"x")
answer = s.recv(1000)
rtt = time.monotonic() - t0
s.shutdown(socket.SHUT_WR)
rest = b""
while data := s.recv(1000):
    rest += data
print(json.dumps({"answer": answer.decode(), "rtt": rtt, "rest": rest.decode()}))
'''


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[dict[str, Any]]:
    netns.require()
    with netns.Harness(["n1", "n2"], disks=0) as h:
        n2 = str(h.address("n2").ip)
        srv = h.popen("n2", [sys.executable, "-c", SERVERS, n2], stdout=subprocess.PIPE, text=True)
        assert srv.stdout is not None
        pa, pb = map(int, srv.stdout.readline().split())
        control = tmp_path / "delay"
        stats = tmp_path / "stats.json"
        err = tmp_path / "proxy.err"
        with open(err, "wb") as f:
            proxy, port = spawn(functools.partial(h.popen, "n1"), control=control, stats=stats, exempt=["kgexempt"],
                                stderr=f)
        h.run("n1", ["nft", "-f", "-"], input=nft_rules([(n2, pa), (n2, pb)], port))
        try:
            yield {"h": h, "n2": n2, "ports": (pa, pb), "control": control, "stats": stats, "proxy": proxy,
                   "err": err}
        finally:
            for p in (proxy, srv):
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()


def _client(s: dict[str, Any], port: int, comm: str = "") -> dict[str, Any]:
    r = s["h"].python("n1", CLIENT, s["n2"], str(port), comm, timeout=60)
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def _stats(s: dict[str, Any], connections: int) -> dict[str, Any]:
    """The proxy's statistics once it has counted ``connections`` (it writes them every 0.1 s)."""
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            st: dict[str, Any] = json.loads(s["stats"].read_text())
        except (OSError, ValueError):
            st = {}
        if st.get("connections", 0) >= connections and st.get("chunks", 0) >= 2 * connections:
            return st
        time.sleep(0.02)
    raise AssertionError(f"proxy statistics did not reach {connections} connections: {st}")


def _set_delay(control: Path, seconds: float) -> None:
    tmp = control.with_name("delay.tmp")
    tmp.write_text(f"{seconds}\n")
    tmp.replace(control)


def test_forwards_to_the_original_destination_and_passes_through_at_zero(setup: dict[str, Any]) -> None:
    pa, pb = setup["ports"]
    a, b = _client(setup, pa), _client(setup, pb)
    n1 = str(setup["h"].address("n1").ip)
    # each reached the server it dialled, seen from n1's own address (not the proxy's loopback)
    assert a["answer"] == f"A {n1}|x" and b["answer"] == f"B {n1}|x", (a, b)
    assert a["rest"] == b["rest"] == ""  # half-close carried both ways: the server saw EOF, the client too
    st = _stats(setup, 2)
    assert (st["connections"], st["delayed_chunks"], st["delay"]) == (2, 0, 0.0), st


def test_every_chunk_is_held_for_the_delay_each_way(setup: dict[str, Any]) -> None:
    pa, _ = setup["ports"]
    _set_delay(setup["control"], 0.4)
    out = _client(setup, pa)
    assert out["answer"].endswith("|x")
    assert out["rtt"] >= 0.8, out  # 0.4 s on the way out, 0.4 s back
    st = _stats(setup, 1)
    assert st["delayed_chunks"] >= 2 and st["max_delay"] == 0.4, st
    _set_delay(setup["control"], 0)  # back to pass-through: new chunks are not held
    before = st["delayed_chunks"]
    _client(setup, pa)
    assert _stats(setup, 2)["delayed_chunks"] == before


def test_exempt_process_is_not_delayed(setup: dict[str, Any]) -> None:
    """A connection of a process named in ``--exempt`` (etcd's gateway dialling its own member) is never held."""
    pa, _ = setup["ports"]
    _set_delay(setup["control"], 5)
    out = _client(setup, pa, comm="kgexempt")
    assert out["answer"].endswith("|x")
    st = _stats(setup, 1)
    assert (st["exempt"], st["delayed_chunks"]) == (1, 0), st


MANY = r'''
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bad = []
for i in range(n):
    s = socket.create_connection((host, port), timeout=30)
    s.sendall(b"%d" % i)
    got = s.recv(1000)
    if not got.endswith(b"|%d" % i):
        bad.append((i, got))
    s.close()  # at once, without reading the server's EOF
print(bad)
'''


def test_many_short_connections_all_carried(setup: dict[str, Any]) -> None:
    """Regression: the loop holds tasks weakly; a connection closed by both ends while a write was
    pending was garbage collected mid-flight ("Task was destroyed but it is pending"), and the
    agent's next request on a new connection hung until its timeout. The proxy now keeps its handlers."""
    pa, _ = setup["ports"]
    r = setup["h"].python("n1", MANY, setup["n2"], str(pa), "300", timeout=120)
    assert r.stdout.strip() == "[]", r.stdout
    _stats(setup, 300)
    assert "destroyed" not in setup["err"].read_text(), setup["err"].read_text()[-2000:]


def test_nft_rules_refuse_bad_input() -> None:
    assert "redirect to :23790" in nft_rules([("198.18.0.11", 2379)], 23790)
    with pytest.raises(ValueError, match="no targets"):
        nft_rules([], 23790)
    with pytest.raises(ValueError, match="bad port"):
        nft_rules([("198.18.0.11", 0)], 23790)
    with pytest.raises(OSError):
        nft_rules([("not-an-address", 2379)], 23790)

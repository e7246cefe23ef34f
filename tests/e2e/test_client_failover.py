"""The seed's chapter 3 end to end: a client looks its service up through the VIP and keeps working across a crash failover.

The client (its own namespace) loops: ``kagemusha.client.lookup("domain1", "corbaname://VIP:2809")``
then ``kagemusha.client.call("GET", url)`` and ``call("PUT", ...)``, each with a 30 s deadline,
while n1 loses power and webotx1 moves to n2. No call may fail: the client library rides the
outage out, and after it the answers come from n2.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from tests.e2e._cluster import NsCluster

pytestmark = [pytest.mark.root, pytest.mark.slow, pytest.mark.timeout(240)]

NAMING_PORT = 2809  # the seed's server.corba-service.namesv.NameServicePort

CLIENT = r"""
import json, os, sys, time
import httpx
from kagemusha.client import call, lookup
http = httpx.Client()  # one client for the loop: its kept-alive connections to n1 go stale at the crash
vip, out, stop = sys.argv[1], sys.argv[2], sys.argv[3]
f = open(out, "a", buffering=1)
i = 0
while not os.path.exists(stop):
    rec = {"t": time.time(), "i": i}
    try:
        url = lookup("domain1", f"corbaname://{vip}:2809", deadline=30.0, client=http)
        rec["url"] = url
        r = call("GET", url, deadline=30.0, timeout=1.0, client=http)
        rec.update(status=r.status_code, body=r.text.strip())
        w = call("PUT", url.rstrip("/") + f"/kv/c{i}", content=f"v{i}", deadline=30.0, timeout=1.0,
                 client=http)
        rec.update(put=w.status_code)
        rec["ok"] = r.status_code == 200 and w.status_code == 200
    except Exception as e:
        rec.update(ok=False, err=f"{type(e).__name__}: {e}")
    rec["done"] = time.time()
    f.write(json.dumps(rec) + "\n")
    i += 1
    time.sleep(0.02)
"""


def test_client_sees_no_error_across_a_crash_failover(make_cluster: Callable[..., NsCluster]) -> None:
    c = make_cluster()
    h = c.h
    mp = c.mount_point(0)
    c.create_domain(h.disk, mp, "domain1", on="n1", others=["n2"])
    c.groups = [c.webotx_group("webotx1", ["n1", "n2"], disk=h.disk, mp=mp, vip=str(h.vip), domain="domain1",
                               scripts="oneway")]  # fmt: skip
    c.write_config()
    for n in c.nodes:
        c.start(n)
    c.wait_group("webotx1", "online", "n1", timeout=40)
    vip = str(h.vip.ip)

    out, stop = c.dir / "lookup-client.jsonl", c.dir / "lookup-client.stop"
    with open(c.dir / "lookup-client.err", "wb") as err:
        proc = h.popen("client", [sys.executable, "-c", CLIENT, vip, str(out), str(stop)], stderr=err)

    def records() -> list[dict[str, object]]:
        try:
            return [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
        except OSError:
            return []

    try:
        deadline = time.monotonic() + 70
        while time.monotonic() < deadline and not records() and proc.poll() is None:
            time.sleep(0.1)
        first = records()
        assert first and first[0]["ok"] and "served by n1" in str(first[0]["body"]), (
            first[:3], (c.dir / "lookup-client.err").read_text()[-3000:])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(records()) < 5:
            time.sleep(0.1)
        t_crash = c.crash("n1")
        c.wait_group("webotx1", "online", "n2", timeout=40)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and not any(
            r["ok"] and "served by n2" in str(r.get("body")) and float(r["t"]) > t_crash for r in records()  # type: ignore[arg-type]
        ):
            time.sleep(0.1)
        n = len(records())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(records()) < n + 5:
            time.sleep(0.1)
    finally:
        stop.touch()
        with contextlib.suppress(subprocess.TimeoutExpired):  # the harness kills what is left in its namespaces
            proc.wait(40)
    recs = records()
    failed = [r for r in recs if not r["ok"]]
    assert not failed, failed[:3]
    assert any("served by n1" in str(r["body"]) for r in recs)
    after = [r for r in recs if float(r["t"]) > t_crash]  # type: ignore[arg-type]
    assert after and "served by n2" in str(after[-1]["body"]), after[-3:]
    assert all(str(r["url"]).startswith(f"http://{vip}:") for r in recs), recs[:2]
    longest = max(float(r["done"]) - float(r["t"]) for r in recs)  # type: ignore[arg-type]
    print(f"client across the failover: {len(recs)} lookups+calls, none failed; longest {longest:.2f} s")

"""Hardening of the domain side (issue 11): what bad logins can cost, and files holding hashes are 0600."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path

import httpx
import psutil
import pytest

from kagemusha.domains._auth import Authenticator, AuthOutcome, hash_password

from .conftest import Node

pytestmark = pytest.mark.timeout(240)  # includes waiting for PORTS_LOCK and CLI runs on a loaded machine

ADMIN = "http://127.0.0.1:16212"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _basic(user: str, password: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_failed_logins_are_rate_limited_per_client() -> None:
    clock = FakeClock()
    h = hash_password("right")
    auth = Authenticator("admin", lambda: h, max_failures=3, window=60.0, clock=clock)
    assert auth.check(_basic("admin", "right"), "10.0.0.1").ok
    for _ in range(3):
        assert auth.check(_basic("admin", "wrong"), "10.0.0.9").outcome is AuthOutcome.UNAUTHORIZED
    runs = auth.verifications
    limited = auth.check(_basic("admin", "wrong"), "10.0.0.9")
    assert limited.outcome is AuthOutcome.RATE_LIMITED and limited.status == 429
    assert limited.headers()["Retry-After"] == "60"
    assert auth.verifications == runs  # a limited client costs no argon2 run
    # another client is not affected, and a password known good still passes from the limited one
    assert auth.check(_basic("admin", "wrong"), "10.0.0.2").outcome is AuthOutcome.UNAUTHORIZED
    assert auth.check(_basic("admin", "right"), "10.0.0.9").ok
    assert auth.verifications == runs + 1  # the known password: no argon2 either
    # the right password never seen before is limited too (it would cost an argon2 run)
    h2 = hash_password("other")
    auth2 = Authenticator("admin", lambda: h2, max_failures=1, window=60.0, clock=clock)
    auth2.check(_basic("admin", "x"), "c")
    assert auth2.check(_basic("admin", "other"), "c").outcome is AuthOutcome.RATE_LIMITED
    clock.now += 60.0
    assert auth2.check(_basic("admin", "other"), "c").ok  # the window passed
    # no credentials at all: 401, and it counts as nothing
    assert auth2.check(None, "d").outcome is AuthOutcome.UNAUTHORIZED
    assert auth2.check("Bearer x", "d").outcome is AuthOutcome.UNAUTHORIZED


def test_verifications_are_bounded() -> None:
    h = hash_password("right")
    auth = Authenticator("admin", lambda: h, concurrent=1, busy_wait=0.05)
    assert auth._slots.acquire()  # one verification in progress
    try:
        busy = auth.check(_basic("admin", "wrong"), "c")
        assert busy.outcome is AuthOutcome.BUSY and busy.status == 503 and "Retry-After" in busy.headers()
    finally:
        auth._slots.release()
    assert auth.check(_basic("admin", "wrong"), "c").outcome is AuthOutcome.UNAUTHORIZED


def _master(root: Path) -> psutil.Process:
    pid = json.loads((root / "domain1" / "state" / "state.json").read_text())["pid"]
    return psutil.Process(pid)


def test_200_concurrent_bad_logins_keep_the_domain_bounded(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.create("domain1", root)
    node.run("start", "domain1", check=True)
    # the monitor's login, before the flood
    assert httpx.get(f"{ADMIN}/status", auth=("admin", "adminadmin")).status_code == 200
    master = _master(root)
    baseline = master.memory_info().rss
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                peak = max(peak, master.memory_info().rss)
            except psutil.Error:
                return
            done.wait(0.005)

    async def flood() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            rs = await asyncio.gather(
                *(client.get(f"{ADMIN}/status", auth=("admin", f"bad{i}")) for i in range(200))
            )
        return [r.status_code for r in rs]

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        codes = asyncio.run(flood())
    finally:
        done.set()
        sampler.join()
    assert set(codes) <= {401, 429, 503}, set(codes)
    assert codes.count(429) >= 150, {c: codes.count(c) for c in set(codes)}
    grown = (peak - baseline) / 2**20
    # at most two argon2 verifications (64 MiB each) at once; unbounded it would be one per thread
    assert grown < 200, f"master RSS grew by {grown:.0f} MiB under 200 concurrent bad logins"
    # the legitimate client still gets in at once, and the domain serves
    assert httpx.get(f"{ADMIN}/status", auth=("admin", "adminadmin")).status_code == 200
    assert httpx.get("http://127.0.0.1:10080/").status_code == 200
    node.run("stop", "domain1", check=True)


def test_files_holding_hashes_are_0600(node: Node, workdir: Path) -> None:
    root = workdir / "data1" / "domains"
    node.registry.mkdir(parents=True)
    old_hash = hash_password("adminadmin")
    registry = node.registry / "registry.json"
    registry.write_text(json.dumps({"admin": {"user": "admin", "password_hash": old_hash}}))
    registry.chmod(0o644)  # as an older kagemusha wrote it: the hash world-readable
    node.create("domain1", root, admin_port=16202)
    # the hash moved to a 0600 file of its own; the registry (where domains live) stays readable
    # by a domain's service user, and holds no hash any more
    assert "$argon2" not in registry.read_text()
    assert (node.registry / "admin.argon2").read_text().strip() == old_hash
    assert (node.registry / "admin.argon2").stat().st_mode & 0o777 == 0o600
    assert (root / "domain1" / "config" / "admin.argon2").stat().st_mode & 0o777 == 0o600
    node.run("set", "domain1", "domain.admin.password=changed-pw", check=True)
    assert (root / "domain1" / "config" / "admin.argon2").stat().st_mode & 0o777 == 0o600
    # nothing else of the domain or the registry holds a hash or the password
    for base in (root, node.registry):
        for f in base.rglob("*"):
            if f.is_file() and f.name != "admin.argon2":
                data = f.read_bytes()
                assert b"$argon2" not in data and b"adminadmin" not in data and b"changed-pw" not in data, f

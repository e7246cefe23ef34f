"""The etcd store against real etcd members: conformance, restarts, leases, races, outages, TLS, auth."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from kagemusha.errors import ConfigError, LeaseExpired, StoreUnavailable
from kagemusha.store import WatchEvent, WatchEventType, open_store
from kagemusha.store.etcd import EtcdStore
from kagemusha.testing import check_store
from kagemusha.testing.etcd import EtcdCluster, make_test_pki, require_etcd


def _prefix() -> str:
    return f"/kgtest/{uuid.uuid4().hex[:8]}/"


@pytest.fixture
def dead_endpoint() -> Iterator[str]:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    yield f"127.0.0.1:{port}"


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    """A loopback port that accepts connections (kernel backlog) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


async def _collect(it: Any, out: list[WatchEvent]) -> None:
    async for ev in it:
        out.append(ev)


async def _wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


# -- conformance -------------------------------------------------------------


def test_check_store_etcd(etcd: EtcdCluster) -> None:
    asyncio.run(check_store(lambda: open_store(etcd.endpoints, timeout=1.0)))


def test_etcd_store_spans_hosts_and_is_linearizable() -> None:
    assert EtcdStore.capabilities.spans_hosts and EtcdStore.capabilities.linearizable


def test_empty_prefix_means_every_key(etcd: EtcdCluster) -> None:
    p = _prefix()

    async def run() -> None:
        async with open_store(etcd.endpoints) as s:
            rev = await s.put(p + "k", "v")
            items, _ = await s.get_prefix("")
            assert p + "k" in [kv.key for kv in items]
            ev = await asyncio.wait_for(s.watch("", start_revision=rev).__anext__(), 5)
            assert (ev.key, ev.revision) == (p + "k", rev)

    asyncio.run(run())


# -- leases ----------------------------------------------------------------------


def test_lease_ttl_is_rounded_up_to_whole_seconds(etcd: EtcdCluster) -> None:
    async def run() -> None:
        async with open_store(etcd.endpoints) as s:
            lease = await s.grant_lease(1.2)
            assert lease.ttl == 2.0
            assert await s.keepalive(lease.id) == 2.0
            await s.revoke(lease.id)

    asyncio.run(run())


def test_lease_expiry_deletes_its_keys_and_the_lease_is_refused_after(etcd: EtcdCluster) -> None:
    p = _prefix()

    async def run() -> None:
        async with open_store(etcd.endpoints) as a, open_store(etcd.endpoints) as b:
            lease = await a.grant_lease(1)
            await a.put(p + "k1", "x", lease=lease.id)
            assert await a.cas(p + "k2", "y", expected_revision=0, lease=lease.id)
            _, rev = await b.get_prefix(p)
            events: list[WatchEvent] = []
            task = asyncio.create_task(_collect(b.watch(p, start_revision=rev + 1), events))
            t0 = time.monotonic()
            try:
                await _wait_for(lambda: len(events) >= 2, 5, "two lease-expiry deletes")
            finally:
                task.cancel()
            took = time.monotonic() - t0
            assert {(e.type, e.key) for e in events} == {(WatchEventType.DELETE, p + "k1"), (WatchEventType.DELETE, p + "k2")}
            assert events[0].revision == events[1].revision, "one expiry deletes its keys in one revision"
            assert 0.5 < took < 3.0, f"a 1 s lease expired after {took:.2f} s"
            assert await b.get(p + "k1") is None
            with pytest.raises(LeaseExpired):
                await a.keepalive(lease.id)
            with pytest.raises(LeaseExpired):
                await a.put(p + "k3", "z", lease=lease.id)
            with pytest.raises(LeaseExpired):
                await a.cas(p + "k4", "z", expected_revision=0, lease=lease.id)

    asyncio.run(run())


def test_cas_lost_with_dead_lease_is_false(etcd: EtcdCluster) -> None:
    # etcd checks the lease only on the branch the txn takes; losing the race wins over the dead lease.
    p = _prefix()

    async def run() -> None:
        async with open_store(etcd.endpoints) as s:
            await s.put(p + "owner", "n2")
            lease = await s.grant_lease(5)
            await s.revoke(lease.id)
            await s.revoke(lease.id)  # twice is fine
            assert await s.cas(p + "owner", "n1", expected_revision=0, lease=lease.id) is False

    asyncio.run(run())


# -- races -------------------------------------------------------------------------


def test_cas_races_between_clients_have_exactly_one_winner(etcd: EtcdCluster) -> None:
    p = _prefix()
    clients, rounds = 4, 40

    async def run() -> None:
        stores = [open_store(etcd.endpoints) for _ in range(clients)]
        try:
            key, expected = p + "owner", 0
            for r in range(rounds):
                results = await asyncio.gather(
                    *(s.cas(key, f"c{i}-r{r}", expected_revision=expected) for i, s in enumerate(stores))
                )
                winners = [i for i, won in enumerate(results) if won]
                assert len(winners) == 1, f"round {r}: winners {winners}"
                kv = await stores[r % clients].get(key)
                assert kv is not None and kv.value == f"c{winners[0]}-r{r}"
                assert kv.mod_revision > expected
                expected = kv.mod_revision
            # Deletes race the same way.
            results = await asyncio.gather(*(s.delete(key, expected_revision=expected) for s in stores))
            assert sum(results) == 1
        finally:
            for s in stores:
                await s.close()

    asyncio.run(run())


# -- restarts, outages, several endpoints -------------------------------------------


def test_watch_resumes_after_etcd_restart() -> None:
    require_etcd()
    p = _prefix()
    with EtcdCluster(1) as cluster:

        async def run() -> None:
            async with open_store(cluster.endpoints, timeout=0.5) as w, open_store(cluster.endpoints) as s:
                _, rev = await s.get_prefix(p)
                events: list[WatchEvent] = []
                task = asyncio.create_task(_collect(w.watch(p, start_revision=rev + 1), events))
                try:
                    for i in range(5):
                        await s.put(p + f"k{i}", str(i))
                    await _wait_for(lambda: len(events) == 5, 5, "events before the restart")
                    await asyncio.to_thread(cluster.stop_member, 0, kill=True)
                    t0 = time.monotonic()
                    with pytest.raises(StoreUnavailable, match=cluster.members[0].endpoint):
                        await s.get(p + "k0")
                    assert time.monotonic() - t0 < 1.0 + 0.3
                    await asyncio.sleep(0.5)  # the watch retries meanwhile
                    await asyncio.to_thread(cluster.start_member, 0)
                    for i in range(5, 10):
                        await s.put(p + f"k{i}", str(i))
                    await s.delete(p + "k0")
                    await _wait_for(lambda: len(events) == 11, 10, "events after the restart")
                    await asyncio.sleep(0.2)
                finally:
                    task.cancel()
                assert [e.value for e in events[:10]] == [str(i) for i in range(10)], "no event lost or repeated"
                assert (events[10].type, events[10].key) == (WatchEventType.DELETE, p + "k0")
                revs = [e.revision for e in events]
                assert revs == sorted(set(revs)), "revisions strictly increase"

        asyncio.run(run())


def test_idle_watch_reconnects_quietly_and_misses_nothing(etcd: EtcdCluster) -> None:
    # etcd sends nothing on a quiet prefix; the store drops and resumes such a connection
    # after watch_idle_timeout (that is also how a half-open one is noticed).
    p = _prefix()

    async def run() -> None:
        async with EtcdStore([etcd.members[0].endpoint], watch_idle_timeout=0.2) as w, open_store(etcd.endpoints) as s:
            _, rev = await s.get_prefix(p)
            events: list[WatchEvent] = []
            task = asyncio.create_task(_collect(w.watch(p, start_revision=rev + 1), events))
            try:
                await s.put(p + "a", "1")
                await asyncio.sleep(1.0)  # several idle reconnects
                await s.put(p + "a", "2")
                await _wait_for(lambda: len(events) == 2, 5, "events across idle reconnects")
                await asyncio.sleep(0.3)
            finally:
                task.cancel()
            assert [e.value for e in events] == ["1", "2"]

    asyncio.run(run())


def test_watch_gives_up_after_watch_resume_timeout(dead_endpoint: str) -> None:
    async def run() -> None:
        async with EtcdStore([dead_endpoint], timeout=0.2, watch_resume_timeout=0.5) as s:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match="could not be resumed"):
                await asyncio.wait_for(s.watch("/kgtest/", start_revision=1).__anext__(), 5)
            assert 0.5 <= time.monotonic() - t0 < 0.5 + 1.0

    asyncio.run(run())


def test_watch_from_a_compacted_revision_is_store_unavailable(etcd: EtcdCluster) -> None:
    p = _prefix()

    async def run() -> None:
        async with open_store(etcd.endpoints) as s:
            old = await s.put(p + "x", "1")
            last = await s.put(p + "x", "2")
            etcd.etcdctl("compact", str(last))
            it = s.watch(p, start_revision=old)
            with pytest.raises(StoreUnavailable, match="compacted"):
                await asyncio.wait_for(it.__anext__(), 5)

    asyncio.run(run())


def test_store_unavailable_when_etcd_is_down_within_the_timeout(dead_endpoint: str) -> None:
    async def run() -> None:
        async with open_store(f"etcd://{dead_endpoint}", timeout=0.5) as s:
            ops: list[Any] = [
                lambda: s.get("k"),
                lambda: s.get_prefix("k"),
                lambda: s.put("k", "v"),
                lambda: s.cas("k", "v", expected_revision=0),
                lambda: s.delete("k"),
                lambda: s.grant_lease(1),
                lambda: s.keepalive(1),
                lambda: s.revoke(1),
            ]
            for op in ops:
                t0 = time.monotonic()
                with pytest.raises(StoreUnavailable, match=dead_endpoint):
                    await op()
                assert time.monotonic() - t0 < 0.5 + 0.2

    asyncio.run(run())


def test_a_member_that_never_answers_costs_at_most_the_timeout(etcd: EtcdCluster, hung_endpoint: str) -> None:
    member = etcd.members[0].endpoint
    url = f"etcd://{hung_endpoint},{member}"

    async def run() -> None:
        async with open_store(url, timeout=0.6) as s:
            # A read moves on to the next member within the same call.
            t0 = time.monotonic()
            assert await s.get("/kgtest/none") is None
            assert time.monotonic() - t0 < 0.6 + 0.2
        async with open_store(url, timeout=0.6) as s:
            # A write may have been applied, so it is not repeated elsewhere: it fails in time ...
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match=hung_endpoint):
                await s.put("/kgtest/hung", "v")
            assert time.monotonic() - t0 < 0.6 + 0.2
            # ... and the next call starts at the next member.
            assert await s.put("/kgtest/hung", "v") > 0

    asyncio.run(run())


def test_watch_does_not_wait_on_a_member_that_never_answers(etcd: EtcdCluster, hung_endpoint: str) -> None:
    p = _prefix()

    async def run() -> None:
        url = f"etcd://{hung_endpoint},{etcd.members[0].endpoint}"
        async with open_store(url, timeout=0.5) as w, open_store(etcd.endpoints) as s:
            rev = await s.put(p + "a", "1")
            t0 = time.monotonic()
            ev = await asyncio.wait_for(w.watch(p, start_revision=rev).__anext__(), 5)
            assert ev.value == "1"
            assert time.monotonic() - t0 < 0.5 + 0.5, "the hung member costs one request timeout"

    asyncio.run(run())


def test_refused_endpoint_is_skipped(etcd: EtcdCluster, dead_endpoint: str) -> None:
    async def run() -> None:
        async with open_store(f"etcd://{dead_endpoint},{etcd.members[0].endpoint}", timeout=0.5) as s:
            assert await s.cas(_prefix() + "k", "v", expected_revision=0) is True

    asyncio.run(run())


def test_three_members_one_stopped_keeps_store_and_watch_working() -> None:
    require_etcd()
    p = _prefix()
    with EtcdCluster(3) as cluster:

        async def run() -> None:
            async with open_store(cluster.endpoints, timeout=1.0) as s:
                _, rev = await s.get_prefix(p)
                events: list[WatchEvent] = []
                task = asyncio.create_task(_collect(s.watch(p, start_revision=rev + 1), events))
                try:
                    await s.put(p + "a", "1")
                    await _wait_for(lambda: len(events) == 1, 5, "first event")
                    assert cluster.leader() in (0, 1, 2)
                    # Member 0 is where the client (and its watch) are connected.
                    await asyncio.to_thread(cluster.stop_member, 0)
                    failures = 0
                    for i in range(2, 6):
                        for _ in range(3):
                            try:
                                await s.put(p + "a", str(i))
                                break
                            except StoreUnavailable:
                                failures += 1
                    assert failures <= 1, "at most the call in flight fails, then the next member answers"
                    await _wait_for(lambda: len(events) == 5, 10, "events through another member")
                    lease = await s.grant_lease(1)
                    assert await s.keepalive(lease.id) == 1.0
                    await asyncio.to_thread(cluster.start_member, 0)
                finally:
                    task.cancel()
                assert [e.value for e in events] == ["1", "2", "3", "4", "5"]

        asyncio.run(run())


def test_watch_on_a_member_that_loses_quorum_moves_on_and_loses_nothing() -> None:
    # A partitioned member must not hold a watch open while the majority moves on: the
    # store asks for "hasleader", so etcd ends the watch and the store resumes elsewhere.
    require_etcd()
    p = _prefix()
    with EtcdCluster(3) as cluster:

        async def run() -> None:
            async with open_store(cluster.url(0, 1, 2)) as w, open_store(cluster.url(1, 2, 0)) as s:
                _, rev = await s.get_prefix(p)
                events: list[WatchEvent] = []
                task = asyncio.create_task(_collect(w.watch(p, start_revision=rev + 1), events))
                try:
                    await s.put(p + "a", "1")
                    await _wait_for(lambda: len(events) == 1, 5, "first event")
                    await asyncio.to_thread(cluster.stop_member, 1)
                    await asyncio.to_thread(cluster.stop_member, 2)  # member 0 alone: no quorum
                    await asyncio.sleep(1.0)
                    await asyncio.to_thread(cluster.start_member, 1, wait=False)
                    await asyncio.to_thread(cluster.wait_healthy, 1)
                    for i in (2, 3):
                        await s.put(p + "a", str(i))
                    await _wait_for(lambda: len(events) == 3, 10, "events after quorum is back")
                finally:
                    task.cancel()
                assert [e.value for e in events] == ["1", "2", "3"]

        asyncio.run(run())


# -- TLS and auth ------------------------------------------------------------------------


def test_tls_with_client_certificate(tmp_path: Path) -> None:
    require_etcd()
    pki = make_test_pki(tmp_path / "pki")
    with EtcdCluster(1, tls=pki) as cluster:
        url = cluster.endpoints

        async def run() -> None:
            tls: dict[str, Any] = {"ca_file": pki.ca_file, "cert_file": pki.client_cert_file, "key_file": pki.client_key_file}
            async with open_store(url, **tls) as s:
                p = _prefix()
                assert await s.cas(p + "k", "v", expected_revision=0) is True
                kv = await s.get(p + "k")
                assert kv is not None and kv.value == "v"
                it = s.watch(p, start_revision=kv.mod_revision)
                ev = await asyncio.wait_for(it.__anext__(), 5)
                assert ev.key == p + "k"
                await it.aclose()  # type: ignore[attr-defined]
            async with open_store(url, ca_file=pki.ca_file) as s:
                with pytest.raises(StoreUnavailable):  # no client certificate
                    await s.get("k")
            async with open_store(url) as s:
                with pytest.raises(StoreUnavailable):  # plain http to a TLS port
                    await s.get("k")

        asyncio.run(run())


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"ca_file": "{tmp}/missing.pem"}, "cluster.store_ca_file"),
        ({"ca_file": "{tmp}/garbage.pem"}, "cluster.store_ca_file"),
        ({"cert_file": "{tmp}/garbage.pem"}, "cluster.store_key_file"),
        ({"key_file": "{tmp}/garbage.pem"}, "cluster.store_cert_file"),
        ({"cert_file": "{tmp}/garbage.pem", "key_file": "{tmp}/missing.pem"}, "cluster.store_key_file"),
        ({"cert_file": "{tmp}/garbage.pem", "key_file": "{tmp}/garbage.pem"}, "cluster.store_cert_file"),
        ({"user": "root"}, "cluster.store_password"),
        ({"password": "s3cret-pw"}, "cluster.store_user"),
        ({"bogus": "1"}, "cluster.store_bogus"),
    ],
)
def test_bad_tls_and_auth_options_are_config_errors_naming_the_key(
    tmp_path: Path, options: dict[str, str], key: str
) -> None:
    (tmp_path / "garbage.pem").write_text("not a certificate\n")
    opts: dict[str, Any] = {k: v.format(tmp=tmp_path) for k, v in options.items()}
    with pytest.raises(ConfigError, match=key) as info:
        open_store("etcd://127.0.0.1:2379", **opts)
    assert "s3cret-pw" not in str(info.value)


def test_user_and_password(tmp_path: Path) -> None:
    require_etcd()
    with EtcdCluster(1, extra_args=["--auth-token-ttl=1"]) as cluster:
        cluster.etcdctl("user", "add", "root", "--new-user-password=r00t-pw")
        cluster.etcdctl("auth", "enable")

        async def run() -> None:
            p = _prefix()
            async with open_store(cluster.endpoints, user="root", password="r00t-pw") as s:
                await s.put(p + "k", "v")
                events: list[WatchEvent] = []
                task = asyncio.create_task(_collect(s.watch(p), events))
                await asyncio.sleep(2.5)  # the simple token expires after 1 s idle
                try:
                    await s.put(p + "k", "w")  # re-authenticates once
                    await _wait_for(lambda: len(events) == 1, 5, "watch event with auth")
                finally:
                    task.cancel()
                kv = await s.get(p + "k")
                assert kv is not None and kv.value == "w"
            async with open_store(cluster.endpoints, user="root", password="wrong-pw") as s:
                with pytest.raises(StoreUnavailable) as info:
                    await s.get(p + "k")
                assert "wrong-pw" not in str(info.value) and "root" in str(info.value)
            async with open_store(cluster.endpoints) as s:
                with pytest.raises(StoreUnavailable):
                    await s.get(p + "k")

        asyncio.run(run())



# -- the fixture itself ----------------------------------------------------------------


def test_cluster_runs_members_through_a_popen_hook_and_stops_only_its_pids(tmp_path: Path) -> None:
    # The netns harness passes its popen (run argv inside a node's namespace) the same way.
    require_etcd()
    calls: list[tuple[Any, str]] = []

    def popen(node: Any, argv: Sequence[str], *, env: Mapping[str, str], **kwargs: Any) -> subprocess.Popen[Any]:
        calls.append((node, Path(argv[0]).name))
        return subprocess.Popen(list(argv), env=dict(env), **kwargs)

    bystander = subprocess.Popen(["sleep", "30"])
    try:
        cluster = EtcdCluster(1, nodes=["n1"], popen=popen, base_dir=tmp_path / "etcd")
        with cluster:
            (pid,) = cluster.pids
            assert ("n1", "etcd") in calls and ("n1", "etcdctl") in calls, "health is probed through the hook"
            assert cluster.endpoints.startswith("etcd://127.0.0.1:")
        assert cluster.pids == []
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert bystander.poll() is None, "teardown touches only the members it started"
        assert (tmp_path / "etcd" / "m0.log").exists(), "a given base_dir is kept"
    finally:
        bystander.kill()
        bystander.wait()


_PARTITION_PROBE = """
import asyncio, json, sys, time
from kagemusha.errors import StoreUnavailable
from kagemusha.store import open_store

async def main(url, prefix, start):
    out = {}
    async with open_store(url, timeout=1.0) as s:
        for name, op in (("get", lambda: s.get(prefix + "k")), ("put", lambda: s.put(prefix + "k", "2"))):
            t0 = time.monotonic()
            try:
                await op()
                out[name] = "ok"
            except StoreUnavailable as exc:
                out[name] = "unavailable: " + str(exc)
            out[name + "_s"] = time.monotonic() - t0
        if start:
            it = s.watch(prefix, start_revision=int(start))
            out["watched"] = [(await asyncio.wait_for(it.__anext__(), 5)).value for _ in range(2)]
            await it.aclose()
    print(json.dumps(out))

asyncio.run(main(*sys.argv[1:4]))
"""


@pytest.mark.root
def test_members_in_node_namespaces_and_a_partitioned_member(tmp_path: Path) -> None:
    # The partition tests' setup: one member per node namespace, started through the
    # netns harness. Cut n1's link: clients on the majority side carry on (even with
    # n1 listed first); on n1 every call fails within the timeout, which is what lets
    # an agent there fence itself before its lease runs out.
    require_etcd()
    from kagemusha.testing import netns

    netns.require()
    nodes = ["n1", "n2", "n3"]
    p = _prefix()

    def probe(h: Any, where: str, url: str, start: str = "") -> dict[str, Any]:
        res = h.python(where, _PARTITION_PROBE, url, p, start, timeout=30)
        out: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        return out

    with netns.Harness(nodes, disks=0) as h:
        hosts = [str(h.address(n).ip) for n in nodes]
        with EtcdCluster(3, hosts=hosts, nodes=nodes, popen=h.popen, base_dir=tmp_path / "etcd") as cluster:
            assert cluster.endpoints == "etcd://" + ",".join(f"{ip}:2379" for ip in hosts)
            before = probe(h, "client", cluster.endpoints)
            assert before["put"] == "ok", before
            assert cluster.leader() in (0, 1, 2)
            h.link_down("n1")
            try:
                time.sleep(1.0)  # n1's member notices it lost the leader (election timeout 0.5 s)
                assert cluster.leader() in (1, 2), "the majority side leads; n1 sees no leader"
                majority = probe(h, "client", cluster.url(0, 1, 2), start="1")
                assert majority["get"] == "ok" and majority["put"] == "ok", majority
                assert majority["get_s"] < 1.2 and majority["put_s"] < 1.2, majority
                assert majority["watched"][-1] == "2", majority
                cut_off = probe(h, "n1", cluster.endpoints)
                for op in ("get", "put"):
                    assert cut_off[op].startswith("unavailable"), cut_off
                    assert cut_off[op + "_s"] < 1.0 + 0.3, cut_off
            finally:
                h.link_up("n1")
            cluster.wait_healthy(0)
            assert probe(h, "n1", cluster.url(0))["put"] == "ok"


async def _slow_forwarder(target: str, delay: float) -> tuple[asyncio.AbstractServer, str]:
    """A loopback TCP forwarder to ``target`` that holds each chunk from the client for ``delay`` s
    (a uniformly slow store link, as netem would make it)."""
    host, port = target.rsplit(":", 1)

    async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter, hold: float) -> None:
        try:
            while chunk := await r.read(65536):
                if hold:
                    await asyncio.sleep(hold)
                w.write(chunk)
                await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        ur, uw = await asyncio.open_connection(host, int(port))
        await asyncio.gather(pipe(cr, uw, delay), pipe(ur, cw, 0.0))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, f"127.0.0.1:{server.sockets[0].getsockname()[1]}"


def test_every_member_slow_but_within_the_timeout_still_answers(etcd: EtcdCluster) -> None:
    """Regression (found by the fault campaign's slow-store): an idempotent call gave each of three
    members a third of the budget in turn, so a link where every round trip took half the timeout
    failed every lease renewal although each answer came well within ``store_timeout``."""
    member = etcd.members[0].endpoint

    async def run() -> None:
        fwd = [await _slow_forwarder(member, 0.3) for _ in range(3)]
        try:
            url = "etcd://" + ",".join(ep for _, ep in fwd)
            async with open_store(url, timeout=0.8) as s:
                lease = await s.grant_lease(5)
                for _ in range(3):
                    await s.keepalive(lease.id)  # a renewal: idempotent, hedged
                    assert await s.get("/kgtest/slow-none") is None
        finally:
            for server, _ in fwd:
                server.close()

    asyncio.run(run())

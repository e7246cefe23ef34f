"""disk: parameters (no root) and the driver for real on the harness's loop disk (root)."""

from __future__ import annotations

import subprocess
import time

import pytest
from pydantic import ValidationError

from kagemusha.resources import driver_class
from kagemusha.resources.disk import Disk, DiskParams
from kagemusha.testing.netns import Harness
from tests.testing._nsrun import NodeError, ns_call


def test_registered() -> None:
    assert driver_class("disk") is Disk
    assert Disk.is_disk


def test_params() -> None:
    p = DiskParams(device="/dev/sdb1", mount_point="/data1/")
    assert (p.mount_point, p.fstype, p.fsck, p.fsck_every()) == ("/data1", "ext4", "every 10", 10)
    assert DiskParams(device="/dev/x", mount_point="/d", fsck="always").fsck_every() == 1
    assert DiskParams(device="/dev/x", mount_point="/d", fsck="never").fsck_every() is None
    assert DiskParams(device="/dev/x", mount_point="/d", fsck="Every  3").fsck == "every 3"
    for bad in (
        {"device": "sdb1", "mount_point": "/data1"},
        {"device": "/dev/sdb1", "mount_point": "data1"},
        {"device": "/dev/sdb1", "mount_point": "/"},
        {"device": "/dev/sdb1", "mount_point": "/data1", "fsck": "sometimes"},
        {"device": "/dev/sdb1", "mount_point": "/data1", "fsck": "every 0"},
        {"device": "/dev/sdb1", "mount_point": "/data1", "size": 3},
    ):
        with pytest.raises(ValidationError):
            DiskParams.model_validate(bad)


CONFORMANCE = """
from kagemusha.resources.disk import Disk, mount_state
from kagemusha.testing._driver import check_driver

async def main(**params):
    async def really(step, running):
        st = mount_state(params["device"], params["mount_point"])
        assert st.mounted == running and not st.conflict, f"{st}, expected mounted={running}"

    return str(await check_driver(Disk, params, after_step=really))
"""

OP = """
from kagemusha.resources import ResourceContext, StartEnv
from kagemusha.resources.disk import Disk, DiskParams

async def main(op, state_dir, **params):
    d = Disk(DiskParams(**params), ResourceContext("c", "g", "sd1", "n", Path(state_dir)))
    if op == "probe":
        p = await d.probe()
        return [str(p.state), p.reason]
    await getattr(d, op)(StartEnv()) if op != "fence" else await d.fence()
    return None
"""


def params(h: Harness, **kw: str) -> dict[str, str]:
    return {"device": h.disk.device, "mount_point": str(h.tmp / "data1"), **kw}


def op(h: Harness, node: str, what: str, **kw: str) -> object:
    return ns_call(h, node, OP, op=what, state_dir=str(h.tmp / f"state-{node}"), **params(h, **kw))


@pytest.mark.root
def test_conformance(harness: Harness) -> None:
    h = harness
    report = ns_call(h, "n1", CONFORMANCE, **params(h, fsck="always"))
    assert "probe after stop after fence -> stopped" in report
    assert h.disk_holders() == []


@pytest.mark.root
def test_mount_is_private_to_the_node_and_data_survives_a_move(harness: Harness) -> None:
    h = harness
    mp = params(h)["mount_point"]
    op(h, "n1", "start")
    assert h.disk_holders() == ["n1"]
    h.run("n1", ["sh", "-c", f"echo hello > {mp}/f && sync"])
    assert op(h, "n2", "probe")[0] == "stopped"  # n2 does not see n1's mount
    op(h, "n1", "stop")
    op(h, "n2", "start")
    assert h.disk_holders() == ["n2"]
    assert h.run("n2", ["cat", f"{mp}/f"]).stdout == "hello\n"
    op(h, "n2", "stop")


@pytest.mark.root
def test_stop_kills_only_the_holders_of_this_mount(harness: Harness) -> None:
    h = harness
    mp = params(h)["mount_point"]
    h.run("n1", ["mkdir", "-p", mp])
    # In the directory the mount will cover: same path, other file system; not a holder.
    underneath = h.popen("n1", ["sleep", "600"], cwd=mp)
    time.sleep(0.1)
    op(h, "n1", "start")
    h.run("n1", ["mkdir", "-p", f"{mp}/sub"])
    by_cwd = h.popen("n1", ["sleep", "600"], cwd=mp)
    by_fd = h.popen("n1", ["sh", "-c", f"exec 3<{mp}/sub; exec sleep 600"])
    # SIGTERM is ignored: the driver must go on to SIGKILL after kill_grace.
    stubborn = h.popen("n1", ["sh", "-c", f"trap '' TERM; cd {mp}/sub; while :; do sleep 0.05; done"])
    bystander = h.popen("n1", ["sleep", "600"], cwd=str(h.tmp))
    # On n2 the same path is just a directory of the host: a process there holds nothing of ours.
    other_node = h.popen("n2", ["sleep", "600"], cwd=mp)
    time.sleep(0.2)
    t0 = time.monotonic()
    op(h, "n1", "stop", kill_grace="0.5")
    assert time.monotonic() - t0 < 10
    assert h.disk_holders() == []
    for p in (by_cwd, by_fd, stubborn):
        assert p.wait(timeout=5) != 0
    assert stubborn.returncode == -9
    assert bystander.poll() is None and other_node.poll() is None and underneath.poll() is None


@pytest.mark.root
def test_fence_kills_at_once(harness: Harness) -> None:
    h = harness
    mp = params(h)["mount_point"]
    op(h, "n1", "start")
    holder = h.popen("n1", ["sh", "-c", f"trap '' TERM; exec 3>{mp}/log; while :; do sleep 0.05; done"])
    time.sleep(0.2)
    t0 = time.monotonic()
    op(h, "n1", "fence")
    assert time.monotonic() - t0 < 3
    assert holder.wait(timeout=5) == -9
    assert h.disk_holders() == []


FSCK_COUNT = """
from kagemusha.resources import ResourceContext, StartEnv
from kagemusha.resources.disk import Disk, DiskParams

async def main(state_dir, **params):
    ctx = ResourceContext("c", "g", "sd1", "n", Path(state_dir))
    seen = []
    for _ in range(3):
        d = Disk(DiskParams(**params), ctx)
        await d.start(StartEnv())
        seen.append((Path(state_dir) / "sd1.mounts-since-fsck").read_text().strip())
        await d.stop(StartEnv())
    return seen
"""


@pytest.mark.root
def test_fsck_every_n_mounts(harness: Harness) -> None:
    h = harness
    seen = ns_call(h, "n1", FSCK_COUNT, state_dir=str(h.tmp / "state-n1"), **params(h, fsck="every 2"))
    # first start: count unknown -> fsck, mount (1); second: no fsck (2); third: due -> fsck, mount (1)
    assert seen == ["1", "2", "1"]


@pytest.mark.root
def test_device_in_use_elsewhere_fails_start_and_probe_says_failed(harness: Harness) -> None:
    h = harness
    op(h, "n2", "start")
    # fsck refuses a device another node holds (kernel-exclusive here; on real shared storage the owner lease
    # is what keeps two nodes apart).
    with pytest.raises(NodeError) as err:
        op(h, "n1", "start", fsck="always")
    assert err.value.type == "ResourceFailed" and "fsck" in err.value.message
    assert h.disk_holders() == ["n2"]
    # Mounted at another place on this node: not "stopped".
    other = str(h.tmp / "elsewhere")
    h.run("n1", ["mkdir", "-p", other])
    h.run("n1", ["mount", h.disk.device, other])
    state, reason = op(h, "n1", "probe")
    assert state == "failed" and "elsewhere" in reason
    with pytest.raises(NodeError, match="mounted at"):
        op(h, "n1", "start")
    # stop leaves the device mounted nowhere on this node, whatever the path.
    holder = h.popen("n1", ["sleep", "600"], cwd=other)
    op(h, "n1", "stop", kill_grace="0.2")
    assert holder.wait(timeout=5) != 0
    assert h.mounts("n1") == [] and h.disk_holders() == ["n2"]


@pytest.mark.root
def test_unusable_or_missing_device(harness: Harness) -> None:
    h = harness
    h.hide_disk("n1")
    with pytest.raises(NodeError) as err:
        op(h, "n1", "start")
    assert err.value.type == "ResourceFailed" and "not a block device" in err.value.message
    assert op(h, "n1", "probe")[0] == "stopped"
    h.show_disk("n1")
    with pytest.raises(NodeError) as err:
        op(h, "n1", "start", device="/dev/kg-no-such-disk")
    assert err.value.type == "NotInstalled"


@pytest.mark.root
def test_after_a_crash_the_survivor_mounts_it_with_acknowledged_data(harness: Harness) -> None:
    h = harness
    mp = params(h)["mount_point"]
    op(h, "n1", "start")
    writer = h.popen("n1", ["sh", "-c", f"i=0; while :; do echo $i >> {mp}/log; i=$((i+1)); sleep 0.01; done"])
    h.run("n1", ["sh", "-c", f"echo acked > {mp}/acked && sync {mp}/acked"])
    time.sleep(0.2)
    h.crash("n1")
    assert writer.wait(timeout=5) == -9
    assert h.disk_holders() == []
    op(h, "n2", "start", fsck="always")
    assert h.run("n2", ["cat", f"{mp}/acked"]).stdout == "acked\n"
    op(h, "n2", "stop")
    h.revive("n1")
    with pytest.raises(subprocess.CalledProcessError):
        h.run("n1", ["cat", f"{mp}/acked"])  # not mounted on n1 after the crash


@pytest.mark.root
def test_fence_is_not_done_while_the_file_system_lives_in_another_mount_namespace(harness: Harness) -> None:
    """Issue 10: unmounting here proves nothing while a copy of the mount lives on elsewhere (a process in a
    mount namespace of its own, or a lazy unmount): the fence must report it, not succeed. Fails on the
    driver before the fix, whose fence fell back to a lazy unmount and reported success."""
    h = harness
    mp = params(h)["mount_point"]
    op(h, "n1", "start")
    # A process that took a private copy of n1's mounts (unshare -m): it keeps the file system alive.
    copy = h.popen("n1", ["unshare", "-m", "--propagation", "private", "sh", "-c", f"exec 3>{mp}/held; exec sleep 600"])
    deadline = time.monotonic() + 5
    while h.run("n1", ["sh", "-c", f"test -e {mp}/held"], check=False).returncode:
        assert time.monotonic() < deadline, "the holder did not start"
        time.sleep(0.02)
    with pytest.raises(NodeError) as err:
        op(h, "n1", "fence")
    assert err.value.type == "ResourceFailed" and "still in use" in err.value.message
    copy.kill()
    copy.wait(timeout=5)
    op(h, "n1", "fence")  # now proven
    assert h.disk_holders() == []


@pytest.mark.root
def test_fence_is_proven_while_another_node_holds_the_disk(harness: Harness) -> None:
    """A node that rejoins after a crash fences its leftovers while the survivor has the disk mounted: the
    proof looks at this node's mount namespaces only (an exclusive open of the one shared kernel device
    made the rejoining agent wait forever: seen in the two-way and procedure e2e tests)."""
    h = harness
    op(h, "n2", "start")
    op(h, "n1", "fence")  # nothing of n1 holds it: proven at once
    assert h.disk_holders() == ["n2"]
    op(h, "n2", "stop")

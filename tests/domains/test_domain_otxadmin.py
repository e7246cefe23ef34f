"""The drop-in otxadmin (issue 13 item 5): argument mapping, install/remove, and the seed's scripts run unmodified.

The end-to-end test runs the seed's Linux ``start.sh``/``stop.sh`` (tests/data/seed/oneway, byte for
byte, from where they lie) through the exec resource, with ``/opt/WebOTX/bin/otxadmin`` installed by
``kagemusha install-compat --prefix /opt/WebOTX`` inside a private mount namespace whose ``/opt``
is a tmpfs: the machine's real ``/opt`` is never written.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from kagemusha._compat import MARKER, UsageError, install_compat, otxadmin_argv, remove_compat
from kagemusha.errors import ConfigError

from .conftest import KAGEMUSHA, SEED, Node, tagged_under

pytestmark = pytest.mark.timeout(600)  # the namespace test starts and stops two domains twice (77 s idle)

# Each command line as the seed writes it (chapter 2 and 5, Linux paths) -> kagemusha domain arguments.
SEED_LINES = [
    ("start-domain admin", ["start", "admin"]),
    ("start-domain --adminonly admin", ["start", "--adminonly", "admin"]),
    ("stop-domain --force --wait_timeout 300 domain1", ["stop", "--force", "--wait_timeout", "300", "domain1"]),
    ("stop-domain --force --wait_timeout 300 --domaindir /data1/domains domain1",
     ["stop", "--domaindir", "/data1/domains", "--force", "--wait_timeout", "300", "domain1"]),
    ("start-domain --domaindir /data1/domains domain1", ["start", "--domaindir", "/data1/domains", "domain1"]),
    ("stop-domain --domaindir=/data1/domains domain1", ["stop", "--domaindir", "/data1/domains", "domain1"]),
    ("stop-domain domain1", ["stop", "domain1"]),
    ("list-domains", ["list"]),
    ("list-domains --domaindir /data1/domains", ["list", "--domaindir", "/data1/domains"]),
    ("list-domains --domaindir=/data2/domains", ["list", "--domaindir", "/data2/domains"]),
    ("create-domain --user admin --password adminadmin --port 6202 --file=/root/domain1.properties "
     + "--domaindir=/data1/domains domain1",
     ["create", "--file", "/root/domain1.properties", "--domaindir", "/data1/domains", "--user", "admin",
      "--port", "6202", "domain1"]),
    ("delete-domain --user admin --password adminadmin --port 6202 domain1",
     ["delete", "--user", "admin", "domain1"]),
    ("delete-domain --user admin --password adminadmin --port 6202 --domaindir /data1/domains domain1",
     ["delete", "--domaindir", "/data1/domains", "--user", "admin", "domain1"]),
    ("set --domaindir /data1/domains domain1 domain.workers=2",
     ["set", "domain1", "domain.workers=2", "--domaindir", "/data1/domains"]),
]  # fmt: skip


@pytest.mark.parametrize(("line", "expected"), SEED_LINES)
def test_seed_command_lines_map_onto_kagemusha_domain(line: str, expected: list[str]) -> None:
    args, env = otxadmin_argv(line.split())
    assert args == expected
    assert "adminadmin" not in args  # the password goes through the environment, never a command line
    assert env == ({"KAGEMUSHA_ADMIN_PASSWORD": "adminadmin"} if "--password" in line else {})


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("start-domian--adminonly admin", "unknown command 'start-domian--adminonly'"),  # the seed's 5.2 typo
        ("start-domain --bogus admin", "unknown option --bogus"),
        ("stop-domain --wait_timeout", "--wait_timeout needs a value"),
        ("stop-domain", "expected one domain name, got 0"),
        ("create-domain domain1", "--file=<domain properties> is required"),
        ("set domain1", "expected KEY=VALUE"),
        ("set a=b", "name the domain, or give its admin port with --port"),
        ("", "no command given"),
    ],
)
def test_bad_usage_is_one_clear_error(line: str, fragment: str) -> None:
    with pytest.raises(UsageError, match=fragment.replace("[", r"\[")):
        otxadmin_argv(line.split())


def test_install_writes_a_marked_launcher_and_remove_takes_exactly_that(tmp_path: Path) -> None:
    prefix = tmp_path / "WebOTX"
    target = install_compat(prefix, python="/usr/bin/python3")
    assert target == prefix / "bin" / "otxadmin"
    text = target.read_text()
    assert text.startswith("#!/bin/sh\n") and MARKER in text
    assert 'exec /usr/bin/python3 -m kagemusha._compat otxadmin "$@"' in text
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
    assert install_compat(prefix, python="/usr/bin/python3") == target  # our own file: rewritten
    (prefix / "bin" / "other-tool").write_text("theirs")
    removed = remove_compat(prefix)
    assert removed == [target]  # bin/ is not empty: left, as is everything not ours
    assert (prefix / "bin" / "other-tool").read_text() == "theirs"
    (prefix / "bin" / "other-tool").unlink()
    install_compat(prefix)
    assert remove_compat(prefix) == [target]  # bin/ existed before this install: not install's to remove
    assert remove_compat(prefix) == []

    fresh = tmp_path / "fresh"
    install_compat(fresh)
    assert remove_compat(fresh) == [fresh / "bin" / "otxadmin", fresh / "bin", fresh]
    assert not fresh.exists()


def test_install_refuses_to_overwrite_a_file_it_did_not_write(tmp_path: Path) -> None:
    real = tmp_path / "WebOTX" / "bin" / "otxadmin"
    real.parent.mkdir(parents=True)
    real.write_text("#!/bin/sh\necho the real otxadmin\n")
    with pytest.raises(ConfigError, match="was not written by kagemusha install-compat; refusing to overwrite"):
        install_compat(tmp_path / "WebOTX")
    with pytest.raises(ConfigError, match="was not written by kagemusha install-compat; leaving it alone"):
        remove_compat(tmp_path / "WebOTX")
    assert real.read_text() == "#!/bin/sh\necho the real otxadmin\n"
    with pytest.raises(ConfigError, match="absolute"):
        install_compat("relative/dir")
    r = subprocess.run([KAGEMUSHA, "install-compat", "--prefix", str(tmp_path / "WebOTX")],
                       capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert r.returncode == 1 and "refusing to overwrite" in r.stderr and "Traceback" not in r.stderr


NS_SCRIPT = r"""
import asyncio, json, logging, os, subprocess, sys
from pathlib import Path
from kagemusha.resources import ResourceContext, StartEnv
from kagemusha.resources._base import ClpEvent, ClpServer
from kagemusha.resources.exec import ExecResource

kagemusha, seed, state, props, root = sys.argv[1:6]
out = {}
# NB: inside this private mount namespace only: /opt is a tmpfs, the machine's /opt is untouched.
subprocess.run(["mount", "--make-rprivate", "/"], check=True)
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "kagemusha-test-opt", "/opt"], check=True)

def run(*argv):
    r = subprocess.run(list(argv), capture_output=True, text=True, timeout=240)
    return {"rc": r.returncode, "out": r.stdout, "err": r.stderr}

out["install"] = run(kagemusha, "install-compat", "--prefix", "/opt/WebOTX")
otx = "/opt/WebOTX/bin/otxadmin"
out["create"] = run(otx, "create-domain", "--user", "admin", "--password", "adminadmin", "--port", "16202",
                    f"--file={props}", f"--domaindir={root}", "domain1")
out["list0"] = run(otx, "list-domains")

lines = []
class H(logging.Handler):
    def emit(self, rec):
        lines.append(rec.getMessage())
log = logging.getLogger("compat-test")
log.addHandler(H()); log.setLevel(logging.INFO)
ctx = ResourceContext("t", "webotx1", "exec1", "n1", Path(state), log=log)
res = ExecResource(ExecResource.Params.model_validate(
    {"start": f"{seed}/oneway/start.sh", "stop": f"{seed}/oneway/stop.sh"}), ctx)

async def scenario():
    await res.start(StartEnv())
    out["after_start"] = run(otx, "list-domains")
    out["start_lines"] = list(lines)
    lines.clear()
    await res.stop(StartEnv())
    out["after_stop"] = run(otx, "list-domains")
    out["stop_lines"] = list(lines)
    lines.clear()
    env = StartEnv(event=ClpEvent.FAILOVER, server=ClpServer.OTHER)
    await res.start(env)
    out["failover_lines"] = list(lines)
    lines.clear()
    await res.stop(env)
    out["failover_stop_lines"] = list(lines)

try:
    asyncio.run(scenario())
finally:
    out["remove"] = run(kagemusha, "install-compat", "--remove", "--prefix", "/opt/WebOTX")
    out["opt_after"] = sorted(os.listdir("/opt"))
print(json.dumps(out))
"""


def _require_root_and_unshare() -> None:
    reason = None
    if os.geteuid() != 0:
        reason = "needs root (a private mount namespace with a tmpfs on /opt)"
    elif shutil.which("unshare") is None:
        reason = "unshare (util-linux) not installed"
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: must run, not skip)")
    pytest.skip(reason)


@pytest.mark.root
def test_seed_scripts_run_unmodified_with_otxadmin_installed(node: Node, workdir: Path) -> None:
    _require_root_and_unshare()
    opt_before = sorted(os.listdir("/opt")) if os.path.isdir("/opt") else None
    props = node.seed_properties("domain1")
    root = workdir / "data1" / "domains"
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", sys.executable, "-c", NS_SCRIPT, KAGEMUSHA, str(SEED),
         str(workdir / "exec-state"), str(props), str(root)],
        capture_output=True, text=True, timeout=540, env=node.env, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["install"]["rc"] == 0, out["install"]
    assert out["create"]["rc"] == 0, out["create"]
    assert out["list0"]["out"].splitlines()[1:] == ["admin not running", "domain1 not running"], out["list0"]
    # start.sh: "otxadmin start-domain admin" -> the admin domain starts domain1 (autostart)
    start = "\n".join(out["start_lines"])
    assert "NORMAL1" in start and "NORMAL2" in start and "EXIT" in start, start
    assert "kagemusha:" not in start and "otxadmin:" not in start, start
    assert sorted(out["after_start"]["out"].splitlines()[1:]) == ["admin running", "domain1 running"]
    stop = "\n".join(out["stop_lines"])
    assert "NORMAL1" in stop and "kagemusha:" not in stop, stop
    assert sorted(out["after_stop"]["out"].splitlines()[1:]) == ["admin not running", "domain1 not running"]
    fo = "\n".join(out["failover_lines"])
    assert "FAILOVER1" in fo and "ON_OTHER2" in fo, fo
    assert "FAILOVER1" in "\n".join(out["failover_stop_lines"])
    # remove took exactly what install wrote: /opt (the tmpfs) is empty again
    assert out["remove"]["rc"] == 0 and out["opt_after"] == [], out["remove"]
    # the machine's /opt was never touched, and nothing of the domain is left running
    assert (sorted(os.listdir("/opt")) if os.path.isdir("/opt") else None) == opt_before
    assert not tagged_under(workdir)
    # the admin password given with --password is nowhere: not printed, not in any file of the domain
    assert "adminadmin" not in r.stdout and "adminadmin" not in r.stderr
    for p in root.rglob("*"):
        if p.is_file():
            assert b"adminadmin" not in p.read_bytes(), p


def test_set_without_a_name_picks_the_domain_by_its_admin_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kagemusha.domains import create_domain

    monkeypatch.setenv("KAGEMUSHA_DOMAIN_REGISTRY", str(tmp_path / "registry"))
    for name, admin, http in (("domain1", 46212, 46080), ("domain2", 46222, 46081)):
        props = tmp_path / f"{name}.properties"
        props.write_text(f"domain.name={name}\ndomain.admin.port={admin}\ndomain.http.port={http}\n")
        create_domain(name, props, domaindir=tmp_path / "domains", admin_password="adminadmin", admin_port=46202)
    args, env = otxadmin_argv(["set", "--user", "admin", "--password", "adminadmin", "--port", "46222", "domain.workers=2"])
    assert args == ["set", "domain2", "domain.workers=2"] and env == {"KAGEMUSHA_ADMIN_PASSWORD": "adminadmin"}
    from kagemusha.errors import DomainError

    with pytest.raises(DomainError, match="no domain has domain.admin.port 46999"):
        otxadmin_argv(["set", "--port", "46999", "domain.workers=2"])

"""The CLI stays lazy: a command imports only what it needs (issue 12: cold start <= 0.25 s).

Each command runs in a fresh interpreter that prints, at exit, the modules it had
imported; the guards are on structure (what is imported), never on time.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.conftest import start_cluster
from tests.integration.cluster import LocalCluster

#: Never imported by a CLI command that does not run or serve the agent.
HEAVY = ("fastapi", "uvicorn", "pyroute2", "starlette", "kagemusha.agent", "kagemusha.api", "httpx")

PROBE = """
import atexit, json, sys
atexit.register(lambda: sys.__stderr__.write("\\nMODULES " + json.dumps(sorted(sys.modules)) + "\\n"))
sys.argv = ["kagemusha", *sys.argv[1:]]
from kagemusha.cli import main
main()
"""


def imported(*args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``kagemusha ARGS`` in a fresh interpreter; its result and every module it imported."""
    r = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60, check=False)
    line = next((ln for ln in r.stderr.splitlines() if ln.startswith("MODULES ")), None)
    assert line is not None, r.stderr
    return r, set(json.loads(line.removeprefix("MODULES ")))


def loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == n or m.startswith(n + ".") for n in names))


def test_help_imports_no_subcommand_nor_typer() -> None:
    r, mods = imported("--help")
    assert r.returncode == 0 and "Commands:" in r.stdout, r.stderr
    assert loaded(mods, (*HEAVY, "typer", "rich", "pydantic", "kagemusha.config", "kagemusha.domains")) == []
    assert loaded(mods, ("kagemusha.cli",)) == ["kagemusha.cli", "kagemusha.cli._app"]


def test_help_lists_each_command_with_its_own_help() -> None:
    """The table's one-line help is the command's own (a new command cannot drift from it)."""
    import typer
    import typer.main

    from kagemusha.cli._app import COMMANDS, build_app

    group = typer.main.get_command(build_app())
    ctx = typer.Context(group)
    for name, entry in COMMANDS.items():
        cmd = group.get_command(ctx, name)  # type: ignore[attr-defined]
        assert cmd is not None, name
        assert cmd.get_short_help_str(limit=1000) == entry.help, name
    r, _ = imported("--help")
    for name in COMMANDS:
        assert f"\n  {name} " in r.stdout


def test_domain_list_imports_only_the_domain_command(tmp_path: Path) -> None:
    """On the fast path (cli/_fast.py): no typer, no pydantic, no config, no domain code it does not run."""
    r, mods = imported("domain", "list", "--domaindir", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert loaded(mods, (*HEAVY, "rich", "typer", "click", "pydantic", "kagemusha.config", "argon2", "cryptography",
                         "psycopg", "javaproperties")) == []
    assert loaded(mods, ("kagemusha.cli",)) == ["kagemusha.cli", "kagemusha.cli._app", "kagemusha.cli._domain_run",
                                                "kagemusha.cli._fast"]


def test_domain_list_with_a_typer_only_flag_goes_through_typer(tmp_path: Path) -> None:
    """Anything the fast path does not take plainly (here --help) is typer's, as before."""
    r, mods = imported("domain", "list", "--help")
    assert r.returncode == 0 and "--domaindir" in r.stdout, r.stderr
    assert "typer" in mods and "kagemusha.cli.domain" in mods


def test_unknown_command_says_so() -> None:
    r, _ = imported("no-such-command")
    assert r.returncode == 2 and "No such command" in r.stderr


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = start_cluster(tmp_path_factory.mktemp("lazy") / "c")
    try:
        yield c
    finally:
        c.close()


def test_status_json_through_the_api_imports_no_agent_nor_drivers(cluster: LocalCluster) -> None:
    r, mods = imported("status", "--json", "--config", str(cluster.config_path))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["groups"][0]["state"] == "online"
    assert loaded(mods, (*HEAVY, "rich", "kagemusha.control", "kagemusha.resources", "kagemusha.monitors",
                         "kagemusha.domains", "psutil", "asyncio", "typer", "click", "pydantic",
                         "kagemusha.config")) == []


def test_status_table_and_a_group_action_still_work(cluster: LocalCluster) -> None:
    r = cluster.cli("status")
    assert r.returncode == 0 and "webotx1" in r.stdout and "online" in r.stdout, r.stderr
    r = cluster.cli("monitor", "suspend", "webotx1", "svcmon")
    assert r.returncode == 0 and "suspended" in r.stdout, r.stderr
    r = cluster.cli("monitor", "resume", "webotx1", "svcmon", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["name"] == "webotx1", r.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_domain_start_imports_no_typer_nor_what_the_domain_does_not_use(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """`kagemusha domain start` (the seed's start-domain, on the failover path): the CLI side imports no typer,
    pydantic, config, javaproperties (a plain properties file) nor data-source code (a domain without one)."""
    from kagemusha.domains import NodeRegistry, create_domain, deploy_app, kill_domain, stop_domain

    hello = Path(__file__).resolve().parents[1] / "data" / "domains" / "hello"
    reg = NodeRegistry(tmp_path / "registry")
    props = tmp_path / "d1.properties"
    props.write_text(f"domain.name=d1\ndomain.admin.user=admin\ndomain.admin.port={_free_port()}\n"
                     f"domain.http.port={_free_port()}\nserver.corba-service.namesv.NameServicePort={_free_port()}\n")
    create_domain("d1", props, domaindir=tmp_path / "domains", admin_password="pw-lazy-test", admin_port=_free_port(),
                  registry=reg)
    deploy_app("d1", "hello_asgi:app", path=hello, registry=reg)  # writes hello_asgi\:app (an escape)
    monkeypatch.setenv("KAGEMUSHA_DOMAIN_REGISTRY", str(reg.path))
    try:
        r, mods = imported("domain", "start", "d1", "--timeout", "60")
        assert r.returncode == 0 and "Domain d1 started." in r.stdout, r.stderr
        assert loaded(mods, (*HEAVY, "rich", "typer", "click", "pydantic", "kagemusha.config", "javaproperties",
                             "kagemusha.domains._datasource", "asyncio", "argon2", "psycopg", "cryptography",
                             "psutil")) == []
        r, mods = imported("domain", "stop", "d1", "--wait_timeout", "30")
        assert r.returncode == 0 and "Domain d1 stopped." in r.stdout, r.stderr
        assert loaded(mods, ("typer", "pydantic", "javaproperties")) == []
    finally:
        stop_domain("d1", force=True, wait_timeout=5, registry=reg)
        kill_domain("d1", registry=reg)

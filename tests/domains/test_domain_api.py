"""The public surface of kagemusha.domains: an explicit __all__, every name importable and documented."""

from __future__ import annotations

import inspect

from kagemusha import domains


def test_all_is_explicit_and_importable() -> None:
    assert len(set(domains.__all__)) == len(domains.__all__)
    for name in domains.__all__:
        obj = getattr(domains, name)
        if callable(obj) and not isinstance(obj, type):
            assert inspect.getdoc(obj), f"{name} has no docstring"
    expected = {
        "create_domain", "delete_domain", "start_domain", "stop_domain", "kill_domain", "domain_state",
        "check_domain_health", "list_domains", "setup_domains_root", "deploy_app", "set_autostart",
        "resolve_name", "DomainState", "NodeRegistry", "load_properties",
    }  # fmt: skip
    assert expected <= set(domains.__all__)


def test_cluster_facing_signatures() -> None:
    sig = inspect.signature(domains.stop_domain)
    assert list(sig.parameters)[:2] == ["name", "domaindir"]
    assert sig.parameters["force"].kind is inspect.Parameter.KEYWORD_ONLY
    assert sig.parameters["wait_timeout"].default == 300
    sig = inspect.signature(domains.check_domain_health)
    assert sig.parameters["user"].kind is inspect.Parameter.KEYWORD_ONLY
    assert {s.value for s in domains.DomainState} == {
        "not running",
        "starting",
        "running",
        "stopping",
        "failed",
    }


def test_importing_the_library_does_not_import_the_server_stack() -> None:
    import subprocess
    import sys

    code = "import sys, kagemusha.domains; print(any(m in sys.modules for m in ('fastapi', 'uvicorn')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_the_domain_master_imports_no_server_framework() -> None:
    """The master is on every start's path (failover): it serves its small APIs without uvicorn,
    FastAPI or pydantic, and records its state without psutil or javaproperties (issue 12)."""
    import subprocess
    import sys

    code = (
        "import sys, kagemusha.domains._runtime, asyncio, json\n"
        "from kagemusha.domains import _asgi, _auth, _httpd, _layout, _naming, _properties\n"
        "heavy = ('uvicorn', 'click', 'fastapi', 'pydantic', 'starlette', 'httpx', 'psutil', 'javaproperties',"
        " 'argon2', 'kagemusha.domains._control')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_naming_service_decodes_a_name_once(tmp_path: object) -> None:
    import asyncio
    import json
    from pathlib import Path

    from kagemusha.domains._auth import Authenticator
    from kagemusha.domains._naming import make_naming_app
    from kagemusha.domains._properties import parse_properties

    names = Path(str(tmp_path)) / "names.json"
    names.write_text(json.dumps({"a%41": {"port": 1234, "path": "/"}}))
    props = parse_properties({"domain.name": "d1", "domain.admin.port": "1", "domain.http.port": "2"})
    app = make_naming_app(props, names, Authenticator("admin", lambda: None))
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    # the client asked for /names/a%2541: the server hands the app the decoded path once
    scope = {"type": "http", "method": "GET", "path": "/names/a%41", "headers": [(b"host", b"vip:9")]}
    asyncio.run(app(scope, receive, send))
    assert sent[0]["status"] == 200
    assert json.loads(bytes(sent[1]["body"])) == {"name": "a%41", "url": "http://vip:1234/"}  # type: ignore[arg-type]

"""Domain data sources (issue 13 item 3): properties validation, and real PostgreSQL failover under a serving domain.

The failover tests start a real primary and streaming standby (Debian's PostgreSQL, as the
postgres user, on free loopback ports: ``kagemusha.testing.postgres``), serve a WSGI and an ASGI
app that use the data source, stop the primary while requests flow and promote the standby.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from kagemusha.domains._datasource import (
    DataSourceConfig,
    check_password_files,
    datasource_errors,
    parse_datasources,
)
from kagemusha.errors import ConfigError, DomainError
from kagemusha.testing.postgres import PgPair, require_postgres

from .conftest import APPS, Node

pytestmark = pytest.mark.timeout(180)


def _errors(raw: dict[str, str]) -> dict[str, str]:
    return {loc.split(": ", 1)[1]: msg for loc, msg in datasource_errors(raw, "d.properties")}


# -- properties ---------------------------------------------------------------------------------


def test_datasource_keys_parse_with_defaults() -> None:
    raw = {
        "datasource.db.url": "postgresql://db1:5432,db2:5432/app?target_session_attrs=read-write",
        "datasource.db.user": "app",
        "datasource.db.password_file": "/etc/kagemusha/db.pw",
        "datasource.db.max_size": "4",
        "datasource.other.url": "host=db1,db2 port=5432,5433 dbname=x target_session_attrs=read-write",
        "datasource.other.timeout": "2.5",
    }
    got = parse_datasources(raw)
    assert got["db"] == DataSourceConfig(
        "db", raw["datasource.db.url"], user="app", password_file=Path("/etc/kagemusha/db.pw"), max_size=4
    )
    assert got["other"].min_size == 1 and got["other"].max_size == 10 and got["other"].timeout == 2.5
    assert parse_datasources({"domain.name": "x"}) == {}


@pytest.mark.parametrize(
    ("raw", "key", "fragment"),
    [
        ({"datasource.db.user": "app"}, "datasource.db.url", "missing"),
        (
            {"datasource.db.url": "postgresql://h/app", "datasource.db.password": "secret"},
            "datasource.db.password",
            "password_file",
        ),
        ({"datasource.db.url": "postgresql://app:secret@h/app"}, "datasource.db.url", "holds a password"),
        ({"datasource.db.url": "host=h password=secret"}, "datasource.db.url", "holds a password"),
        ({"datasource.db.url": "postgresql://h:notaport/app?x=%zz"}, "datasource.db.url", "not a valid"),
        ({"datasource.db.url": "host=h", "datasource.db.min_size": "many"}, "datasource.db.min_size", "integer"),
        ({"datasource.db.url": "host=h", "datasource.db.max_size": "0"}, "datasource.db.max_size", ">= 1"),
        (
            {"datasource.db.url": "host=h", "datasource.db.min_size": "5", "datasource.db.max_size": "2"},
            "datasource.db.min_size",
            "more than max_size",
        ),
        ({"datasource.db.url": "host=h", "datasource.db.timeout": "-1"}, "datasource.db.timeout", "> 0"),
        ({"datasource.db.url": "host=h", "datasource.db.timeout": "nan"}, "datasource.db.timeout", "> 0"),
        ({"datasource.db.url": "host=h", "datasource.db.pool": "3"}, "datasource.db.pool", "unknown"),
        ({"datasource.db.url": "host=h", "datasource.db.password_file": "db.pw"}, "datasource.db.password_file",
         "absolute"),
        ({"datasource.b@d.url": "host=h"}, "datasource.b@d.url", "invalid data source name"),
    ],
)  # fmt: skip
def test_datasource_errors_name_the_key(raw: dict[str, str], key: str, fragment: str) -> None:
    errs = _errors(raw)
    assert key in errs, errs
    assert fragment in errs[key], errs[key]
    with pytest.raises(ConfigError) as exc:
        parse_datasources(raw, source="d.properties")
    assert f"d.properties: {key}" in str(exc.value)


def test_inline_password_error_message_is_clear() -> None:
    msg = _errors({"datasource.db.url": "host=h", "datasource.db.password": "x"})["datasource.db.password"]
    assert "never kept in the properties" in msg and "datasource.db.password_file" in msg


def test_password_file_must_be_0600(tmp_path: Path) -> None:
    pw = tmp_path / "db.pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o644)
    ds = {"db": DataSourceConfig("db", "host=h", password_file=pw)}
    with pytest.raises(ConfigError) as exc:
        check_password_files(ds, source="d.properties")
    assert "d.properties: datasource.db.password_file" in str(exc.value) and "0644" in str(exc.value)
    assert "s3cret" not in str(exc.value)
    pw.chmod(0o600)
    check_password_files(ds, source="d.properties")
    missing = {"db": DataSourceConfig("db", "host=h", password_file=tmp_path / "nope")}
    with pytest.raises(ConfigError, match="datasource.db.password_file: cannot read"):
        check_password_files(missing, source="d.properties")


def test_datasource_outside_a_domain_is_a_clear_error() -> None:
    from kagemusha.appserver import async_datasource, datasource

    with pytest.raises(DomainError, match="inside an application deployed to a kagemusha domain"):
        datasource("db")
    with pytest.raises(DomainError, match="inside an application"):
        async_datasource("db")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _props(node: Node, name: str, **extra: str) -> tuple[Path, int, int]:
    admin, http = _free_port(), _free_port()
    lines = [f"domain.name={name}", f"domain.admin.port={admin}", f"domain.http.port={http}"]
    lines += [f"{k}={v}" for k, v in extra.items()]
    path = node.base / f"{name}.properties"
    path.write_text("\n".join(lines) + "\n")
    return path, admin, http


def _create(node: Node, name: str, root: Path, **extra: str) -> tuple[subprocess.CompletedProcess[str], int]:
    props, _, http = _props(node, name, **extra)
    r = node.run(
        "create", "--user", "admin", "--password", "adminadmin", "--port", str(_free_port()),
        f"--file={props}", f"--domaindir={root}", name,
    )  # fmt: skip
    return r, http


def test_create_refuses_a_password_file_readable_by_others(node: Node, workdir: Path) -> None:
    pw = workdir / "db.pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o640)
    r, _ = _create(node, "dsbad", workdir / "domains", **{
        "datasource.db.url": "postgresql://127.0.0.1:1/app", "datasource.db.password_file": str(pw)})  # fmt: skip
    assert r.returncode == 1
    assert "datasource.db.password_file" in r.stderr and "0640" in r.stderr, r.stderr
    assert not (workdir / "domains" / "dsbad").exists()
    r, _ = _create(node, "dsbad", workdir / "domains", **{
        "datasource.db.url": "postgresql://127.0.0.1:1/app", "datasource.db.password": "s3cret"})  # fmt: skip
    assert r.returncode == 1 and "datasource.db.password:" in r.stderr, r.stderr
    assert "s3cret" not in r.stderr


# -- real PostgreSQL --------------------------------------------------------------------------


@pytest.fixture
def pg() -> Iterator[PgPair]:
    require_postgres()
    with PgPair() as pair:
        yield pair


class Loop:
    """GET / every 20 ms in a thread; records (time sent, status, body)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/"
        self.records: list[tuple[float, int, str]] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                t = time.monotonic()
                try:
                    r = client.get(self.url)
                    self.records.append((t, r.status_code, r.text.strip()))
                except httpx.HTTPError as exc:
                    self.records.append((t, 0, f"http error {exc!r}"))
                self._stop.wait(0.02)

    def stop(self) -> list[tuple[float, int, str]]:
        self._stop.set()
        self._t.join(60)
        return self.records


def _app_connections(pg: PgPair, server: str = "standby") -> int:
    s = pg.standby if server == "standby" else pg.primary
    return int(s.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'"))


@pytest.mark.root
@pytest.mark.parametrize("app", ["ds_wsgi:app", "ds_asgi:app"])
def test_requests_survive_a_primary_failover(node: Node, workdir: Path, pg: PgPair, app: str) -> None:
    name = "dsw" if "wsgi" in app else "dsa"
    root = workdir / "domains"
    r, http = _create(node, name, root, **{
        "datasource.db.url": pg.url, "datasource.db.user": "app",
        "datasource.db.password_file": str(pg.password_file),
        "datasource.db.min_size": "2", "datasource.db.max_size": "4", "datasource.db.timeout": "15",
    })  # fmt: skip
    assert r.returncode == 0, r.stderr
    node.run("deploy", name, app, "--path", str(APPS / "datasource"), check=True)

    t = node.run("test-datasource", name, "db", check=True)
    assert t.stdout.strip() == f"ok: 127.0.0.1:{pg.primary.port} primary PostgreSQL {_version(pg)}", t.stdout
    bad = node.run("test-datasource", name, "nope")
    assert bad.returncode == 1 and "no data source 'nope'" in bad.stderr and len(bad.stderr.splitlines()) == 1

    node.run("start", name, check=True)
    first = httpx.get(f"http://127.0.0.1:{http}/", timeout=30)
    assert first.status_code == 200 and first.text.startswith(f"ok {pg.primary.port} primary"), first.text
    # min_size connections were opened with the domain
    pg.wait(lambda: int(pg.primary.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'")) >= 2,
            "pool connections")  # fmt: skip

    slow: dict[str, httpx.Response] = {}
    slow_t = threading.Thread(
        target=lambda: slow.update(r=httpx.get(f"http://127.0.0.1:{http}/slow?s=60", timeout=90)), daemon=True
    )
    loop = Loop(http)
    slow_t.start()
    pg.wait(lambda: pg.primary.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")
            == "1", "slow request running")  # fmt: skip
    pg.wait(lambda: sum(1 for _, s, _ in loop.records if s == 200) >= 5, "serving before the failover")
    t_stop = time.monotonic()
    pg.stop_primary("fast")
    pg.promote_standby()
    t_promoted = time.monotonic()

    # The request that was running gets psycopg's error (not retried behind the app's back).
    slow_t.join(60)
    assert "r" in slow, "the running request did not return"
    assert slow["r"].status_code == 503 and slow["r"].text.startswith("error "), slow["r"].text
    assert any(c in slow["r"].text for c in ("AdminShutdown", "OperationalError")), slow["r"].text

    # New requests reach the new primary within the pool's timeout (15 s) after the promotion.
    deadline = t_promoted + 15 + 5
    while time.monotonic() < deadline:
        if any(t > t_promoted and s == 200 and f"ok {pg.standby.port} primary" in b for t, s, b in loop.records):
            break
        time.sleep(0.05)
    t_first_ok = time.monotonic()
    n = len(loop.records)
    pg.wait(lambda: len(loop.records) >= n + 20, "serving after the switch")
    records = loop.stop()
    before = [x for x in records if x[0] < t_stop]
    after = [x for x in records if x[0] > t_promoted]
    assert before and all(s == 200 for _, s, _ in before), before[:3]
    ok_after = [x for x in after if x[1] == 200]
    assert ok_after, f"no request succeeded after the promotion: {after[-3:]}"
    assert all(f"ok {pg.standby.port} primary" in b for _, _, b in ok_after), ok_after[:3]
    first_ok = min(t for t, _, _ in ok_after)
    # once the new primary has answered, every later request succeeds
    assert all(s == 200 for t, s, _ in after if t > first_ok + 0.5), [x for x in after if x[1] != 200][:3]
    errors = [b for _, s, b in records if s != 200]
    assert all(b.startswith("error ") for b in errors), errors[:3]  # the app's own psycopg error answers
    print(
        f"{app}: {len(records)} requests, {len(errors)} answered with psycopg errors; first success on the new"
        f" primary {first_ok - t_promoted:.2f} s after promotion ({t_first_ok - t_stop:.2f} s after the stop)"
    )

    t = node.run("test-datasource", name, "db", check=True)
    assert t.stdout.strip() == f"ok: 127.0.0.1:{pg.standby.port} primary PostgreSQL {_version(pg)}"

    # Pools close on domain stop: no session of the app is left on the server.
    assert _app_connections(pg) >= 1
    node.run("stop", name, check=True)
    pg.wait(lambda: _app_connections(pg) == 0, "app sessions closed")


@pytest.mark.root
def test_a_bad_password_file_keeps_the_domain_from_starting(node: Node, workdir: Path, pg: PgPair) -> None:
    root = workdir / "domains"
    pw = workdir / "db.pw"
    pw.write_text(pg.password + "\n")
    pw.chmod(0o600)
    r, _ = _create(node, "dsf", root, **{"datasource.db.url": pg.url, "datasource.db.user": "app",
                                          "datasource.db.password_file": str(pw)})  # fmt: skip
    assert r.returncode == 0, r.stderr
    node.run("deploy", "dsf", "ds_wsgi:app", "--path", str(APPS / "datasource"), check=True)
    assert node.run("test-datasource", "dsf", "db").returncode == 0
    pw.chmod(0o644)
    t = node.run("test-datasource", "dsf", "db")
    assert t.returncode == 1 and "datasource.db.password_file" in t.stderr and "0644" in t.stderr
    s = node.run("start", "dsf", "--timeout", "60")
    assert s.returncode == 1 and "datasource.db.password_file" in s.stderr, s.stderr
    # A wrong password: test-datasource says why in one line, exit 1.
    pw.write_text("wrong\n")
    pw.chmod(0o600)
    t = node.run("test-datasource", "dsf", "db")
    assert t.returncode == 1 and "password authentication failed" in t.stderr, t.stderr
    assert len(t.stderr.strip().splitlines()) == 1 and "wrong" not in t.stderr


def _version(pg: PgPair) -> str:
    return pg.primary.psql("SHOW server_version").split()[0] if pg.primary.is_running() else \
        pg.standby.psql("SHOW server_version").split()[0]



# -- the lifespan wrapper (no server needed: pools to a closed port open without waiting) -------


def _drive(app: object, *, fail_inner: bool = False) -> list[dict[str, object]]:
    import asyncio

    sent: list[dict[str, object]] = []

    async def run() -> None:
        inbox: asyncio.Queue[dict[str, object]] = asyncio.Queue()
        await inbox.put({"type": "lifespan.startup"})

        async def receive() -> dict[str, object]:
            return await inbox.get()

        async def send(msg: dict[str, object]) -> None:
            sent.append(msg)
            if msg["type"] == "lifespan.startup.complete":
                await inbox.put({"type": "lifespan.shutdown"})

        await app({"type": "lifespan"}, receive, send)  # type: ignore[operator]

    asyncio.run(asyncio.wait_for(run(), 30))
    return sent


def _sources(tmp_path: Path, *, password_mode: int = 0o600) -> object:
    from kagemusha.domains._datasource import DataSources

    pw = tmp_path / "pw"
    pw.write_text("x\n")
    pw.chmod(password_mode)
    url = f"postgresql://127.0.0.1:{_free_port()}/app?connect_timeout=2"
    return DataSources("d1", {"db": DataSourceConfig("db", url, user="app", password_file=pw)})


def test_lifespan_wrapper_opens_before_and_closes_after_the_app(tmp_path: Path) -> None:
    from kagemusha.domains._datasource import DataSourceApp

    seen: list[str] = []

    async def asgi_app(scope: dict[str, object], receive: object, send: object) -> None:
        while True:
            msg = await receive()  # type: ignore[operator]
            if msg["type"] == "lifespan.startup":
                seen.append(f"startup open={bool(sources._async)}")  # type: ignore[attr-defined]
                await send({"type": "lifespan.startup.complete"})  # type: ignore[operator]
            else:
                seen.append(f"shutdown open={bool(sources._async)}")  # type: ignore[attr-defined]
                await send({"type": "lifespan.shutdown.complete"})  # type: ignore[operator]
                return

    sources = _sources(tmp_path)
    sent = _drive(DataSourceApp(asgi_app, sources, asgi=True))  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert seen == ["startup open=True", "shutdown open=True"]
    assert not sources._async  # type: ignore[attr-defined]  # closed after the app's shutdown

    async def no_lifespan(scope: dict[str, object], receive: object, send: object) -> None:
        raise RuntimeError("lifespan not supported")

    sources = _sources(tmp_path)
    sent = _drive(DataSourceApp(no_lifespan, sources, asgi=True))  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not sources._async  # type: ignore[attr-defined]

    sources = _sources(tmp_path)
    sent = _drive(DataSourceApp(lambda *a: None, sources, asgi=False))  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert not sources._sync  # type: ignore[attr-defined]


def test_lifespan_wrapper_fails_the_startup_on_a_bad_password_file(tmp_path: Path) -> None:
    from kagemusha.domains._datasource import DataSourceApp

    sent = _drive(DataSourceApp(lambda *a: None, _sources(tmp_path, password_mode=0o644), asgi=False))  # type: ignore[arg-type]
    assert [m["type"] for m in sent] == ["lifespan.startup.failed"]
    assert "datasource.db.password_file" in str(sent[0]["message"]) and "0644" in str(sent[0]["message"])


@pytest.mark.root
def test_the_oneway_postgres_example_app_serves(node: Node, workdir: Path, pg: PgPair) -> None:
    """examples/oneway-postgres: its properties (database and ports swapped for the test's) and its app."""
    example = Path(__file__).resolve().parents[2] / "examples" / "oneway-postgres"
    http, admin = _free_port(), _free_port()
    swap = {
        "datasource.orders.url": pg.url, "datasource.orders.user": "app",
        "datasource.orders.password_file": str(pg.password_file),
        "domain.http.port": str(http), "domain.admin.port": str(admin),
        "domain.https.port": str(_free_port()),
        "server.corba-service.namesv.NameServicePort": str(_free_port()),
    }  # fmt: skip
    lines = []
    for line in (example / "domain1.properties").read_text().splitlines():
        key = line.split("=", 1)[0]
        lines.append(f"{key}={swap[key]}" if key in swap else line)
    props = node.base / "domain1.properties"
    props.write_text("\n".join(lines) + "\n")
    node.run("create", "--user", "admin", "--password", "adminadmin", "--port", str(_free_port()),
             f"--file={props}", f"--domaindir={workdir / 'data1' / 'domains'}", "domain1", check=True)  # fmt: skip
    node.run("deploy", "domain1", "orders:app", "--path", str(example / "app"), check=True)
    assert node.run("test-datasource", "domain1", "orders", check=True).stdout.startswith(
        f"ok: 127.0.0.1:{pg.primary.port} primary PostgreSQL "
    )
    node.run("start", "domain1", check=True)
    base = f"http://127.0.0.1:{http}"
    assert httpx.get(f"{base}/health", timeout=30).text.strip() == f"ok 127.0.0.1:{pg.primary.port}"
    r = httpx.post(f"{base}/orders", content=b"tea", timeout=30)
    assert r.status_code == 201, r.text
    assert httpx.get(f"{base}/orders", timeout=30).text.strip() == f"{r.text.strip()} tea"
    node.run("stop", "domain1", check=True)

"""The CLI's client of the agents' REST API: tries each node's address in turn, with the cluster's token.

A request that could not be sent (connection refused, connect timeout) goes to
the next node; one that was sent and lost (reset, read timeout) is not replayed
elsewhere, since an action may already have been recorded. Every failure is an
``ApiError`` with one line that says which nodes were tried and what each said.
With TLS (``cluster.tls_cert_file``) the client trusts the certificates in that
file (a self-signed certificate, or a chain ending in the cluster's CA) and the
system's CAs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, Self, TypeVar

from kagemusha.errors import ApiError

if TYPE_CHECKING:
    import http.client
    import ssl

    from kagemusha.config import Config
    from kagemusha.control import ClusterControl

__all__ = ["ApiClient", "ApiConfig", "HttpError", "api_call", "client_config", "through", "uses_api"]

T = TypeVar("T")

CONNECT_TIMEOUT = 2.0
READ_TIMEOUT = 15.0


class HttpError(ApiError):
    """The API answered with an error status; ``status`` is the HTTP code, the message its ``detail``."""

    def __init__(self, status: int, message: str, node: str) -> None:
        self.status = status
        self.node = node
        super().__init__(message)


class _Response:
    """What the client keeps of an answer: status, reason and body."""

    def __init__(self, status: int, reason: str, body: bytes) -> None:
        self.status_code = status
        self.reason_phrase = reason
        self.body = body

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _NotSent(Exception):
    """The request could not be sent (no connection): the next node may be asked."""


class _NodeAddress(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def address(self) -> str: ...


class _ApiSettings(Protocol):
    @property
    def api_token_file(self) -> str | None: ...

    @property
    def tls_cert_file(self) -> str | None: ...


class ApiConfig(Protocol):
    """What the API client reads of a config: a full ``Config`` or a ``client_config``."""

    @property
    def source(self) -> str: ...

    @property
    def cluster(self) -> _ApiSettings: ...

    @property
    def nodes(self) -> Sequence[_NodeAddress]: ...


class _Node(NamedTuple):
    name: str
    address: str


class _Cluster(NamedTuple):
    api_token_file: str | None
    tls_cert_file: str | None


class _ClientConfig(NamedTuple):
    source: str
    cluster: _Cluster
    nodes: tuple[_Node, ...]


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")  # the schema's NAME_RE


def client_config(path: str) -> ApiConfig | None:
    """The nodes' API addresses and the token of ``cluster.toml``, read without the config schema.

    Why: the schema (pydantic) costs more CPU to import and build than a whole ``status --json``
    through the API may take (issue 12: <= 0.25 s). A client of the API needs the nodes' names
    and addresses, the token file and the TLS certificate; the agents validate the rest of the
    cluster's config. Each of those keys is checked as the schema checks it (``NodeSpec.name``,
    ``NodeSpec.address``: "host:port" with a port 1-65535; strings for the files); anything not
    plainly valid, an unreadable file, bad TOML, or no ``cluster.api_token_file`` gives ``None``,
    and the caller loads the full config (``_common.get_config``), which names every error.
    """
    import tomllib

    try:
        with open(path, "rb") as fh:
            data = tomllib.loads(fh.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    cluster, nodes = data.get("cluster"), data.get("nodes")
    if not isinstance(cluster, dict) or not isinstance(nodes, list) or not nodes:
        return None
    token, cert = cluster.get("api_token_file"), cluster.get("tls_cert_file")
    if not isinstance(token, str) or not (cert is None or isinstance(cert, str)):
        return None
    out: list[_Node] = []
    for n in nodes:
        if not isinstance(n, dict):
            return None
        name, address = n.get("name"), n.get("address")
        if not isinstance(name, str) or not _NAME.fullmatch(name) or not isinstance(address, str):
            return None
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return None
        out.append(_Node(name, address))
    if len({n.name for n in out}) != len(out):
        return None
    return _ClientConfig(path, _Cluster(token, cert), tuple(out))


def uses_api(config: ApiConfig) -> bool:
    """True when the cluster has an API token: the CLI then goes through the agents' API."""
    return config.cluster.api_token_file is not None


def _resolve(config: ApiConfig, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() or not config.source else Path(config.source).resolve().parent / p


def _detail(r: _Response) -> str:
    try:
        d = r.json().get("detail")
    except (ValueError, AttributeError):
        d = None
    if isinstance(d, str) and d:
        return d
    return f"HTTP {r.status_code} {r.reason_phrase}".strip()


class ApiClient:
    """Call the cluster's API on the first node that answers.

    Usage::

        with ApiClient(config) as api:
            status = api.get("/cluster")
            api.post("/groups/webotx1/move", {"to": "n2", "wait": 60}, timeout=70)

    The standard library's ``http.client`` (one connection per request): a CLI
    process makes a request or two, and importing a full HTTP client would cost
    more than the requests. It never uses a proxy from the environment, which must
    not see the token or the cluster's addresses.

    Args:
        config: the cluster config (nodes' addresses, token file, TLS certificate).

    Raises:
        ApiError: the token file cannot be read (at construction).
    """

    def __init__(self, config: ApiConfig) -> None:
        # NB: imported here, not at the top: `status` without a token reads only client_config of
        # this module and goes to the store (http.client with ssl and email costs ~20 ms).
        import getpass
        import socket
        import ssl

        if config.cluster.api_token_file is None:
            raise ApiError("cluster.api_token_file is not set: the CLI cannot use the API")
        self.config = config
        token_file = _resolve(config, config.cluster.api_token_file)
        try:
            self.token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ApiError(f"cannot read the API token {token_file}: {exc.strerror}") from None
        if not self.token:
            raise ApiError(f"the API token file {token_file} is empty")
        c = config.cluster
        self.scheme = "https" if c.tls_cert_file else "http"
        self._tls: ssl.SSLContext | None = None
        if c.tls_cert_file:
            ctx = ssl.create_default_context(cafile=str(_resolve(config, c.tls_cert_file)))
            ctx.load_default_certs()
            ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN  # a leaf certificate may be its own trust anchor
            self._tls = ctx
        try:
            actor = f"cli {getpass.getuser()}@{socket.gethostname()}"
        except (KeyError, OSError):
            actor = "cli"
        self._headers = {"Authorization": f"Bearer {self.token}", "X-Kagemusha-Actor": actor,
                         "Accept": "application/json"}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Nothing stays open between requests; kept for the context-manager protocol."""

    def nodes(self) -> Iterator[tuple[str, str]]:
        """``(node, base URL)`` in the order they are tried: the config's order."""
        for n in self.config.nodes:
            yield n.name, f"{self.scheme}://{n.address}"

    def get(self, path: str, *, timeout: float | None = None) -> Any:
        """GET ``path`` from the first node that answers; the decoded JSON.

        Raises:
            HttpError: a node answered with an error (401, 404, 422, 409, ...).
            ApiError: no node answered.
        """
        return self._call("GET", path, None, timeout)

    def post(self, path: str, body: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """POST ``body`` (JSON) to ``path`` on the first node that takes the connection.

        Raises:
            HttpError: the node answered with an error.
            ApiError: no node took the connection, or the one that did was lost mid-request.
        """
        return self._call("POST", path, body, timeout)

    def get_text(self, path: str) -> str:
        """GET a text resource (``/metrics``)."""
        result = self._call("GET", path, None, None, as_text=True)
        assert isinstance(result, str)
        return result

    def _call(self, method: str, path: str, body: dict[str, Any] | None, timeout: float | None,
              *, as_text: bool = False) -> Any:
        tried: list[str] = []
        read_timeout = timeout if timeout is not None else READ_TIMEOUT
        for (node, base), n in zip(self.nodes(), self.config.nodes, strict=True):
            r = self._send(method, n.address, path, body, read_timeout, node, base, tried)
            if r is None:
                continue
            if r.status_code == 503 and method == "GET":
                tried.append(f"{node}: {_detail(r)}")  # e.g. that agent cannot reach the store: ask the next
                continue
            if r.status_code == 401:
                raise HttpError(401, f"the API on {node} ({base}) refused the token: {_detail(r)}", node)
            if r.status_code >= 400:
                raise HttpError(r.status_code, _detail(r), node)
            return r.text if as_text else r.json()
        raise ApiError(f"no agent API answered ({'; '.join(tried)})")

    def _connect(self, address: str) -> http.client.HTTPConnection:
        import http.client

        if self._tls is not None:
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                address, timeout=CONNECT_TIMEOUT, context=self._tls)
        else:
            conn = http.client.HTTPConnection(address, timeout=CONNECT_TIMEOUT)
        try:
            conn.connect()  # TCP and, with TLS, the handshake and the certificate check
        except (OSError, http.client.HTTPException) as exc:
            conn.close()
            raise _NotSent(_why(exc)) from None
        return conn

    def _send(self, method: str, address: str, path: str, body: dict[str, Any] | None, read_timeout: float,
              node: str, base: str, tried: list[str]) -> _Response | None:
        """One request; ``None`` (and a note in ``tried``) when it could not be sent."""
        import http.client

        try:
            conn = self._connect(address)
        except _NotSent as exc:
            tried.append(f"{node} at {base}: {exc}")
            return None
        try:
            assert conn.sock is not None
            conn.sock.settimeout(read_timeout)
            headers = dict(self._headers)
            data = None
            if body is not None:
                data = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=headers)
            resp = conn.getresponse()
            return _Response(resp.status, resp.reason, resp.read())
        except (OSError, http.client.HTTPException) as exc:
            if method == "GET":
                tried.append(f"{node} at {base}: {_why(exc)}")
                return None
            raise ApiError(f"lost the connection to {node} at {base} during the request ({_why(exc)}); "
                           "the request may have been carried out: check `kagemusha status`") from None
        finally:
            conn.close()


def _why(exc: BaseException) -> str:
    import socket
    import ssl

    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message or exc.reason})"
    msg = str(exc) or type(exc).__name__
    if "Connection refused" in msg:
        return "connection refused"
    return msg


def api_call(config: Config, fn: Callable[[ApiClient], T]) -> T:
    """Run ``fn`` with a client; map failures to the CLI's exit codes (2: bad request, 1: failed) and one line."""
    from kagemusha.cli._common import fail

    try:
        with ApiClient(config) as api:
            return fn(api)
    except HttpError as exc:
        fail(str(exc), 2 if exc.status in (400, 404, 422) else 1)
    except ApiError as exc:
        fail(str(exc))


def through(config: Config, via_api: Callable[[ApiClient], T],
            via_store: Callable[[ClusterControl], Awaitable[T]], *, by: str = "cli") -> T:
    """Do one CLI operation through the API when the cluster has a token, else on the store directly."""
    if uses_api(config):
        return api_call(config, via_api)
    from kagemusha.cli._common import run
    from kagemusha.control import ClusterControl

    async def go() -> T:
        async with ClusterControl.open(config, by=by) as ctl:
            return await via_store(ctl)

    return run(go)

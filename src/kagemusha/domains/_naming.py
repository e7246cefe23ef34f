"""The domain's naming service (the seed's ORB name server on ``NameServicePort``).

``GET /names/<name>`` answers the URL of a named service. URLs are built when asked, from the
port the name refers to and the advertised host (``domain.advertised.host``: the VIP in a
cluster), so the stored state (``state/names.json``) names no physical host and a standby that
mounts the same disk serves the same names (why the seed deletes ``namesv.ndf`` and sets
``LogicalHostname``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kagemusha.domains._asgi import Receive, Scope, Send, authorize, read_json_body, send_json
from kagemusha.domains._auth import Authenticator
from kagemusha.domains._layout import read_json, write_json_atomic
from kagemusha.domains._properties import (
    KEY_ADMIN_PORT,
    KEY_HTTP_PORT,
    KEY_HTTPS_PORT,
    KEY_NAMING_PORT,
    DomainProperties,
    url_host,
)

__all__ = ["builtin_names", "make_naming_app"]


def builtin_names(props: DomainProperties) -> dict[str, dict[str, Any]]:
    """Names every domain serves: its application (HTTP and HTTPS), its admin API and the name service."""
    names: dict[str, dict[str, Any]] = {}
    if props.http_port:
        names[props.name] = {"port_key": KEY_HTTP_PORT, "path": "/"}
    if props.https_port:
        names[f"{props.name}/https"] = {"port_key": KEY_HTTPS_PORT, "path": "/", "scheme": "https"}
        names.setdefault(props.name, names[f"{props.name}/https"])
    names[f"{props.name}/admin"] = {"port_key": KEY_ADMIN_PORT, "path": "/"}
    if props.naming_port is not None:
        names["NameService"] = {"port_key": KEY_NAMING_PORT, "path": "/names"}
    return names


def _entry(data: Any, props: DomainProperties) -> dict[str, Any]:
    """A bound name from a PUT body: ``{"port": 1234}`` or ``{"port_key": KEY}``, ``path``, ``scheme``.

    Raises:
        ValueError: what is wrong, naming the field.
    """
    if not isinstance(data, dict):
        raise ValueError("body: expected a JSON object")  # noqa: TRY004 - answered 422
    entry: dict[str, Any] = {}
    port = data.get("port")
    if port is not None:
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise ValueError("port: expected an integer 1-65535")
        entry["port"] = port
    key = data.get("port_key")
    if key is not None:
        if not isinstance(key, str):
            raise ValueError("port_key: expected a string")
        entry["port_key"] = key
    if port is None and key not in props.ports:
        raise ValueError("give 'port' or the 'port_key' of a domain port")
    for field, default in (("path", "/"), ("scheme", "http")):
        value = data.get(field, default)
        if not isinstance(value, str):
            raise ValueError(f"{field}: expected a string")  # noqa: TRY004 - answered 422
        entry[field] = value
    return entry


def make_naming_app(props: DomainProperties, names_file: Path, auth: Authenticator) -> Any:
    """The naming service ASGI app.

    Args:
        props: the domain's properties (ports, advertised host).
        names_file: ``state/names.json`` (registered names: ``{"port_key"|"port", "path", "scheme"}``).
        auth: the admin credentials; registering and removing names needs them.
    """

    def stored() -> dict[str, dict[str, Any]]:
        data = read_json(names_file)
        return data if isinstance(data, dict) else {}

    def host_for(scope: Scope) -> str:
        if props.advertised:
            return props.advertised
        # No VIP configured: advertise the address the client used to reach us.
        for k, v in scope.get("headers", ()):
            if k == b"host":
                host = bytes(v).decode("latin-1")
                if host.startswith("["):
                    return host[: host.find("]") + 1]
                return host.rsplit(":", 1)[0]
        return props.hostname or "localhost"

    def url_of(entry: dict[str, Any], host: str) -> str | None:
        port = entry.get("port")
        if port is None and entry.get("port_key"):
            port = props.ports.get(str(entry["port_key"]))
        if port is None:
            return None
        path = str(entry.get("path") or "/")
        if not path.startswith("/"):
            path = "/" + path
        return f"{entry.get('scheme') or 'http'}://{url_host(host)}:{port}{path}"

    def table() -> dict[str, dict[str, Any]]:
        return {**builtin_names(props), **stored()}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = str(scope["path"])  # NB: already percent-decoded by the server (ASGI); never twice
        method = scope["method"]
        if path in ("/names", "/names/"):
            if method != "GET":
                await send_json(send, 405, {"detail": "method not allowed"})
                return
            host = host_for(scope)
            await send_json(send, 200, {n: url_of(e, host) for n, e in sorted(table().items())})
            return
        if not path.startswith("/names/"):
            await send_json(send, 404, {"detail": "not found"})
            return
        name = path[len("/names/") :]
        if method == "GET":
            entry = table().get(name)
            url = url_of(entry, host_for(scope)) if entry is not None else None
            if url is None:
                await send_json(send, 404, {"detail": f"name {name!r} is not bound"})
            else:
                await send_json(send, 200, {"name": name, "url": url})
        elif method == "PUT":
            if not await authorize(auth, scope, send):
                return
            try:
                entry = _entry(await read_json_body(receive), props)
            except ValueError as exc:
                await send_json(send, 422, {"detail": str(exc)})
                return
            data = stored()
            data[name] = entry
            write_json_atomic(names_file, data)
            await send_json(send, 200, {"name": name, "bound": "yes"})
        elif method == "DELETE":
            if not await authorize(auth, scope, send):
                return
            data = stored()
            if data.pop(name, None) is None:
                await send_json(send, 404, {"detail": f"name {name!r} is not bound"})
                return
            write_json_atomic(names_file, data)
            await send_json(send, 200, {"name": name, "bound": "no"})
        else:
            await send_json(send, 405, {"detail": "method not allowed"})

    return app

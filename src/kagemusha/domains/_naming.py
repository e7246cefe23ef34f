"""The domain's naming service (the seed's ORB name server on ``NameServicePort``).

``GET /names/<name>`` answers the URL of a named service. URLs are built when asked, from the
port the name refers to and the advertised host (``domain.advertised.host``: the VIP in a
cluster), so the stored state (``state/names.json``) names no physical host and a standby that
mounts the same disk serves the same names (why the seed deletes ``namesv.ndf`` and sets
``LogicalHostname``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from pydantic import BaseModel, Field

from kagemusha.domains._layout import read_json, write_json_atomic
from kagemusha.domains._properties import (
    KEY_ADMIN_PORT,
    KEY_HTTP_PORT,
    KEY_NAMING_PORT,
    DomainProperties,
    url_host,
)

__all__ = ["builtin_names", "make_naming_app"]


def builtin_names(props: DomainProperties) -> dict[str, dict[str, Any]]:
    """Names every domain serves: its application, its admin API and the name service itself."""
    names: dict[str, dict[str, Any]] = {
        props.name: {"port_key": KEY_HTTP_PORT, "path": "/"},
        f"{props.name}/admin": {"port_key": KEY_ADMIN_PORT, "path": "/"},
    }
    if props.naming_port is not None:
        names["NameService"] = {"port_key": KEY_NAMING_PORT, "path": "/names"}
    return names


class Entry(BaseModel):
    """A bound name: a port (or the key of one of the domain's ports) and a path."""

    port: int | None = Field(default=None, ge=1, le=65535)
    port_key: str | None = None
    path: str = "/"
    scheme: str = "http"


def make_naming_app(props: DomainProperties, names_file: Any, auth: Callable[..., str]) -> Any:
    """The naming service ASGI app (FastAPI).

    Args:
        props: the domain's properties (ports, advertised host).
        names_file: ``state/names.json`` (registered names: ``{"port_key"|"port", "path", "scheme"}``).
        auth: the admin basic-auth dependency; registering and removing names needs it.
    """
    app = FastAPI(title=f"kagemusha naming service ({props.name})", docs_url=None, redoc_url=None)

    def stored() -> dict[str, dict[str, Any]]:
        data = read_json(names_file)
        return data if isinstance(data, dict) else {}

    def host_for(request: Request) -> str:
        if props.advertised:
            return props.advertised
        # No VIP configured: advertise the address the client used to reach us.
        host = request.headers.get("host", "")
        if host.startswith("["):
            return host[: host.find("]") + 1]
        return host.rsplit(":", 1)[0] if host else (props.hostname or "localhost")

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

    @app.get("/names")
    def list_names(request: Request) -> dict[str, str | None]:
        host = host_for(request)
        return {name: url_of(entry, host) for name, entry in sorted(table().items())}

    @app.get("/names/{name:path}")
    def resolve(name: str, request: Request) -> dict[str, str]:
        entry = table().get(name)
        url = url_of(entry, host_for(request)) if entry is not None else None
        if url is None:
            raise HTTPException(status_code=404, detail=f"name {name!r} is not bound")
        return {"name": name, "url": url}

    @app.put("/names/{name:path}", dependencies=[Depends(auth)])
    def bind(name: str, entry: Entry) -> dict[str, str]:
        if entry.port is None and entry.port_key not in props.ports:
            raise HTTPException(status_code=422, detail="give 'port' or the 'port_key' of a domain port")
        data = stored()
        data[name] = entry.model_dump(exclude_none=True)
        write_json_atomic(names_file, data)
        return {"name": name, "bound": "yes"}

    @app.delete("/names/{name:path}", dependencies=[Depends(auth)])
    def unbind(name: str) -> dict[str, str]:
        data = stored()
        if data.pop(name, None) is None:
            raise HTTPException(status_code=404, detail=f"name {name!r} is not bound")
        write_json_atomic(names_file, data)
        return {"name": name, "bound": "no"}

    return app

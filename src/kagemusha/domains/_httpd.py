"""A deliberately small HTTP/1.1 server for the domain master's own APIs (admin API, naming service).

One request per connection (``Connection: close``), ``Content-Length`` bodies only (no chunked
uploads: 411), request head at most 16 KiB (431), body at most 64 KiB (413), 10 s to send a
request (then the connection is dropped). It runs plain ASGI apps (``http`` scopes only).

NB: why not uvicorn here: importing uvicorn imports click as well, and the master would pay
that on every domain start, on the failover path, for a handful of tiny routes. The
application itself is served by uvicorn (``_appserver``); this serves only the master's APIs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

from kagemusha._aio import within

__all__ = ["serve"]

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
REQUEST_TIMEOUT = 10.0


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


async def _respond_plain(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status} {_reason(status)}\r\ncontent-type: text/plain\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


async def _read_request(reader: asyncio.StreamReader) -> tuple[bytes, list[tuple[bytes, bytes]], bytes] | int:
    """``(request line, headers, body)`` or an HTTP status to refuse with."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        return 431
    except asyncio.IncompleteReadError:
        return 0  # the client went away: answer nothing
    lines = head[:-4].split(b"\r\n")
    headers: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not name or name != name.strip():
            return 400
        headers.append((name.lower(), value.strip()))
    fields = dict(headers)
    if b"transfer-encoding" in fields:
        return 411
    try:
        length = int(fields.get(b"content-length", b"0"))
    except ValueError:
        return 400
    if length < 0:
        return 400
    if length > MAX_BODY:
        return 413
    try:
        body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        return 0
    return lines[0], headers, body


async def _handle(app: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        try:
            request = await within(_read_request(reader), REQUEST_TIMEOUT)
        except TimeoutError:
            return
        if isinstance(request, int):
            if request:
                await _respond_plain(writer, request, _reason(request))
            return
        line, headers, body = request
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            await _respond_plain(writer, 400, "Bad Request")
            return
        method, target, version = parts
        raw_path, _, query = target.partition(b"?")
        peer = writer.get_extra_info("peername") or ("?", 0)
        here = writer.get_extra_info("sockname") or ("?", 0)
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": version[5:].decode("ascii", "replace"),
            "method": method.decode("ascii", "replace"),
            "scheme": "http",
            "path": unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": (str(peer[0]), int(peer[1])),
            "server": (str(here[0]), int(here[1])),
        }
        sent_body = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        started: dict[str, Any] = {}

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                started.update(message)
                status = int(message["status"])
                head = [f"HTTP/1.1 {status} {_reason(status)}".encode()]
                for k, v in message.get("headers", ()):
                    if bytes(k).lower() != b"connection":
                        head.append(bytes(k) + b": " + bytes(v))
                head.append(b"connection: close")
                writer.write(b"\r\n".join(head) + b"\r\n\r\n")
            elif message["type"] == "http.response.body":
                writer.write(bytes(message.get("body", b"")))
                await writer.drain()

        try:
            await app(scope, receive, send)
        except Exception:
            import logging

            logging.getLogger("kagemusha.domain").exception(
                "request %s %s failed", scope["method"], scope["path"]
            )
            if not started:
                await _respond_plain(writer, 500, "Internal Server Error")
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve(app: Any, sock: socket.socket, *, stop: asyncio.Event) -> None:
    """Serve ``app`` on the listening ``sock`` until ``stop`` is set; then stop accepting and return."""
    server = await asyncio.start_server(lambda r, w: _handle(app, r, w), sock=sock, limit=MAX_HEAD)
    try:
        await stop.wait()
    finally:
        server.close()

"""Logging: one structured line per decision; JSON when stdout is not a terminal.

Records go through a queue to a listener thread, so logging never blocks the
agent's event loop. Call sites pass structured fields in ``extra={"kv": {...}}``.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import queue
import sys
import time
from typing import Any

__all__ = ["kv", "setup_logging"]

_listener: logging.handlers.QueueListener | None = None


def kv(**fields: Any) -> dict[str, Any]:
    """``log.info("decision", extra=kv(decision="start", group="g"))``."""
    return {"kv": fields}


class _Formatter(logging.Formatter):
    def __init__(self, as_json: bool, node: str | None) -> None:
        super().__init__()
        self.as_json = as_json
        self.node = node

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = dict(getattr(record, "kv", {}) or {})
        msg = record.getMessage()
        if self.as_json:
            out: dict[str, Any] = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                "level": record.levelname.lower(),
                "logger": record.name,
            }
            if self.node:
                out["node"] = self.node
            out["msg"] = msg
            out.update(fields)
            if record.exc_info:
                out["exc"] = self.formatException(record.exc_info)
            return json.dumps(out, default=str)
        parts = [time.strftime("%H:%M:%S", time.localtime(record.created)) + f".{int(record.msecs):03d}", record.levelname[0]]
        if self.node:
            parts.append(f"[{self.node}]")
        parts.append(msg)
        parts.extend(f'{k}="{v}"' if isinstance(v, str) and (" " in v or not v) else f"{k}={v}" for k, v in fields.items())
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(*, node: str | None = None, as_json: bool | None = None, level: int = logging.INFO) -> None:
    """Configure the root logger once for a process (the agent or the CLI)."""
    global _listener
    if as_json is None:
        as_json = not sys.stdout.isatty() and os.environ.get("KAGEMUSHA_LOG_FORMAT", "json") != "text"
    if os.environ.get("KAGEMUSHA_LOG_FORMAT") == "text":
        as_json = False
    handler: logging.Handler
    if os.environ.get("JOURNAL_STREAM") and os.environ.get("INVOCATION_ID"):
        handler = logging.StreamHandler(sys.stdout)  # journald captures stdout under systemd
    else:
        handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter(as_json, node))
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(q)]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "uvicorn.access", "asyncio", "pyroute2"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if _listener is not None:
        _listener.stop()
    _listener = logging.handlers.QueueListener(q, handler)
    _listener.start()


def stop_logging() -> None:
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None

"""The build manifest: everything ``build`` changed on a node, so ``uninstall`` removes exactly that.

One JSON file per cluster under ``<state dir>/procedure/<cluster>.json`` (state dir:
``--state-dir``, else ``$KAGEMUSHA_HOME``, else ``/var/lib/kagemusha``). It is written
atomically after every change it records, *before* the change is made where the change can be
undone blindly (a directory that ``uninstall`` removes only when empty) and right after it
otherwise, so a build killed at any moment leaves a manifest that names all it did.

Entries (``kind``):

- ``dir``: a directory build created (``tree``: removed with its contents, e.g. the domain
  registry or the agent's state directory; otherwise only when empty);
- ``file``: a file build wrote (removed);
- ``registry``: a domain or domains root registered, or the admin settings build set (with
  the values before);
- ``store-key``: a key build put into the cluster store;
- ``unit``: a systemd unit written and enabled;
- ``process``: the agent started with ``--service none`` (pid and start time).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["Manifest"]


class Manifest:
    """A node's record of one cluster's build (see the module docstring)."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    @classmethod
    def open(cls, home: Path, cluster: str, node: str) -> Manifest:
        path = home / "procedure" / f"{cluster}.json"
        data: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(path.read_text())
            if isinstance(loaded, dict):
                data = loaded
        data.setdefault("cluster", cluster)
        data.setdefault("node", node)
        data.setdefault("steps", {})
        data.setdefault("entries", [])
        return cls(path, data)

    @property
    def exists(self) -> bool:
        return self.path.is_file()

    @property
    def entries(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = self.data["entries"]
        return out

    def entries_of(self, step: str) -> list[dict[str, Any]]:
        return [e for e in self.entries if e.get("step") == step]

    def has(self, **match: Any) -> bool:
        return any(all(e.get(k) == v for k, v in match.items()) for e in self.entries)

    def record(self, step: str, kind: str, **fields: Any) -> None:
        """Add an entry (once) and save."""
        entry = {"step": step, "kind": kind, **fields}
        if entry not in self.entries:
            self.entries.append(entry)
            self.save()

    def forget(self, entry: dict[str, Any]) -> None:
        with contextlib.suppress(ValueError):
            self.entries.remove(entry)
        self.save()

    def is_done(self, step: str) -> bool:
        return step in self.data["steps"]

    def mark_done(self, step: str, detail: str) -> None:
        self.data["steps"][step] = {"at": time.time(), "detail": detail}
        self.save()

    def unmark(self, step: str) -> None:
        self.data["steps"].pop(step, None)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(self.data, fh, indent=2, sort_keys=True)
                fh.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

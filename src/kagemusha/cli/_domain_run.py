"""The bodies of ``kagemusha domain list``, ``start`` and ``stop``, and the domain commands' failure lines.

Typer-free (issue 12): ``cli/domain.py`` declares the commands with typer and calls these; the
fast path (``cli/_fast.py``) calls them directly for a plain invocation, so the seed's
``start.sh`` (``otxadmin start-domain``) does not import typer and pydantic before the domain
starts. The domain library itself is imported inside each function, when it runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from kagemusha.errors import ConfigError, KagemushaError

__all__ = ["failure_lines", "list_domains", "start", "stop"]


def failure_lines(exc: Exception) -> list[str] | None:
    """The stderr lines (without ``kagemusha: ``) of a domain command that failed with ``exc``.

    ``None``: not an expected failure, with ``$KAGEMUSHA_DEBUG`` set (the caller re-raises it
    for a traceback). Otherwise the command exits 1 after printing the lines.
    """
    if isinstance(exc, ConfigError):
        return [f"{loc}: {msg}" if loc else msg for loc, msg in exc.errors]
    if isinstance(exc, KagemushaError):
        return [str(exc)]
    if isinstance(exc, OSError):
        return [f"{str(exc.filename) + ': ' if exc.filename else ''}{exc.strerror or exc}"]
    if os.environ.get("KAGEMUSHA_DEBUG"):
        return None
    return [f"internal error: {exc.__class__.__name__}: {exc} (set KAGEMUSHA_DEBUG=1 for a traceback)"]


def print_failure(lines: list[str]) -> None:
    for line in lines:
        print(f"kagemusha: {line}", file=sys.stderr)


def list_domains(domaindir: Path | None) -> None:
    """``kagemusha domain list``: the domains and their states."""
    from kagemusha.domains import list_domains

    infos = list_domains(domaindir)
    print(f"List of domains{f' in {domaindir}' if domaindir else ''}:")
    for info in infos:
        print(f"{info.name} {info.state}")


def start(name: str, domaindir: Path | None, *, adminonly: bool, timeout: float) -> None:
    """``kagemusha domain start``: returns once the domain's application answers."""
    from kagemusha.domains import start_domain

    start_domain(name, domaindir, wait=timeout, adminonly=adminonly)
    print(f"Domain {name} started.")


def stop(name: str, domaindir: Path | None, *, force: bool, wait_timeout: float) -> None:
    """``kagemusha domain stop``: graceful, with ``force`` every process killed after ``wait_timeout``."""
    from kagemusha.domains import stop_domain

    stop_domain(name, domaindir, force=force, wait_timeout=wait_timeout)
    print(f"Domain {name} stopped.")

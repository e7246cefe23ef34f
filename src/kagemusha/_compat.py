"""A drop-in ``otxadmin``: the seed's scripts call ``/opt/WebOTX/bin/otxadmin`` and run unmodified.

``kagemusha install-compat --prefix /opt/WebOTX`` writes ``/opt/WebOTX/bin/otxadmin``, a
three-line shell launcher (``exec <python> -m kagemusha._compat otxadmin "$@"``) that carries a
marker line. :func:`otxadmin` takes the seed's verbs and flags exactly as the seed's scripts
and chapter 2 write them and runs the matching ``kagemusha domain`` command:

=========================================================  ==========================================
otxadmin                                                   kagemusha domain
=========================================================  ==========================================
``start-domain [--domaindir D] [--adminonly] NAME``         ``start [--domaindir D] [--adminonly] NAME``
``stop-domain [--domaindir D] [--force] [--wait_timeout N] NAME``  ``stop ...`` (same flags)
``create-domain --user U --password P --port N --file=F``   ``create --user U --port N --file F ...``
``delete-domain --user U --password P --port N NAME``       ``delete --user U NAME``
``list-domains [--domaindir D]``                            ``list [--domaindir D]``
``set [--domaindir D] [NAME] KEY=VALUE ...``                ``set NAME KEY=VALUE ... [--domaindir D]``
=========================================================  ==========================================

Both ``--opt value`` and ``--opt=value`` are accepted. ``--user``/``--password``/``--port``/
``--host`` on the other verbs (otxadmin's connection to the admin domain) are accepted and not
needed. ``set`` without a domain name picks the domain whose ``domain.admin.port`` is ``--port``
(how otxadmin addresses a domain). NB: ``--password`` is handed on through the environment
(``KAGEMUSHA_ADMIN_PASSWORD``), never on a command line, and is never logged or printed.

``kagemusha install-compat --remove --prefix DIR`` removes exactly what install wrote: the
launcher (only if it carries the marker) and the directories install created, if empty.
Install refuses to overwrite a file it did not write.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from kagemusha.errors import ConfigError, DomainError

__all__ = ["MARKER", "install_compat", "main", "otxadmin_argv", "remove_compat"]

MARKER = "# kagemusha-compat: written by `kagemusha install-compat`; removed by `kagemusha install-compat --remove`"
_DIRS_PREFIX = "# kagemusha-compat-created-dirs: "
VERBS = ("start-domain", "stop-domain", "create-domain", "delete-domain", "list-domains", "set")
_VALUE_OPTS = frozenset(
    {
        "domaindir",
        "wait_timeout",
        "wait-timeout",
        "user",
        "password",
        "port",
        "host",
        "file",
        "timeout",
        "passwordfile",
    }
)
_FLAG_OPTS = frozenset({"force", "adminonly", "terse", "echo", "secure", "interactive"})


class UsageError(DomainError):
    """otxadmin was called with a verb or flag it does not know (exit 2)."""


# -- the launcher ----------------------------------------------------------------------------------


def _launcher_text(python: str, created: list[str]) -> str:
    return (
        "#!/bin/sh\n"
        f"{MARKER}\n"
        f"{_DIRS_PREFIX}{json.dumps(created)}\n"
        "# WebOTX AS otxadmin, mapped onto `kagemusha domain` (see docs/domains.md, 'A drop-in otxadmin').\n"
        f'exec {shlex.quote(python)} -m kagemusha._compat otxadmin "$@"\n'
    )


def _read_ours(path: Path) -> list[str] | None:
    """The directories recorded in our launcher at ``path``; None when the file is not ours."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            head = [fh.readline() for _ in range(3)]
    except OSError:
        return None
    if len(head) < 3 or head[1].rstrip("\n") != MARKER or not head[2].startswith(_DIRS_PREFIX):
        return None
    try:
        dirs = json.loads(head[2][len(_DIRS_PREFIX) :])
    except ValueError:
        return []
    return [str(d) for d in dirs] if isinstance(dirs, list) else []


def install_compat(prefix: str | Path, *, python: str | None = None) -> Path:
    """Write ``PREFIX/bin/otxadmin`` (mode 0755). Rewriting our own launcher is fine (idempotent).

    Returns:
        The launcher's path.

    Raises:
        ConfigError: ``prefix`` is not absolute, or the path exists and was not written by us.
    """
    root = Path(prefix)
    if not root.is_absolute():
        raise ConfigError([("--prefix", f"must be an absolute directory, got {str(prefix)!r}")])
    target = root / "bin" / "otxadmin"
    created: list[str] = []
    if target.exists() or target.is_symlink():
        ours = _read_ours(target) if target.is_file() and not target.is_symlink() else None
        if ours is None:
            raise ConfigError(
                [
                    (
                        str(target),
                        "exists and was not written by kagemusha install-compat; refusing to overwrite it",
                    )
                ]
            )
        created = ours
    else:
        missing = []
        for d in (root, root / "bin"):
            if not d.exists():
                missing.append(d)
        for d in missing:
            d.mkdir(mode=0o755)
            created.append(str(d))
    tmp = target.with_name(f".otxadmin.kagemusha-{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o755)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(_launcher_text(python or sys.executable, created))
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target


def remove_compat(prefix: str | Path) -> list[Path]:
    """Remove what :func:`install_compat` wrote under ``prefix``; returns the paths removed.

    Raises:
        ConfigError: ``PREFIX/bin/otxadmin`` exists but was not written by us (left alone).
    """
    root = Path(prefix)
    if not root.is_absolute():
        raise ConfigError([("--prefix", f"must be an absolute directory, got {str(prefix)!r}")])
    target = root / "bin" / "otxadmin"
    if not (target.exists() or target.is_symlink()):
        return []
    created = _read_ours(target) if target.is_file() and not target.is_symlink() else None
    if created is None:
        raise ConfigError([(str(target), "was not written by kagemusha install-compat; leaving it alone")])
    target.unlink()
    removed = [target]
    for d in sorted(created, key=len, reverse=True):  # deepest first; only if empty
        try:
            Path(d).rmdir()
            removed.append(Path(d))
        except OSError:
            pass
    return removed


# -- otxadmin ------------------------------------------------------------------------------------


def _parse(argv: Sequence[str]) -> tuple[str, dict[str, str], set[str], list[str]]:
    verb = ""
    opts: dict[str, str] = {}
    flags: set[str] = set()
    positional: list[str] = []
    i = 0
    args = list(argv)
    while i < len(args):
        a = args[i]
        i += 1
        if a.startswith("--") and len(a) > 2:
            name, eq, value = a[2:].partition("=")
            if name in _FLAG_OPTS:
                if eq:
                    raise UsageError(f"otxadmin: --{name} takes no value")
                flags.add(name)
            elif name in _VALUE_OPTS:
                if not eq:
                    if i >= len(args):
                        raise UsageError(f"otxadmin: --{name} needs a value")
                    value = args[i]
                    i += 1
                opts["wait_timeout" if name == "wait-timeout" else name] = value
            else:
                raise UsageError(f"otxadmin: unknown option --{name}")
        elif not verb:
            verb = a
        else:
            positional.append(a)
    return verb, opts, flags, positional


def _domain_by_admin_port(port: str, domaindir: str | None) -> str:
    from kagemusha.domains import list_domains
    from kagemusha.domains._layout import NodeRegistry
    from kagemusha.domains._properties import load_properties

    reg = NodeRegistry.from_env()
    for info in list_domains(domaindir, registry=reg):
        if info.name == "admin":
            continue
        try:
            props = load_properties(reg.locate(info.name, domaindir).properties)
        except (ConfigError, DomainError):
            continue
        if str(props.admin_port) == port.strip():
            return info.name
    raise DomainError(f"set: no domain has domain.admin.port {port} (--port)")


def otxadmin_argv(argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The ``kagemusha domain`` arguments and extra environment for an otxadmin command line.

    Raises:
        UsageError: unknown verb or option, or a missing domain name.
    """
    verb, opts, flags, pos = _parse(argv)
    env: dict[str, str] = {}
    if "password" in opts:
        env["KAGEMUSHA_ADMIN_PASSWORD"] = opts["password"]
    if "passwordfile" in opts:  # otxadmin's --passwordfile: AS_ADMIN_PASSWORD=... lines
        try:
            for line in Path(opts["passwordfile"]).read_text(encoding="utf-8").splitlines():
                key, _, value = line.partition("=")
                if key.strip() in ("AS_ADMIN_PASSWORD", "AS_ADMIN_ADMINPASSWORD"):
                    env["KAGEMUSHA_ADMIN_PASSWORD"] = value.strip()
        except OSError as exc:
            raise DomainError(
                f"otxadmin: --passwordfile {opts['passwordfile']}: {exc.strerror or exc}"
            ) from exc
    dd = ["--domaindir", opts["domaindir"]] if "domaindir" in opts else []

    def one_name() -> str:
        if len(pos) != 1:
            raise UsageError(f"otxadmin {verb}: expected one domain name, got {len(pos)} ({' '.join(pos)})")
        return pos[0]

    if verb == "start-domain":
        return ["start", *dd, *(["--adminonly"] if "adminonly" in flags else []), one_name()], env
    if verb == "stop-domain":
        extra = ["--force"] if "force" in flags else []
        if "wait_timeout" in opts:
            extra += ["--wait_timeout", opts["wait_timeout"]]
        return ["stop", *dd, *extra, one_name()], env
    if verb == "create-domain":
        if "file" not in opts:
            raise UsageError("otxadmin create-domain: --file=<domain properties> is required")
        out = ["create", "--file", opts["file"], *dd]
        if "user" in opts:
            out += ["--user", opts["user"]]
        if "port" in opts:
            out += ["--port", opts["port"]]
        return [*out, one_name()], env
    if verb == "delete-domain":
        out = ["delete", *dd]
        if "user" in opts:
            out += ["--user", opts["user"]]
        return [*out, one_name()], env
    if verb == "list-domains":
        if pos:
            raise UsageError(f"otxadmin list-domains: unexpected argument {pos[0]!r}")
        return ["list", *dd], env
    if verb == "set":
        names = [p for p in pos if "=" not in p]
        pairs = [p for p in pos if "=" in p]
        if not pairs:
            raise UsageError("otxadmin set: expected KEY=VALUE")
        if len(names) > 1:
            raise UsageError(f"otxadmin set: expected at most one domain name, got {' '.join(names)}")
        if names:
            name = names[0]
        elif "port" in opts:
            name = _domain_by_admin_port(opts["port"], opts.get("domaindir"))
        else:
            raise UsageError("otxadmin set: name the domain, or give its admin port with --port")
        return ["set", name, *pairs, *dd], env
    if not verb:
        raise UsageError(f"otxadmin: no command given (supported: {', '.join(VERBS)})")
    raise UsageError(f"otxadmin: unknown command {verb!r} (supported: {', '.join(VERBS)})")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kagemusha._compat otxadmin ARGS``: run the matching ``kagemusha domain`` command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "otxadmin":
        print("usage: python -m kagemusha._compat otxadmin VERB [OPTIONS] [NAME]", file=sys.stderr)
        return 2
    try:
        domain_args, env = otxadmin_argv(args[1:])
    except UsageError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    except DomainError as exc:
        print(f"otxadmin: {exc}", file=sys.stderr)
        return 1
    full_env = {**os.environ, **env}
    os.execve(sys.executable, [sys.executable, "-m", "kagemusha", "domain", *domain_args], full_env)
    return 127  # pragma: no cover - execve does not return


if __name__ == "__main__":
    sys.exit(main())

"""``kagemusha install-compat --prefix DIR [--remove]``: the drop-in ``DIR/bin/otxadmin`` (kagemusha._compat)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def install_compat(
    prefix: Annotated[Path, typer.Option("--prefix", help="Where WebOTX was installed (/opt/WebOTX).")],
    remove: Annotated[bool, typer.Option("--remove", help="Remove what install-compat wrote there.")] = False,
) -> None:
    """Write PREFIX/bin/otxadmin, a launcher that maps the seed's otxadmin commands onto kagemusha domain."""
    from kagemusha._compat import install_compat as install
    from kagemusha._compat import remove_compat
    from kagemusha.errors import ConfigError

    try:
        if remove:
            removed = remove_compat(prefix)
            if not removed:
                print(f"Nothing to remove: {prefix / 'bin' / 'otxadmin'} does not exist.")
            for p in removed:
                print(f"Removed {p}")
            return
        target = install(prefix)
    except ConfigError as exc:
        for loc, msg in exc.errors:
            print(f"kagemusha: {loc}: {msg}" if loc else f"kagemusha: {msg}", file=sys.stderr)
        raise typer.Exit(1) from None
    except OSError as exc:
        print(f"kagemusha: {exc.filename or prefix}: {exc.strerror or exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    print(f"Installed {target} (otxadmin -> kagemusha domain).")


def register(app: typer.Typer) -> None:
    app.command("install-compat")(install_compat)


__all__ = ["install_compat", "register"]

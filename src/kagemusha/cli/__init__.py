"""The ``kagemusha`` command. Thin: every subcommand calls the library.

Exit codes: 0 success, 1 the operation failed (one clear line why), 2 bad usage
or invalid input (config, flags).
"""

from __future__ import annotations

from kagemusha.cli._app import app, main

__all__ = ["app", "main"]

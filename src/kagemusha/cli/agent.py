"""``kagemusha agent``: run this node's agent in the foreground."""

from __future__ import annotations

import asyncio
import os

import typer

from kagemusha.cli._common import ConfigOpt, fail, get_config, print_config_errors
from kagemusha.errors import ConfigError, StoreUnavailable


def agent(
    config: str = ConfigOpt,
    node: str = typer.Option(None, "--node", "-n", help="this node's name (default: $KAGEMUSHA_NODE)"),
    apply: bool = typer.Option(False, "--apply", help="store this file as the cluster's config if it differs"),
    no_supervisor: bool = typer.Option(
        False, "--no-supervisor", help="run without the parent that fences the node if the agent dies"
    ),
) -> None:
    """Run the node's agent in the foreground; SIGTERM leaves the cluster gracefully."""
    from kagemusha._log import setup_logging, stop_logging
    from kagemusha.agent import Agent

    cfg = get_config(config)
    node = node or os.environ.get("KAGEMUSHA_NODE") or ""
    if node not in cfg.node_names:
        fail(f'--node: "{node}" is not a node of {cfg.source} (nodes: {", ".join(cfg.node_names)})', 2)
    from kagemusha._supervisor import CHILD_ENV, child_argv, supervise

    if not no_supervisor and not os.environ.get(CHILD_ENV):
        raise typer.Exit(supervise(cfg, node, child_argv(str(cfg.source), node, apply)))
    # NB: the marker is for this process only: the scripts, domains and services the agent starts
    # must not inherit it (a `kagemusha agent` in a script would skip its supervisor, and tools that
    # look for the agent by it would find a domain instead).
    os.environ.pop(CHILD_ENV, None)
    setup_logging(node=node)
    try:
        code = asyncio.run(Agent(cfg, node, apply_config=apply).run())
    except ConfigError as exc:
        stop_logging()
        print_config_errors(exc)
        raise typer.Exit(2) from None
    except StoreUnavailable as exc:
        stop_logging()
        fail(f"cannot reach the cluster store at start-up: {exc}")
    finally:
        stop_logging()
    raise typer.Exit(code)


def register(root: typer.Typer) -> None:
    root.command("agent")(agent)

"""``kagemusha agent``: run this node's agent in the foreground."""

from __future__ import annotations

import asyncio
import os

import typer

from kagemusha.cli._common import ConfigOpt, fail, get_config


def agent(
    config: str = ConfigOpt,
    node: str = typer.Option(None, "--node", "-n", help="this node's name (default: $KAGEMUSHA_NODE)"),
) -> None:
    """Run the node's agent in the foreground; SIGTERM leaves the cluster gracefully."""
    from kagemusha._log import setup_logging, stop_logging
    from kagemusha.agent import Agent

    cfg = get_config(config)
    node = node or os.environ.get("KAGEMUSHA_NODE") or ""
    if node not in cfg.node_names:
        fail(f'--node: "{node}" is not a node of {cfg.source} (nodes: {", ".join(cfg.node_names)})', 2)
    setup_logging(node=node)
    try:
        code = asyncio.run(Agent(cfg, node).run())
    finally:
        stop_logging()
    raise typer.Exit(code)


def register(root: typer.Typer) -> None:
    root.command("agent")(agent)

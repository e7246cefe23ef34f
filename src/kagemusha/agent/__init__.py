"""The per-node agent (observe -> decide -> act) and the store layout it shares with the CLI."""

from kagemusha.agent._agent import Agent
from kagemusha.agent._layout import Snapshot, parse_snapshot, root_of

__all__ = ["Agent", "Snapshot", "parse_snapshot", "root_of"]

"""The per-node agent: observe -> decide (pure) -> act."""

from kagemusha.agent._agent import APPLIED_CONFIG, Agent

__all__ = ["APPLIED_CONFIG", "Agent"]

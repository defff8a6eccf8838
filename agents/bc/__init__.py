"""Behavior cloning: a tanh-Gaussian policy fitted to a dataset's actions (offline baseline)."""

from gymnasium import spaces

from agents.bc.bc import BC
from core.agents import AgentSpec

SPEC = AgentSpec(
    name="bc",
    algorithm=BC,
    summary="Behavior cloning (tanh-Gaussian max likelihood + entropy), the offline baseline",
    action_spaces=(spaces.Box,),
    offline=True,
)

__all__ = ["BC", "SPEC"]

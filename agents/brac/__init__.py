"""BRAC (Wu, Tucker & Nachum 2019): offline actor-critic regularized towards the behavior policy."""

from gymnasium import spaces

from agents.brac.brac import BRAC
from agents.brac.policy import BRACPolicy
from core.agents import AgentSpec

SPEC = AgentSpec(
    name="brac",
    algorithm=BRAC,
    summary="BRAC (Wu et al. 2019): offline RL, value penalty or policy regularization towards pi_b",
    action_spaces=(spaces.Box,),
    offline=True,
)

__all__ = ["BRAC", "SPEC", "BRACPolicy"]

"""Self-correcting DQN (Zhu & Rigotti, AAAI 2021) as a zoo agent."""

from gymnasium import spaces

from agents.scdqn.scdqn import SCDQN
from core.agents import AgentSpec

SPEC = AgentSpec(
    name="scdqn",
    algorithm=SCDQN,
    summary="Self-correcting DQN (Zhu & Rigotti 2021): beta=0 DQN, 1 Double DQN, 3 the paper's default",
    action_spaces=(spaces.Discrete,),
    value_based=True,
)

__all__ = ["SCDQN", "SPEC"]

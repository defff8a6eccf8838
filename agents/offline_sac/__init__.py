"""Naive offline SAC: SAC's losses on a fixed dataset, no behavior regularization (BRAC's baseline)."""

from gymnasium import spaces

from agents.offline_sac.offline_sac import OfflineSAC
from core.agents import AgentSpec

SPEC = AgentSpec(
    name="offline_sac",
    algorithm=OfflineSAC,
    summary="SAC trained on a fixed dataset without behavior regularization (offline baseline)",
    action_spaces=(spaces.Box,),
    offline=True,
)

__all__ = ["SPEC", "OfflineSAC"]

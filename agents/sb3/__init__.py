"""stable-baselines3's own algorithms as zoo agents, unchanged, so runs compare against the reference.

``zoo train sac|td3|ppo|a2c|dqn`` builds SB3's class with zoo.yaml's hyperparameters (validated
against its constructor like any agent). Their replay stays SB3's ``ReplayBuffer``, except for image
observations, where the runner swaps in ``core.replay.EpisodicReplayBuffer`` (the same transitions,
each frame stored once) because SB3's buffer would need ~56 GB for 1M Atari transitions.
"""

from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3

from core.agents import AgentSpec

ON_POLICY_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary)

SAC_SPEC = AgentSpec(
    name="sac",
    algorithm=SAC,
    summary="SB3 Soft Actor-Critic (Haarnoja et al. 2018), unchanged",
    action_spaces=(spaces.Box,),
    episodic_replay="images",
)
TD3_SPEC = AgentSpec(
    name="td3",
    algorithm=TD3,
    summary="SB3 TD3 (Fujimoto et al. 2018), unchanged",
    action_spaces=(spaces.Box,),
    episodic_replay="images",
)
PPO_SPEC = AgentSpec(
    name="ppo",
    algorithm=PPO,
    summary="SB3 PPO (Schulman et al. 2017), unchanged",
    action_spaces=ON_POLICY_SPACES,
)
A2C_SPEC = AgentSpec(
    name="a2c",
    algorithm=A2C,
    summary="SB3 A2C (Mnih et al. 2016), unchanged",
    action_spaces=ON_POLICY_SPACES,
)
DQN_SPEC = AgentSpec(
    name="dqn",
    algorithm=DQN,
    summary="SB3 DQN (Mnih et al. 2015), unchanged; target_update_interval counts env steps",
    action_spaces=(spaces.Discrete,),
    value_based=True,
    episodic_replay="images",
)

__all__ = ["A2C_SPEC", "DQN_SPEC", "PPO_SPEC", "SAC_SPEC", "TD3_SPEC"]

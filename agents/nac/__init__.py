"""NAC (Gao et al. 2018) and the baselines on its code path: DQfD, soft Q-learning, behavior cloning.

``nac``, ``soft_q`` and ``dqfd`` are one class (:class:`NAC`) whose ``loss`` the name sets; behavior
cloning of discrete actions is ``zoo train nac --set loss=bc``. ``nac_continuous`` is NAC for Box actions.
"""

from gymnasium import spaces

from agents.nac.continuous import NACContinuous
from agents.nac.nac import NAC
from core.agents import AgentSpec

SPEC = AgentSpec(
    name="nac",
    algorithm=NAC,
    summary="Normalized Actor-Critic (Gao et al. 2018): RL from imperfect demonstrations (--demos); "
    "--set loss=bc is behavior cloning on the same network",
    action_spaces=(spaces.Discrete,),
    value_based=True,
    demonstrations=True,
    hyperparameters={"loss": "nac"},
)
SOFT_Q_SPEC = AgentSpec(
    name="soft_q",
    algorithm=NAC,
    summary="Soft Q-learning from demonstrations: NAC without the gradient through V (the paper's ablation)",
    action_spaces=(spaces.Discrete,),
    value_based=True,
    demonstrations=True,
    hyperparameters={"loss": "soft_q"},
)
DQFD_SPEC = AgentSpec(
    name="dqfd",
    algorithm=NAC,
    summary="DQfD (Hester et al. 2018): double-DQN 1-step + 10-step TD, large-margin loss on demonstrations",
    action_spaces=(spaces.Discrete,),
    value_based=True,
    demonstrations=True,
    # DQfD's paper defaults (Hester et al. 2018): n = 10, margin 0.8, lambda_3 = 1e-5, epsilon 0.01.
    hyperparameters={
        "loss": "dqfd",
        "n_step_return": 10,
        "exploration_initial_eps": 0.01,
        "exploration_final_eps": 0.01,
    },
)
CONTINUOUS_SPEC = AgentSpec(
    name="nac_continuous",
    algorithm=NACContinuous,
    summary="NAC for Box actions: V by log-sum-exp over action particles drawn from a SAC-style actor",
    action_spaces=(spaces.Box,),
    demonstrations=True,
)

__all__ = ["CONTINUOUS_SPEC", "DQFD_SPEC", "NAC", "SOFT_Q_SPEC", "SPEC", "NACContinuous"]

"""The losses of NAC and of the baselines that share its code path, as plain functions of tensors.

Shapes: ``B`` transitions, ``A`` discrete actions. Every function returns the mean over the batch.
"""

from __future__ import annotations

import torch as th
from torch.nn import functional as F


def soft_value(q_values: th.Tensor, alpha: float) -> th.Tensor:
    """``V_Q(s) = alpha * logsumexp_a(Q(s, a) / alpha)``: ``[B, A]`` -> ``[B]`` (Gao et al. 2018: the soft
    value of the Boltzmann policy ``pi_Q(a|s) = exp((Q(s, a) - V_Q(s)) / alpha)``)."""
    return alpha * th.logsumexp(q_values / alpha, dim=-1)


def nac_loss(q_taken: th.Tensor, value: th.Tensor, q_target: th.Tensor, value_target: th.Tensor) -> th.Tensor:
    """NAC's surrogate loss (Gao et al. 2018, the NAC gradient), whose gradient is the paper's

        grad = (grad Q(s,a) - grad V_Q(s)) (Q(s,a) - Qhat(s,a)) + grad 1/2 (V_Q(s) - Vhat(s))^2

    :param q_taken: ``Q(s, a)`` of the batch's actions ``[B]`` (with gradient)
    :param value: ``V_Q(s)`` ``[B]`` (with gradient: the ``- grad V`` term is the normalization)
    :param q_target: ``Qhat(s, a)`` ``[B]`` (no gradient)
    :param value_target: ``Vhat(s)`` ``[B]`` (no gradient)
    """
    policy_gradient = ((q_taken - q_target).detach() * (q_taken - value)).mean()
    value_regression = 0.5 * (value - value_target.detach()).square().mean()
    return policy_gradient + value_regression


def soft_q_loss(q_taken: th.Tensor, q_target: th.Tensor) -> th.Tensor:
    """Soft Q-learning: ``1/2 (Q(s,a) - Qhat(s,a))^2``, NAC with the gradient through ``V_Q`` stopped (its
    gradient is ``grad Q (Q - Qhat)``: NAC's first term without ``- grad V``, and no ``grad V`` at all in the
    second)."""
    return 0.5 * (q_taken - q_target.detach()).square().mean()


def large_margin_loss(
    q_values: th.Tensor, actions: th.Tensor, margin: float, is_demo: th.Tensor
) -> th.Tensor:
    """DQfD's supervised loss (Hester et al. 2018, ``J_E``) on the demonstrations' transitions:
    ``max_a [Q(s, a) + l(a_E, a)] - Q(s, a_E)`` with ``l = margin`` for ``a != a_E``, else 0. Transitions
    of the agent's own replay count as 0 (the paper's lambda_2 = 0 for self-generated data).

    :param q_values: ``[B, A]``
    :param actions: the demonstrated actions ``a_E`` ``[B]`` (long)
    :param is_demo: ``[B]`` bool
    """
    margins = th.full_like(q_values, margin).scatter(1, actions[:, None], 0.0)
    per_sample = (q_values + margins).max(dim=1).values - q_values.gather(1, actions[:, None]).squeeze(1)
    return (per_sample * is_demo.to(per_sample.dtype)).mean()


def huber_td_loss(q_taken: th.Tensor, q_target: th.Tensor) -> th.Tensor:
    """DQN's Huber loss between ``Q(s, a)`` and a (detached) target, ``[B]`` each."""
    return F.smooth_l1_loss(q_taken, q_target.detach())


def cross_entropy_loss(logits: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """Behavior cloning: ``-log softmax(logits)[a]`` for the demonstrated actions ``[B]`` (long)."""
    return F.cross_entropy(logits, actions)

"""Divergence estimates D(s) between the learned policy pi and the behavior policy pi_b (BRAC, Sec. 3).

Primal estimates take both policies' distributions at the batch's states (``[B, A]`` parameters):
``kl_primal`` and ``mmd_laplacian``. Dual estimates take a learned critic's outputs ``c(s, a)`` at
policy actions (``c_p``) and dataset actions (``c_b``): ``kl_dual`` and ``w_dual``; the critic is trained
on ``dual_critic_loss`` (the negated estimate plus a gradient penalty). Every estimate is ``[B]``.
Constants follow the reference code (``behavior_regularized_offline_rl/brac/divergences.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch as th
from torch.nn import functional as F

from core.networks import TanhGaussian

CLIP_EPS = 1e-3  # actions moved inside the bounds before the other policy's density is evaluated
DUAL_EPS = 1e-8


def kl_primal(pi: TanhGaussian, pi_b: TanhGaussian, n_samples: int = 4) -> th.Tensor:
    """``KL(pi || pi_b)(s) ~ mean over a ~ pi of [log pi(a|s) - log pi_b(a|s)]`` (reparameterized).

    ``log pi`` is exact (computed from the pre-tanh sample); ``log pi_b`` is evaluated at the sample
    moved ``CLIP_EPS`` inside the bounds, where the tanh-Gaussian density is finite.
    """
    actions, log_pi = pi.rsample(n_samples)  # [n, B, A], [n, B]
    log_pi_b = pi_b.log_prob(actions, clip=CLIP_EPS)
    return (log_pi - log_pi_b).mean(dim=0)


def laplacian_kernel(x: th.Tensor, y: th.Tensor, sigma: float) -> th.Tensor:
    """``k(x_i, y_j) = exp(-||x_i - y_j||_1 / sigma)`` for samples ``[n, B, A]`` and ``[m, B, A]`` ->
    ``[n, m, B]``."""
    distance = (x[:, None] - y[None]).abs().sum(dim=-1)
    return th.exp(-distance / sigma)


def mmd_laplacian(pi: TanhGaussian, pi_b: TanhGaussian, n_samples: int = 4, sigma: float = 20.0) -> th.Tensor:
    """Squared MMD (no square root) with a Laplacian kernel between ``n_samples`` actions of each
    policy: ``E k(a, a') + E k(b, b') - 2 E k(a, b)``, ``a ~ pi`` (reparameterized), ``b ~ pi_b``."""
    policy_actions, _ = pi.rsample(n_samples)
    behavior_actions, _ = pi_b.rsample(n_samples)
    behavior_actions = behavior_actions.detach()
    k_pp = laplacian_kernel(policy_actions, policy_actions, sigma).mean(dim=(0, 1))
    k_pb = laplacian_kernel(policy_actions, behavior_actions, sigma).mean(dim=(0, 1))
    k_bb = laplacian_kernel(behavior_actions, behavior_actions, sigma).mean(dim=(0, 1))
    return k_pp + k_bb - 2.0 * k_pb


def kl_dual(c_p: th.Tensor, c_b: th.Tensor) -> th.Tensor:
    """Dual (f-divergence) estimate of KL: ``-softplus(c(s,a_b)) + log(softplus(c(s,a_p)) + eps) + 1``."""
    return -F.softplus(c_b) + th.log(F.softplus(c_p) + DUAL_EPS) + 1.0


def w_dual(c_p: th.Tensor, c_b: th.Tensor) -> th.Tensor:
    """Dual (Kantorovich) estimate of the Wasserstein distance: ``c(s, a_p) - c(s, a_b)``."""
    return c_p - c_b


DUAL_ESTIMATES: dict[str, Callable[[th.Tensor, th.Tensor], th.Tensor]] = {
    "kl_dual": kl_dual,
    "w_dual": w_dual,
}


def dual_critic_loss(
    critic: Callable[[th.Tensor, th.Tensor], th.Tensor],
    estimate: Callable[[th.Tensor, th.Tensor], th.Tensor],
    obs: th.Tensor,
    policy_actions: th.Tensor,
    behavior_actions: th.Tensor,
    penalty: float = 5.0,
) -> th.Tensor:
    """The critic maximizes the dual estimate: loss ``-E[estimate] + penalty * E[max(|grad_a c| - 1, 0)^2]``
    with the gradient taken at uniform interpolations between policy and dataset actions.

    :param critic: ``c(obs [B, O], actions [B, A]) -> [B]``
    :param estimate: :func:`kl_dual` or :func:`w_dual`
    """
    loss = -estimate(critic(obs, policy_actions), critic(obs, behavior_actions)).mean()
    mix = th.rand(obs.shape[0], 1, device=obs.device)
    interpolated = (policy_actions + mix * (behavior_actions - policy_actions)).requires_grad_(True)
    (grad,) = th.autograd.grad(critic(obs, interpolated).sum(), interpolated, create_graph=True)
    slope = th.sqrt(grad.square().sum(dim=-1) + DUAL_EPS)
    return loss + penalty * F.relu(slope - 1.0).square().mean()

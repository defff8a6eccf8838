"""Networks shared by the continuous-action offline agents (BRAC, BC, offline SAC).

- :class:`TanhGaussian`: a Gaussian squashed by tanh and rescaled to a Box's bounds, with a log-density
  that stays finite at the bounds;
- :class:`TanhGaussianActor`: MLP -> (mean, log_std), log_std squashed into ``[-5, 0]`` (BRAC's actor);
- :class:`EnsembleCritic`: ``n`` Q-networks evaluated in one batched matmul per layer;
- :class:`OfflinePolicy`: the SB3 policy holding an actor and (optionally) a Q ensemble with its target;
- :func:`behavior_cloning_losses`: max likelihood of dataset actions plus an auto-tuned entropy term.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Literal

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_flattened_obs_dim
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn
from torch.nn import functional as F
from torch.optim import optimizer as torch_optimizer

from core.errors import UsageError

LOG_STD_MIN = -5.0
LOG_STD_MAX = 0.0
MIN_CLIP = 1e-6  # float32-safe distance from +/-1 before atanh
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
TestPolicy = Literal["deterministic", "max_q"]


class TanhGaussian:
    """``offset + scale * tanh(u)``, ``u ~ N(mean, std)``; ``mean`` and ``log_std`` are ``[B, A]``.

    :param mean: mean of the pre-tanh Gaussian
    :param log_std: log standard deviation of the pre-tanh Gaussian
    :param scale: half-width of the action bounds, ``[A]``
    :param offset: centre of the action bounds, ``[A]``
    """

    def __init__(self, mean: th.Tensor, log_std: th.Tensor, scale: th.Tensor, offset: th.Tensor) -> None:
        self.mean = mean
        self.log_std = log_std
        self.scale = scale
        self.offset = offset

    def rsample(self, n: int) -> tuple[th.Tensor, th.Tensor]:
        """``n`` reparameterized samples: actions ``[n, B, A]`` and their log-density ``[n, B]``."""
        noise = th.randn((n, *self.mean.shape), device=self.mean.device, dtype=self.mean.dtype)
        pre_tanh = self.mean + self.log_std.exp() * noise
        return th.tanh(pre_tanh) * self.scale + self.offset, self._log_prob_pre_tanh(pre_tanh)

    def log_prob(self, actions: th.Tensor, clip: float = MIN_CLIP) -> th.Tensor:
        """Log-density of ``actions`` ``[..., B, A]`` -> ``[..., B]``; actions are first moved ``clip``
        inside the bounds (in units of the half-width), so the result is finite at the bounds."""
        clip = max(clip, MIN_CLIP)
        squashed = ((actions - self.offset) / self.scale).clamp(-1.0 + clip, 1.0 - clip)
        return self._log_prob_pre_tanh(th.atanh(squashed))

    def _log_prob_pre_tanh(self, pre_tanh: th.Tensor) -> th.Tensor:
        z = (pre_tanh - self.mean) * th.exp(-self.log_std)
        gaussian = (-0.5 * z.square() - self.log_std - HALF_LOG_2PI).sum(-1)
        # log|d tanh(u)/du| = log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), finite for finite u.
        log_det = (2.0 * (math.log(2.0) - pre_tanh - F.softplus(-2.0 * pre_tanh))).sum(-1)
        return gaussian - log_det - self.scale.log().sum()

    def mode(self) -> th.Tensor:
        """The deterministic action ``offset + scale * tanh(mean)``, ``[B, A]``."""
        return th.tanh(self.mean) * self.scale + self.offset


def box_bounds(action_space: spaces.Space) -> tuple[th.Tensor, th.Tensor]:
    """``(scale, offset)`` of a Box with finite bounds; anything else is a one-line UsageError."""
    if not isinstance(action_space, spaces.Box):
        raise UsageError(f"needs a Box action space, got {type(action_space).__name__}")
    if not (
        th.isfinite(th.as_tensor(action_space.low)).all()
        and th.isfinite(th.as_tensor(action_space.high)).all()
    ):
        raise UsageError("needs finite action bounds for the tanh-squashed policy")
    low = th.as_tensor(action_space.low, dtype=th.float32).flatten()
    high = th.as_tensor(action_space.high, dtype=th.float32).flatten()
    return (high - low) / 2.0, (high + low) / 2.0


class TanhGaussianActor(nn.Module):
    """MLP (ReLU) -> mean and log_std, ``log_std = -5 + 2.5 (tanh(raw) + 1)`` in ``[-5, 0]``.

    :param obs_dim: flattened observation size
    :param action_space: the Box the actions are rescaled to
    :param net_arch: hidden layer sizes
    """

    scale: th.Tensor
    offset: th.Tensor

    def __init__(self, obs_dim: int, action_space: spaces.Box, net_arch: Sequence[int]) -> None:
        super().__init__()
        scale, offset = box_bounds(action_space)
        self.net = nn.Sequential(*create_mlp(obs_dim, 2 * scale.numel(), list(net_arch), nn.ReLU))
        self.register_buffer("scale", scale)
        self.register_buffer("offset", offset)

    def forward(self, obs: th.Tensor) -> TanhGaussian:
        mean, raw_log_std = self.net(obs).chunk(2, dim=-1)
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (th.tanh(raw_log_std) + 1.0)
        return TanhGaussian(mean, log_std, self.scale, self.offset)


class EnsembleLinear(nn.Module):
    """``n`` independent linear layers applied in one batched matmul: ``[B, in]`` or ``[n, B, in]`` ->
    ``[n, B, out]``. Each member is initialized like ``nn.Linear`` (uniform, bound ``1/sqrt(in)``)."""

    def __init__(self, n: int, in_features: int, out_features: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(th.empty(n, in_features, out_features).uniform_(-bound, bound))
        self.bias = nn.Parameter(th.empty(n, 1, out_features).uniform_(-bound, bound))

    def forward(self, x: th.Tensor, detach_params: bool = False) -> th.Tensor:
        weight, bias = (
            (self.weight.detach(), self.bias.detach()) if detach_params else (self.weight, self.bias)
        )
        if x.dim() == 2:
            x = x.expand(weight.shape[0], -1, -1)
        return th.baddbmm(bias, x, weight)


class EnsembleCritic(nn.Module):
    """``n`` Q-networks MLP(concat(s, a)) -> scalar with ReLU hidden layers, evaluated together.

    :param n: ensemble size
    :param input_dim: observation size + action size
    :param net_arch: hidden layer sizes
    """

    def __init__(self, n: int, input_dim: int, net_arch: Sequence[int]) -> None:
        super().__init__()
        sizes = [input_dim, *net_arch, 1]
        self.layers = nn.ModuleList(EnsembleLinear(n, a, b) for a, b in itertools.pairwise(sizes))

    def forward(self, obs: th.Tensor, actions: th.Tensor, detach_params: bool = False) -> th.Tensor:
        """Q-values ``[n, B]`` of ``obs`` ``[B, obs_dim]`` and ``actions`` ``[B, A]``; with
        ``detach_params`` the gradient reaches the inputs only (an actor loss)."""
        x = th.cat([obs, actions], dim=-1)
        for layer in self.layers[:-1]:
            x = F.relu(layer(x, detach_params))
        return self.layers[-1](x, detach_params).squeeze(-1)


def make_adam(
    params: Sequence[nn.Parameter] | list[th.Tensor], lr: float, device: th.device
) -> th.optim.Adam:
    """Adam with torch's fused kernel where the device has one (same math, fewer kernel launches)."""
    fused_devices = getattr(torch_optimizer, "_get_fused_kernels_supported_devices", lambda: ["cuda"])()
    return th.optim.Adam(params, lr=lr, fused=device.type in fused_devices or None)


class OfflinePolicy(BasePolicy):
    """A tanh-Gaussian actor and an optional Q ensemble with its target copy.

    :param observation_space: vector observations (flattened)
    :param action_space: Box with finite bounds
    :param actor_net_arch: hidden sizes of the actor
    :param critic_net_arch: hidden sizes of each Q-network
    :param n_critics: ensemble size (0: no critic, as for behavior cloning)
    :param test_policy: what ``predict(deterministic=True)`` returns: ``deterministic`` is
        ``tanh(mean)`` rescaled; ``max_q`` samples ``test_samples`` actions and keeps the one the first
        Q-network values most
    :param test_samples: actions sampled by the ``max_q`` test policy
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        actor_net_arch: Sequence[int] = (200, 200),
        critic_net_arch: Sequence[int] = (300, 300),
        n_critics: int = 2,
        test_policy: TestPolicy = "deterministic",
        test_samples: int = 10,
    ) -> None:
        super().__init__(observation_space, action_space, squash_output=False)
        if test_policy == "max_q" and n_critics < 1:
            raise UsageError("test_policy max_q needs a Q-network (n_critics >= 1)")
        self.obs_dim = get_flattened_obs_dim(observation_space)
        self.action_dim = int(action_space.shape[0])
        self.test_policy = test_policy
        self.test_samples = test_samples
        self.actor = TanhGaussianActor(self.obs_dim, action_space, actor_net_arch)
        self.critic: EnsembleCritic | None = None
        self.critic_target: EnsembleCritic | None = None
        if n_critics > 0:
            self.critic = EnsembleCritic(n_critics, self.obs_dim + self.action_dim, critic_net_arch)
            self.critic_target = EnsembleCritic(n_critics, self.obs_dim + self.action_dim, critic_net_arch)
            self.critic_target.load_state_dict(self.critic.state_dict())
            self.critic_target.requires_grad_(False)

    def forward(self, obs: th.Tensor, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        assert isinstance(observation, th.Tensor)
        obs = observation.float().flatten(1)
        dist = self.actor(obs)
        if not deterministic:
            return dist.rsample(1)[0][0]
        if self.test_policy == "deterministic" or self.critic is None:
            return dist.mode()
        # "max_q" test policy (reference code's MaxQSoftPolicy): the best of k samples under Q_1.
        candidates, _ = dist.rsample(self.test_samples)  # [k, B, A]
        k, batch = candidates.shape[:2]
        q = self.critic(obs.repeat(k, 1), candidates.reshape(k * batch, -1))[0].view(k, batch)
        return candidates[q.argmax(dim=0), th.arange(batch, device=obs.device)]


def behavior_cloning_losses(
    dist: TanhGaussian, actions: th.Tensor, log_entropy_coef: th.Tensor, target_entropy: float, clip: float
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """Losses of tanh-Gaussian behavior cloning (BRAC's pi_b, the reference code's ``bc_agent``).

    policy loss ``E[alpha log pi(a~pi|s) - log pi(a_data|s)]`` with the dataset actions moved ``clip``
    inside the bounds; entropy coefficient loss ``-log(alpha) E[log pi + target_entropy]`` (SAC's form).

    :param dist: the policy at the batch's observations
    :param actions: dataset actions ``[B, A]``
    :param log_entropy_coef: ``log(alpha)``, a scalar parameter
    :param target_entropy: the entropy the coefficient steers to (``-|A|``)
    :param clip: distance from the bounds, in half-widths (1e-3)
    :return: policy loss, entropy coefficient loss, mean negative log-likelihood (for logging)
    """
    nll = -dist.log_prob(actions, clip=clip).mean()
    _, log_prob = dist.rsample(1)
    alpha = log_entropy_coef.detach().exp()
    policy_loss = alpha * log_prob.mean() + nll
    entropy_coef_loss = -(log_entropy_coef * (log_prob.detach() + target_entropy)).mean()
    return policy_loss, entropy_coef_loss, nll.detach()

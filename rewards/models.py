"""Reward networks ``r_hat(o, a)`` and their ensemble, from Christiano et al. 2017, "Deep RL from Human
Preferences" (arXiv 1706.03741), Sec. 2.2.3 and Appendix A: the MuJoCo MLP, the Atari CNN, and an
ensemble of bootstrapped, independently normalized members whose average is normalized again.

Differences from the paper:
- Validation: each member holds out its own random ``round(N / e)`` comparisons and trains on a
  bootstrap resample of the rest (Poisson(1) multiplicities), so its validation set never overlaps
  its training set; the paper only says 1/e of the data is held out for each predictor. The split
  persists from fit to fit and grows with the comparisons (:func:`rewards.preferences.grow_split`):
  the members keep their weights between fits, so a split drawn afresh each time would, over a run,
  train every member on every comparison (no honest validation loss, no diversity).
- L2 and its adaptive rule: see :mod:`rewards.preferences`.
- Normalization statistics are per fit, on up to ``normalization_steps`` clip steps of comparisons
  spread over all those fitted (the whole labeled history: statistics of the newest clips alone
  shrink to nothing once the policy's behavior is uniform, e.g. a pendulum that never falls, and the
  reward scale explodes); a caller with other states calls ``update_normalization``.
  ``target_std`` defaults to 1.0 (the paper normalizes to a constant std; pick the value per domain).
- Adam's learning rate (3e-4) is ours; Adam's moments are not in ``state_dict``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from torch import nn
from torch.nn import functional as F

from core.errors import UsageError
from rewards.preferences import (
    RANDOM_ANSWER_RATE,
    Comparisons,
    fit_preferences,
    grow_split,
    split_indices,
)

LEAKY_SLOPE = 0.01  # paper, Appendix A: leaky ReLU with alpha = 0.01
# predict_numpy's block-diagonal path up to this many rows (per-step rewards of a few envs).
FOLDED_MAX_ROWS = 64
# Floor of the normalization stds: members that predict a nearly constant reward on the normalization
# states are not blown up (a per-step difference of 0.01 is 0.5 logits over a 50-step clip).
MIN_STD = 1e-2
CONV_LAYERS = ((7, 3), (5, 2), (3, 1), (3, 1))  # (kernel, stride), paper Appendix A.2
ArrayOrTensor = np.ndarray | th.Tensor


def append_actions(
    features: th.Tensor, actions: th.Tensor | None, action_dim: int | None, discrete: bool
) -> th.Tensor:
    """``[B, F]`` features followed by the actions (one-hot if Discrete), or unchanged without
    ``action_dim``."""
    if action_dim is None:
        return features
    if actions is None:
        raise UsageError("this reward model takes actions; got none")
    encoded = F.one_hot(actions.long().reshape(-1), action_dim) if discrete else actions.flatten(1)
    return th.cat([features, encoded.float()], dim=1)


class RewardMLP(nn.Module):
    """``r_hat(o, a)``: MLP with leaky ReLU on ``[flatten(obs), action]`` -> one scalar per step.

    :param obs_dim: flattened observation size
    :param action_dim: action size (Discrete: the number of actions), None to ignore actions
    :param hidden: hidden layer sizes (paper, MuJoCo: 64, 64)
    :param dropout: dropout rate after each hidden layer
    :param discrete_actions: actions are Discrete indices, one-hot encoded
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int | None = None,
        hidden: Sequence[int] = (64, 64),
        dropout: float = 0.0,
        discrete_actions: bool = False,
    ) -> None:
        super().__init__()
        self.action_dim = action_dim
        self.discrete_actions = discrete_actions
        layers: list[nn.Module] = []
        in_dim = obs_dim + (action_dim or 0)
        for size in hidden:
            layers += [nn.Linear(in_dim, size), nn.LeakyReLU(LEAKY_SLOPE), nn.Dropout(dropout)]
            in_dim = size
        layers.append(nn.Linear(in_dim, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, obs: th.Tensor, actions: th.Tensor | None = None) -> th.Tensor:
        """Rewards ``[B]`` of ``obs`` ``[B, *obs_shape]`` and ``actions`` ``[B, *action_shape]``."""
        x = append_actions(obs.float().flatten(1), actions, self.action_dim, self.discrete_actions)
        return self.net(x).squeeze(-1)


class RewardCNN(nn.Module):
    """``r_hat(o, a)`` on uint8 frames (scaled by 1/255): 4 conv layers (kernels 7, 5, 3, 3, strides
    3, 2, 1, 1, ``filters`` each; conv -> batch norm -> leaky ReLU -> dropout), FC 64, scalar.
    Actions, when used, are appended (one-hot for Discrete) after the conv trunk.

    :param observation_shape: ``(C, H, W)``, or ``(H, W, C)`` with ``channels_last``
    :param action_dim: action size (Discrete: the number of actions), None to ignore actions
    :param discrete_actions: actions are Discrete indices, one-hot encoded
    :param dropout: dropout rate after each conv layer (paper: 0.5)
    :param batch_norm: batch norm after each conv layer (paper: yes)
    :param channels_last: observations are ``[B, H, W, C]``
    :param filters: filters per conv layer (paper: 16)
    :param hidden: size of the fully connected layer (paper: 64)
    """

    def __init__(
        self,
        observation_shape: Sequence[int] = (4, 84, 84),
        action_dim: int | None = None,
        discrete_actions: bool = True,
        dropout: float = 0.5,
        batch_norm: bool = True,
        channels_last: bool = False,
        filters: int = 16,
        hidden: int = 64,
    ) -> None:
        super().__init__()
        channels, height, width = (
            (observation_shape[2], *observation_shape[:2]) if channels_last else observation_shape
        )
        self.action_dim = action_dim
        self.discrete_actions = discrete_actions
        self.channels_last = channels_last
        layers: list[nn.Module] = []
        for kernel, stride in CONV_LAYERS:
            norm = nn.BatchNorm2d(filters) if batch_norm else nn.Identity()
            layers += [nn.Conv2d(channels, filters, kernel, stride), norm, nn.LeakyReLU(LEAKY_SLOPE)]
            layers.append(nn.Dropout(dropout))
            channels = filters
            height, width = (height - kernel) // stride + 1, (width - kernel) // stride + 1
        if height < 1 or width < 1:
            raise UsageError(f"frames of shape {tuple(observation_shape)} are too small for the reward CNN")
        self.trunk = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Sequential(
            nn.Linear(filters * height * width + (action_dim or 0), hidden),
            nn.LeakyReLU(LEAKY_SLOPE),
            nn.Linear(hidden, 1),
        )

    def forward(self, obs: th.Tensor, actions: th.Tensor | None = None) -> th.Tensor:
        """Rewards ``[B]`` of frames ``[B, C, H, W]`` (uint8) and optional actions."""
        x = obs.float() / 255.0
        x = self.trunk(x.permute(0, 3, 1, 2) if self.channels_last else x)
        x = append_actions(x, actions, self.action_dim, self.discrete_actions)
        return self.head(x).squeeze(-1)


class FitReport(NamedTuple):
    """One :meth:`RewardEnsemble.fit`; each tuple holds one value per member after the last epoch
    (losses are mean cross-entropies without the L2 term; NaN where a member has no validation data).
    """

    train_loss: tuple[float, ...]
    validation_loss: tuple[float, ...]
    validation_accuracy: tuple[float, ...]
    weight_decay: tuple[float, ...]
    epochs: int


class RewardEnsemble(nn.Module):
    """``members`` reward networks fit to preferences; ``predict`` is the normalized average.

    :param members: ensemble size (paper: 3)
    :param make_member: builds one network ``net(obs [B, ...], actions [B, ...]) -> [B]``
    :param target_std: std of ``predict`` on the normalization states
    :param learning_rate: Adam's learning rate
    :param weight_decay: initial L2 coefficient of every member
    :param weight_decay_factor: multiplier of the adaptive L2 rule, applied after each epoch
    :param weight_decay_bounds: the coefficient stays inside these
    :param random_answer_rate: the labeler's chance of a uniformly random answer (paper: 0.1)
    :param normalization_steps: clip steps (of comparisons spread over all of them) the statistics
        come from after a fit
    :param chunk_size: steps per forward pass when predicting
    """

    member_mean: th.Tensor
    member_std: th.Tensor
    output_mean: th.Tensor
    output_std: th.Tensor
    weight_decay: th.Tensor

    def __init__(
        self,
        members: int = 3,
        *,
        make_member: Callable[[], nn.Module],
        target_std: float = 1.0,
        learning_rate: float = 3e-4,
        weight_decay: float = 1e-3,
        weight_decay_factor: float = 1.1,
        weight_decay_bounds: tuple[float, float] = (1e-6, 1.0),
        random_answer_rate: float = RANDOM_ANSWER_RATE,
        normalization_steps: int = 20_000,
        chunk_size: int = 4096,
    ) -> None:
        super().__init__()
        if members < 1:
            raise UsageError(f"a reward ensemble needs at least one member; got {members}")
        self.nets = nn.ModuleList(make_member() for _ in range(members))
        self.optimizers = [th.optim.Adam(net.parameters(), lr=learning_rate) for net in self.nets]
        self.target_std = target_std
        self.decay_rule = (weight_decay_factor, weight_decay_bounds)
        self.random_answer_rate = random_answer_rate
        self.normalization_steps = normalization_steps
        self.chunk_size = chunk_size
        self.register_buffer("member_mean", th.zeros(members))
        self.register_buffer("member_std", th.ones(members))
        self.register_buffer("output_mean", th.zeros(()))
        self.register_buffer("output_std", th.ones(()))
        self.register_buffer("weight_decay", th.full((members,), float(weight_decay)))
        self._stacked: list[tuple[th.Tensor, th.Tensor]] | None = None  # see :meth:`predict_fast`
        self._folded: list[tuple[np.ndarray, Any]] | None = None  # see :meth:`predict_numpy`
        # Each member's persistent split of the comparisons fitted so far: (held out, multiplicities).
        self._splits = [(th.zeros(0, dtype=th.bool), th.zeros(0, dtype=th.long)) for _ in range(members)]
        self.eval()  # predictions run in eval mode; :meth:`fit` switches to training and back

    @property
    def n_members(self) -> int:
        return len(self.nets)

    @property
    def device(self) -> th.device:
        return self.member_mean.device

    def _raw(self, obs: ArrayOrTensor, actions: ArrayOrTensor | None) -> th.Tensor:
        """Unnormalized member outputs ``[n, T]``, in eval mode (restored after) without gradients."""
        obs_t = th.as_tensor(obs, device=self.device)
        act_t = None if actions is None else th.as_tensor(actions, device=self.device)
        was_training, chunks = self.training, []
        if was_training:
            self.eval()
        with th.no_grad():
            for start in range(0, len(obs_t), self.chunk_size):
                stop = start + self.chunk_size
                chunk_actions = None if act_t is None else act_t[start:stop]
                chunks.append(th.stack([net(obs_t[start:stop], chunk_actions) for net in self.nets]))
        if was_training:
            self.train()
        return th.cat(chunks, dim=1)

    def update_normalization(self, obs: ArrayOrTensor, actions: ArrayOrTensor | None = None) -> None:
        """Standardize each member, then their average, on these states ``[T, ...]``."""
        raw = self._raw(obs, actions)
        self.member_mean.copy_(raw.mean(1))
        self.member_std.copy_(raw.std(1, unbiased=False).clamp_min(MIN_STD))
        average = ((raw - self.member_mean[:, None]) / self.member_std[:, None]).mean(0)
        self.output_mean.copy_(average.mean())
        self.output_std.copy_(average.std(unbiased=False).clamp_min(MIN_STD))
        self._folded = None

    def center_on(self, obs: ArrayOrTensor, actions: ArrayOrTensor | None = None) -> None:
        """Shift :meth:`predict` so that these states (e.g. the absorbing state after a termination)
        have reward 0 on average, instead of the normalization states' mean: an episode's end is then
        worth what the env makes it (no reward afterwards), neither a prize nor a penalty."""
        average = self.member_predictions(obs, actions).mean(0)
        self.output_mean.copy_(average.mean())
        self._folded = None

    def member_rewards(self, obs: ArrayOrTensor, actions: ArrayOrTensor | None = None) -> th.Tensor:
        """Each member's own rewards ``[n, T]``, unnormalized: the scale its Bradley-Terry loss was fit
        on, so ``sigmoid(R_left - R_right)`` of them is the member's predicted preference."""
        return self._raw(obs, actions)

    def member_predictions(self, obs: ArrayOrTensor, actions: ArrayOrTensor | None = None) -> th.Tensor:
        """Each member's standardized rewards ``[n, T]`` of ``obs`` ``[T, ...]`` (eval mode)."""
        return (self._raw(obs, actions) - self.member_mean[:, None]) / self.member_std[:, None]

    def predict(self, obs: ArrayOrTensor, actions: ArrayOrTensor | None = None) -> th.Tensor:
        """``r_hat`` ``[T]``: mean of the standardized members, standardized again to ``target_std``."""
        average = self.member_predictions(obs, actions).mean(0)
        return (average - self.output_mean) / self.output_std * self.target_std

    def predict_fast(self, obs: ArrayOrTensor, actions: ArrayOrTensor | None = None) -> th.Tensor:
        """:meth:`predict` for the per-step reward of a few observations: MLP members run as one
        batched matrix product per layer (their weights stacked once per fit) instead of one small
        forward pass each. Other members (the CNN) take :meth:`predict`."""
        if not all(isinstance(net, RewardMLP) for net in self.nets) or len(obs) > self.chunk_size:
            return self.predict(obs, actions)
        if self._stacked is None:
            self._stacked = self._stack_layers()
        first = self.nets[0]
        assert isinstance(first, RewardMLP)
        with th.no_grad():
            obs_t = th.as_tensor(obs, device=self.device).float().flatten(1)
            act_t = None if actions is None else th.as_tensor(actions, device=self.device)
            x = append_actions(obs_t, act_t, first.action_dim, first.discrete_actions)
            h = x.unsqueeze(0).expand(self.n_members, *x.shape)
            last = len(self._stacked) - 1
            for i, (weight, bias) in enumerate(self._stacked):
                h = th.baddbmm(bias, h, weight)
                if i < last:
                    h = F.leaky_relu(h, LEAKY_SLOPE)  # dropout is the identity in eval mode
            raw = h.squeeze(-1)  # [members, T]
            average = ((raw - self.member_mean[:, None]) / self.member_std[:, None]).mean(0)
            return (average - self.output_mean) / self.output_std * self.target_std

    def predict_numpy(self, obs: np.ndarray, actions: np.ndarray | None = None) -> np.ndarray:
        """:meth:`predict` as float32 NumPy for the per-step reward of a few observations on the CPU:
        the members side by side in one matrix product per layer (block-diagonal weights copied once
        per fit, both standardizations folded into the last layer), ~9 us per step where torch's
        per-call overhead is tens. Falls back to :meth:`predict_fast` off the CPU, for other members
        and for more than :data:`FOLDED_MAX_ROWS` rows (where the block-diagonal zeros cost more)."""
        if self._folded is None:  # checked once per fit: the checks cost more than the product
            cpu_mlp = self.device.type == "cpu" and all(isinstance(net, RewardMLP) for net in self.nets)
            self._folded = self._fold_layers() if cpu_mlp else []
        if not self._folded or len(obs) > FOLDED_MAX_ROWS:
            return self.predict_fast(obs, actions).cpu().numpy().astype(np.float32)
        first = self.nets[0]
        assert isinstance(first, RewardMLP)
        x = np.asarray(obs, dtype=np.float32).reshape(len(obs), -1)
        if first.action_dim is not None:
            if actions is None:
                raise UsageError("this reward model takes actions; got none")
            if first.discrete_actions:
                encoded = np.eye(first.action_dim, dtype=np.float32)[
                    np.asarray(actions).astype(np.int64).reshape(-1)
                ]
            else:
                encoded = np.asarray(actions, dtype=np.float32).reshape(len(obs), -1)
            x = np.concatenate([x, encoded], axis=1)
        *hidden, (last_weight, constant) = self._folded
        h = x
        for weight, bias in hidden:
            h = h @ weight + bias
            h = np.maximum(h, LEAKY_SLOPE * h)  # leaky ReLU (slope < 1)
        return (h @ last_weight + constant).astype(np.float32)

    def _fold_layers(self) -> list[tuple[np.ndarray, Any]]:
        """The members' layers side by side as NumPy: the first layer's weights concatenated
        ``[in, M*h]``, the next ones block-diagonal ``[M*h, M*h']``, the last a vector ``[M*h]`` that
        absorbs both standardizations of :meth:`predict`, and its constant."""
        from scipy.linalg import block_diag  # once per fit; keeps scipy off the import path

        layers = [(w.cpu().numpy(), b.cpu().numpy()) for w, b in self._stack_layers()]
        (first_weight, first_bias), *middle, (weight, bias) = layers
        folded: list[tuple[np.ndarray, Any]] = [
            (np.concatenate(list(first_weight), axis=1), first_bias[:, 0, :].reshape(-1))
        ]
        folded += [(block_diag(*w), b[:, 0, :].reshape(-1)) for w, b in middle]
        # predict = sum_m (raw_m - mu_m) * c_m - out_mean * t / out_std, c_m = t / (M sd_m out_std)
        target = self.target_std / float(self.output_std)
        scale = (target / (self.n_members * self.member_std)).cpu().numpy()  # [M]
        mean = self.member_mean.cpu().numpy()
        constant = float(((bias[:, 0, 0] - mean) * scale).sum() - float(self.output_mean) * target)
        last = (weight[:, :, 0] * scale[:, None]).reshape(-1).astype(np.float32)
        folded.append((last, constant))
        return folded

    def _stack_layers(self) -> list[tuple[th.Tensor, th.Tensor]]:
        """Per layer, the members' weights ``[members, in, out]`` and biases ``[members, 1, out]``."""
        per_member = [[m for m in net.modules() if isinstance(m, nn.Linear)] for net in self.nets]
        stacked = []
        for layer in zip(*per_member, strict=True):
            weight = th.stack([linear.weight.detach().t() for linear in layer])
            bias = th.stack([linear.bias.detach()[None] for linear in layer])
            stacked.append((weight, bias))
        return stacked

    def get_extra_state(self) -> dict[str, list[th.Tensor]]:
        """The members' splits, saved with :meth:`state_dict` (a resumed run keeps holding out the
        same comparisons)."""
        return {
            "held_out": [held for held, _ in self._splits],
            "counts": [counts for _, counts in self._splits],
        }

    def set_extra_state(self, state: dict[str, list[th.Tensor]]) -> None:
        held, counts = state["held_out"], state["counts"]
        if len(held) != self.n_members or len(counts) != self.n_members:
            raise UsageError(f"saved splits are for {len(held)} members; this ensemble has {self.n_members}")
        self._splits = [(h.bool().cpu(), c.long().cpu()) for h, c in zip(held, counts, strict=True)]

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False) -> Any:
        self._stacked = self._folded = None
        if "_extra_state" not in state_dict:  # saved before splits persisted: they start afresh
            state_dict = {**state_dict, "_extra_state": self._fresh_splits()}
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def _fresh_splits(self) -> dict[str, list[th.Tensor]]:
        return {
            "held_out": [th.zeros(0, dtype=th.bool) for _ in range(self.n_members)],
            "counts": [th.zeros(0, dtype=th.long) for _ in range(self.n_members)],
        }

    def _apply(self, fn: Any, recurse: bool = True) -> Any:
        self._stacked = self._folded = None  # .to(), .cuda(), .double(): the copies are stale
        return super()._apply(fn, recurse)

    def fit(
        self,
        comparisons: Comparisons,
        epochs: int = 1,
        batch_size: int = 64,
        generator: th.Generator | None = None,
    ) -> FitReport:
        """Fit every member to its bootstrap resample, then recompute the normalization statistics.

        :param comparisons: all labeled comparisons so far, oldest first: each member's split of the
            comparisons fitted before is kept, the new ones at the end are split (fewer comparisons
            than last time: a new dataset, split afresh)
        :param epochs: passes over each member's training set
        :param batch_size: comparisons per gradient step
        :param generator: CPU generator for splits, resamples and batch order (default: torch's global
            RNG, which dropout always uses)
        """
        if comparisons.size == 0:
            raise UsageError("fitting the reward model needs at least one comparison")
        if epochs < 1 or batch_size < 1:
            raise UsageError(f"epochs and batch_size must be >= 1; got {epochs} and {batch_size}")
        if any(len(held) > comparisons.size for held, _ in self._splits):
            self.set_extra_state(self._fresh_splits())
        self._splits = [grow_split(*split, comparisons.size, generator) for split in self._splits]
        was_training, results = self.training, []
        for i, (net, optimizer) in enumerate(zip(self.nets, self.optimizers, strict=True)):
            train_index, val_index = split_indices(*self._splits[i])
            result = fit_preferences(
                net,
                optimizer,
                comparisons,  # stays where it is: batches move to the device one by one
                train_index,
                val_index,
                epochs=epochs,
                batch_size=batch_size,
                weight_decay=float(self.weight_decay[i]),
                decay_rule=self.decay_rule,
                random_answer_rate=self.random_answer_rate,
                generator=generator,
            )
            self.weight_decay[i] = result[-1]
            results.append(result)
        self.train(was_training)
        self._stacked = self._folded = None  # the weights changed
        self.update_normalization(*comparisons.spread(self.normalization_steps))
        train, val, accuracy, decay = (tuple(column) for column in zip(*results, strict=True))
        return FitReport(train, val, accuracy, decay, epochs)


def _action_encoding(action_space: spaces.Space) -> tuple[int, bool]:
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n), True
    if isinstance(action_space, spaces.Box):
        return int(np.prod(action_space.shape)), False
    raise UsageError(
        f"the reward model takes Box or Discrete actions, got {type(action_space).__name__} "
        "(use_actions=False ignores actions)"
    )


def build_reward_ensemble(
    observation_space: spaces.Space,
    action_space: spaces.Space,
    members: int = 3,
    *,
    hidden: Sequence[int] = (64, 64),
    dropout: float | None = None,
    batch_norm: bool = True,
    use_actions: bool | None = None,
    **ensemble_kwargs: Any,
) -> RewardEnsemble:
    """A :class:`RewardEnsemble` of :class:`RewardCNN` (image spaces) or :class:`RewardMLP` members.

    :param observation_space: a Box (uint8 images with 3 dimensions get the CNN)
    :param action_space: Box or Discrete (anything, with ``use_actions=False``)
    :param members: ensemble size
    :param hidden: MLP hidden sizes
    :param dropout: dropout rate (default: 0.5 for the CNN, as the paper's Atari net; 0 for the MLP)
    :param batch_norm: batch norm in the CNN
    :param use_actions: feed actions to the reward (default: yes for vectors, no for images, as the
        paper's Atari predictor sees frames only)
    :param ensemble_kwargs: passed to :class:`RewardEnsemble` (``target_std``, ``learning_rate``, ...)
    """
    if not isinstance(observation_space, spaces.Box):
        raise UsageError(f"the reward model takes Box observations, got {type(observation_space).__name__}")
    image = is_image_space(observation_space, check_channels=False)
    use_actions = not image if use_actions is None else use_actions
    action_dim, discrete = _action_encoding(action_space) if use_actions else (None, False)
    make_member: Callable[[], nn.Module]
    if image:
        channels_last = not is_image_space_channels_first(observation_space)
        rate = 0.5 if dropout is None else dropout
        shape = tuple(observation_space.shape)
        make_member = functools.partial(
            RewardCNN, shape, action_dim, discrete, rate, batch_norm, channels_last
        )
    else:
        obs_dim = int(np.prod(observation_space.shape))
        make_member = functools.partial(RewardMLP, obs_dim, action_dim, hidden, dropout or 0.0, discrete)
    return RewardEnsemble(members, make_member=make_member, **ensemble_kwargs)

"""The Bradley-Terry preference model of Christiano et al. 2017, "Deep RL from Human Preferences"
(arXiv 1706.03741), and fitting a reward function to it.

A labeler compares two clips (trajectory segments) ``s1``, ``s2``; the model says (paper, Eq. 1)

    P[s1 > s2] = exp(sum r_hat(s1)) / (exp(sum r_hat(s1)) + exp(sum r_hat(s2))) = sigmoid(R1 - R2)

over UNDISCOUNTED clip sums ``R``, mixed with a ``random_answer_rate`` (10%) chance that the labeler
answers uniformly at random (paper, Sec. 2.2.3). The reward model minimizes the cross-entropy between
these predictions and the labels ``mu`` (1: left preferred, 0: right, 0.5: equal; paper, Sec. 2.2.3)
plus an L2 term whose weight adapts to keep the validation loss at 1.1-1.5x the training loss.
"Can't tell" answers carry no information and are dropped before the loss.

Differences from the paper:
- ``preference_loss`` works in log space (``logsigmoid`` and ``logaddexp``), so a huge return gap gives
  a finite loss and gradient instead of ``log(0)``; the math is the paper's.
- L2 is an explicit ``weight_decay * sum ||W||^2`` on weight matrices and kernels (not biases or
  batch-norm scales). The adaptive rule compares train and validation losses both measured in eval
  mode after each epoch, so dropout does not bias the ratio; its step (x1.1) and bounds are ours.
- Validation accuracy counts strict preferences only (mu != 0.5).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

from core.errors import UsageError, check_choice
from rewards.store import CHOICES, choice_target

RANDOM_ANSWER_RATE = 0.1
# Epochs between the loss evaluations that adapt the L2 weight (and after a fit's last epoch).
ADAPT_EVERY_EPOCHS = 5
RewardFn = Callable[[th.Tensor, th.Tensor], th.Tensor]  # (obs [B, ...], actions [B, ...]) -> [B]


class Comparisons(NamedTuple):
    """``N`` labeled clip pairs of length ``L``.

    :param left_observations: ``[N, L, *obs_shape]`` (uint8 frames stay uint8)
    :param left_actions: ``[N, L, *action_shape]`` (``[N, L]`` integers for Discrete actions)
    :param right_observations: ``[N, L, *obs_shape]``
    :param right_actions: ``[N, L, *action_shape]``
    :param mu: ``[N]`` float: 1.0 left preferred, 0.0 right preferred, 0.5 equal
    """

    left_observations: th.Tensor
    left_actions: th.Tensor
    right_observations: th.Tensor
    right_actions: th.Tensor
    mu: th.Tensor

    @property
    def size(self) -> int:
        """The number of comparisons ``N``."""
        return int(self.mu.shape[0])

    def select(self, index: th.Tensor) -> Comparisons:
        """The comparisons at ``index`` (``[M]`` integers, repeats allowed)."""
        index = index.to(self.mu.device)
        return Comparisons(*(field[index] for field in self))

    def to(self, device: th.device | str) -> Comparisons:
        """A copy on ``device``."""
        return Comparisons(*(field.to(device) for field in self))

    def newest(self, max_steps: int) -> tuple[th.Tensor, th.Tensor]:
        """``(obs [T, ...], actions [T, ...])``: every step of the newest (last) comparisons' clips,
        both sides, ``T <= max_steps`` unless one comparison alone has more."""
        per_comparison = 2 * self.left_observations.shape[1]
        keep = min(self.size, max(1, max_steps // per_comparison))
        tail = self.select(th.arange(self.size - keep, self.size))
        obs = th.cat([tail.left_observations, tail.right_observations]).flatten(0, 1)
        return obs, th.cat([tail.left_actions, tail.right_actions]).flatten(0, 1)

    def spread(self, max_steps: int) -> tuple[th.Tensor, th.Tensor]:
        """``(obs [T, ...], actions [T, ...])``: every step of the clips of ``T <= max_steps``
        comparisons spread evenly over all of them, oldest to newest (every one if they fit), so the
        statistics computed on them cover the whole labeled history, not only the current behavior."""
        per_comparison = 2 * self.left_observations.shape[1]
        keep = min(self.size, max(1, max_steps // per_comparison))
        picked = self.select(th.linspace(0, self.size - 1, keep).round().long())
        obs = th.cat([picked.left_observations, picked.right_observations]).flatten(0, 1)
        return obs, th.cat([picked.left_actions, picked.right_actions]).flatten(0, 1)


def comparison_returns(reward_fn: RewardFn, batch: Comparisons) -> tuple[th.Tensor, th.Tensor]:
    """Undiscounted predicted clip sums ``(left [N], right [N])``; both sides go through ``reward_fn``
    in one call (one batch for batch norm)."""
    n, length = batch.left_observations.shape[:2]
    obs = th.cat([batch.left_observations, batch.right_observations]).flatten(0, 1)
    actions = th.cat([batch.left_actions, batch.right_actions]).flatten(0, 1)
    # Paper Eq. 1: the preference depends on the UNDISCOUNTED sum of r_hat over each clip.
    returns = reward_fn(obs, actions).view(2 * n, length).sum(1)
    return returns[:n], returns[n:]


def choice_to_mu(choice: str) -> float | None:
    """The label ``mu`` of a labeler's answer: left 1.0, right 0.0, equal 0.5, cant_tell None."""
    check_choice("preference choice", choice, CHOICES)  # a UsageError with a did-you-mean
    return choice_target(choice)


def _check_rate(random_answer_rate: float) -> None:
    if not 0.0 <= random_answer_rate < 1.0:
        raise UsageError(f"random_answer_rate must be in [0, 1); got {random_answer_rate}")


def preference_probability(
    sum_left: th.Tensor, sum_right: th.Tensor, random_answer_rate: float = RANDOM_ANSWER_RATE
) -> th.Tensor:
    """``P[left > right] = rate * 0.5 + (1 - rate) * sigmoid(sum_left - sum_right)``, elementwise.

    :param sum_left: undiscounted predicted reward sums of the left clips, any shape
    :param sum_right: the same for the right clips, same shape
    :param random_answer_rate: chance the labeler answers uniformly at random (paper: 0.1)
    """
    _check_rate(random_answer_rate)
    # Paper Eq. 1 (Bradley-Terry on clip sums) mixed with a uniform answer (Sec. 2.2.3).
    return 0.5 * random_answer_rate + (1.0 - random_answer_rate) * th.sigmoid(sum_left - sum_right)


def preference_log_probabilities(
    returns_left: th.Tensor, returns_right: th.Tensor, random_answer_rate: float = RANDOM_ANSWER_RATE
) -> tuple[th.Tensor, th.Tensor]:
    """``(log P[left > right], log P[right > left])``, computed in log space (finite for any gap)."""
    _check_rate(random_answer_rate)
    gap = returns_left - returns_right
    if random_answer_rate == 0.0:
        return F.logsigmoid(gap), F.logsigmoid(-gap)
    log_uniform = math.log(0.5 * random_answer_rate)
    log_model = math.log(1.0 - random_answer_rate)
    # log(rate/2 + (1 - rate) sigmoid(+-gap)); 1 - P[left > right] = rate/2 + (1 - rate) sigmoid(-gap).
    log_left = th.logaddexp(th.full_like(gap, log_uniform), log_model + F.logsigmoid(gap))
    log_right = th.logaddexp(th.full_like(gap, log_uniform), log_model + F.logsigmoid(-gap))
    return log_left, log_right


def preference_loss(
    returns_left: th.Tensor,
    returns_right: th.Tensor,
    mu: th.Tensor,
    random_answer_rate: float = RANDOM_ANSWER_RATE,
) -> th.Tensor:
    """Mean cross-entropy ``-(mu log P[left > right] + (1 - mu) log P[right > left])`` over the batch.

    :param returns_left: ``[N]`` undiscounted predicted reward sums of the left clips
    :param returns_right: ``[N]`` the same for the right clips
    :param mu: ``[N]`` labels in {1, 0, 0.5}
    :param random_answer_rate: chance the labeler answers uniformly at random (paper: 0.1)
    :return: a scalar
    """
    log_left, log_right = preference_log_probabilities(returns_left, returns_right, random_answer_rate)
    # Paper Sec. 2.2.3: cross-entropy between the BT prediction and the label distribution mu.
    return -(mu * log_left + (1.0 - mu) * log_right).mean()


def grow_split(
    held_out: th.Tensor, counts: th.Tensor, n: int, generator: th.Generator | None = None
) -> tuple[th.Tensor, th.Tensor]:
    """One ensemble member's split of ``n`` comparisons, grown from its split of the first
    ``len(held_out)`` (comparisons only ever arrive at the end): the old comparisons keep their place,
    the new ones are drawn. A member keeps its weights from fit to fit, so a split drawn afresh for
    every fit would let it train, over a run, on every comparison: its validation loss would then
    measure nothing and the members would all fit the same data.

    - held out: new comparisons are held out until ``round(n / e)`` of all ``n`` are (``n >= 2``; paper
      Sec. 2.2.3: 1/e of the data is held out), chosen at random among the new ones;
    - training: each other new comparison appears ``Poisson(1)`` times in the member's training set
      (the online bootstrap of Oza and Russell 2001: in the limit, the multiplicities of a same-size
      resample with replacement; paper Sec. 2.2.3: each predictor trains on triples sampled from D
      with replacement); should every one be drawn 0 times (a handful of comparisons), one of them is
      used once, so a member always has something to train on.

    :param held_out: ``[m]`` bool, the member's held-out comparisons so far
    :param counts: ``[m]`` int64, their training multiplicities (0 where held out)
    :param n: comparisons now (``>= m``)
    :return: ``(held_out [n], counts [n])``
    """
    known = len(held_out)
    if n < known or len(counts) != known:
        raise UsageError(f"a split of {known} comparisons cannot grow to {n} ({len(counts)} counts)")
    fresh = n - known
    target = max(1, round(n / math.e)) if n >= 2 else 0
    new_held = th.zeros(fresh, dtype=th.bool)
    picks = min(max(target - int(held_out.sum()), 0), fresh)
    new_held[th.randperm(fresh, generator=generator)[:picks]] = True
    new_counts = th.poisson(th.ones(fresh, dtype=th.float64), generator=generator).long()
    new_counts[new_held] = 0
    held_out, counts = th.cat([held_out.cpu(), new_held]), th.cat([counts.cpu(), new_counts])
    pool = th.nonzero(~held_out).flatten()
    if len(pool) and not int(counts.sum()):  # a few comparisons, all drawn 0 times: train on one
        counts[pool[th.randint(len(pool), (1,), generator=generator)]] = 1
    return held_out, counts


def split_indices(held_out: th.Tensor, counts: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """``(training indices, held-out indices)`` of a split: each training comparison repeated by its
    multiplicity."""
    index = th.arange(len(counts))
    return th.repeat_interleave(index, counts), index[held_out]


def l2_penalty(net: nn.Module) -> th.Tensor:
    """``sum ||W||^2`` over weight matrices and conv kernels (parameters with 2+ dimensions)."""
    return th.stack([p.square().sum() for p in net.parameters() if p.dim() > 1]).sum()


def adapt_weight_decay(
    weight_decay: float, train_loss: float, validation_loss: float, factor: float, bounds: tuple[float, float]
) -> float:
    """Paper Sec. 2.2.3: keep the validation loss between 1.1 and 1.5 times the training loss."""
    if validation_loss > 1.5 * train_loss:
        weight_decay *= factor
    elif validation_loss < 1.1 * train_loss:
        weight_decay /= factor
    return min(max(weight_decay, bounds[0]), bounds[1])


def evaluate_preferences(
    net: nn.Module,
    data: Comparisons,
    index: th.Tensor,
    batch_size: int,
    random_answer_rate: float = RANDOM_ANSWER_RATE,
) -> tuple[float, float]:
    """(mean loss, accuracy on strict preferences) of ``net`` in eval mode on ``data[index]``; NaN for
    an empty ``index``. Batches move to ``net``'s device one at a time."""
    if len(index) == 0:
        return math.nan, math.nan
    net.eval()
    device = next(net.parameters()).device
    total, correct, strict = 0.0, 0, 0
    with th.no_grad():
        for batch_index in index.split(batch_size):
            batch = data.select(batch_index).to(device)
            left, right = comparison_returns(net, batch)
            total += preference_loss(left, right, batch.mu, random_answer_rate).item() * batch.size
            decided = batch.mu != 0.5
            correct += int(((left > right) == (batch.mu > 0.5))[decided].sum())
            strict += int(decided.sum())
    return total / len(index), correct / strict if strict else math.nan


def fit_preferences(
    net: nn.Module,
    optimizer: th.optim.Optimizer,
    data: Comparisons,
    train_index: th.Tensor,
    validation_index: th.Tensor,
    *,
    epochs: int,
    batch_size: int,
    weight_decay: float,
    decay_rule: tuple[float, tuple[float, float]] = (1.1, (1e-6, 1.0)),
    random_answer_rate: float = RANDOM_ANSWER_RATE,
    generator: th.Generator | None = None,
    adapt_every: int = ADAPT_EVERY_EPOCHS,
) -> tuple[float, float, float, float]:
    """Minimize the preference loss plus ``weight_decay * sum ||W||^2`` on ``data[train_index]`` for
    ``epochs``, adapting ``weight_decay`` every ``adapt_every`` epochs and after the last (paper Sec.
    2.2.3). Indices, not copies, so a large image dataset is never duplicated; batches move to
    ``net``'s device one at a time.

    :param decay_rule: ``(factor, (low, high))`` of :func:`adapt_weight_decay`
    :param generator: CPU generator for the batch order (default: torch's global RNG)
    :param adapt_every: epochs between the evaluations of both losses that drive the adaptation
        (each evaluates the whole training and validation sets: a third of a fit's time when done
        after every epoch, while a run refits a few epochs hundreds of times)
    :return: train loss, validation loss, validation accuracy (after the last epoch, eval mode) and
        the adapted weight decay
    """
    if adapt_every < 1:
        raise UsageError(f"adapt_every must be >= 1; got {adapt_every}")
    device = next(net.parameters()).device
    val_loss = val_accuracy = train_loss = math.nan
    for epoch in range(epochs):
        net.train()
        shuffled = th.randperm(len(train_index), generator=generator)
        # An empty training set gives no batch (split would give one empty batch, whose loss is NaN).
        for order in shuffled.split(batch_size) if len(train_index) else ():
            batch = data.select(train_index[order]).to(device)
            left, right = comparison_returns(net, batch)
            loss = preference_loss(left, right, batch.mu, random_answer_rate)
            loss = loss + weight_decay * l2_penalty(net)  # paper Sec. 2.2.3: L2 regularization
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if (epoch + 1) % adapt_every and epoch + 1 < epochs:
            continue
        # Both losses in eval mode (no dropout), so that their ratio measures overfitting only.
        train_loss, _ = evaluate_preferences(net, data, train_index, batch_size, random_answer_rate)
        val_loss, val_accuracy = evaluate_preferences(
            net, data, validation_index, batch_size, random_answer_rate
        )
        if len(validation_index):
            weight_decay = adapt_weight_decay(weight_decay, train_loss, val_loss, *decay_rule)
    return train_loss, val_loss, val_accuracy, weight_decay

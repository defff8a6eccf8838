"""The learning side of the preference reward (Christiano et al. 2017): Bradley-Terry probability and
loss by hand, query selection, clips, oracle and B-Pref teachers, ensemble normalization, fitting a
known linear reward, adaptive L2, save/load, network shapes."""

from __future__ import annotations

import io
import itertools
import math
from typing import Any

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

import rewards.preferences as preferences_module
from core.errors import UsageError
from rewards.clips import (
    Clip,
    Trajectory,
    comparisons_from_labels,
    cut_clips,
    select_pairs,
    split_episodes,
)
from rewards.labelers import OracleLabeler, SimulatedTeacher, calibrate_beta, teacher_from_name
from rewards.models import RewardCNN, RewardEnsemble, RewardMLP, build_reward_ensemble
from rewards.preferences import (
    Comparisons,
    adapt_weight_decay,
    choice_to_mu,
    preference_loss,
    preference_probability,
)

th.set_num_threads(1)
OBS_DIM, ACTION_DIM, LENGTH = 4, 2, 5
TRUE_WEIGHTS = np.array([1.0, -2.0, 0.5, 0.0, 1.5, -1.0])  # on [obs, action]


def clip(rewards: list[float] | np.ndarray, episode_id: int = 0, obs_value: float = 0.0) -> Clip:
    rewards = np.asarray(rewards, dtype=np.float64)
    obs = np.full((len(rewards), 1), obs_value, dtype=np.float32)
    return Clip(obs, np.zeros((len(rewards), 1), np.float32), rewards, episode_id, 0)


# --- Bradley-Terry ------------------------------------------------------------------------------


def test_preference_probability_by_hand() -> None:
    # sigmoid(1) = 0.7310585786; 0.1 * 0.5 + 0.9 * 0.7310585786 = 0.7079527208
    p = preference_probability(th.tensor([3.0]), th.tensor([2.0]))
    assert p.item() == pytest.approx(0.7079527208, abs=1e-7)
    # Equal sums: 0.5 whatever the rate; a huge gap saturates at 1 - 0.05, not at 1.
    assert preference_probability(th.tensor(4.0), th.tensor(4.0)).item() == pytest.approx(0.5)
    assert preference_probability(th.tensor(1e4), th.tensor(0.0)).item() == pytest.approx(0.95)
    assert preference_probability(th.tensor(3.0), th.tensor(2.0), 0.0).item() == pytest.approx(0.7310585786)


def test_preference_loss_by_hand() -> None:
    left, right = th.tensor([1.5, 0.0, 3.0]), th.tensor([0.5, 0.0, 1.0])
    mu = th.tensor([1.0, 0.5, 0.0])
    # gap 1, mu 1: -ln(0.7079527208) = 0.3453779661
    # gap 0, mu 0.5: P = 0.5, -(0.5 ln 0.5 + 0.5 ln 0.5) = 0.6931471806
    # gap 2, mu 0: P = 0.05 + 0.9 * sigmoid(2) = 0.05 + 0.9 * 0.8807970780 = 0.8427173702, -ln(0.1572826298)
    #   = 1.8497109021
    # mean: (0.3453779661 + 0.6931471806 + 1.8497109021) / 3 = 0.9627453496
    assert preference_loss(left, right, mu).item() == pytest.approx(0.9627453496, abs=1e-6)
    # mu = 0.5 on gap 1: -(0.5 ln 0.7079527208 + 0.5 ln 0.2920472792) = 0.7881087704
    loss = preference_loss(th.tensor([1.0]), th.tensor([0.0]), th.tensor([0.5]))
    assert loss.item() == pytest.approx(0.7881087704, abs=1e-6)


def test_preference_loss_is_finite_for_huge_gaps() -> None:
    left = th.tensor([1e4, -1e4], requires_grad=True)
    right = th.zeros(2)
    # Right answer at a huge gap: -ln(0.95) = 0.0512932944; wrong answer: -ln(0.05) = 2.9957322736.
    loss = preference_loss(left, right, th.tensor([1.0, 1.0]))
    loss.backward()
    assert loss.item() == pytest.approx((0.0512932944 + 2.9957322736) / 2, abs=1e-5)
    assert left.grad is not None and th.isfinite(left.grad).all()
    no_noise = preference_loss(th.tensor([1e4]), th.tensor([0.0]), th.tensor([0.0]), random_answer_rate=0.0)
    assert no_noise.item() == pytest.approx(1e4)


def test_raising_the_preferred_clips_reward_lowers_the_loss() -> None:
    left, right = th.tensor([0.3], requires_grad=True), th.tensor([0.1], requires_grad=True)
    preference_loss(left, right, th.tensor([1.0])).backward()
    assert left.grad is not None and right.grad is not None
    assert left.grad.item() < 0.0 < right.grad.item()


def test_choices_map_to_labels() -> None:
    assert [choice_to_mu(c) for c in ("left", "right", "equal", "cant_tell")] == [1.0, 0.0, 0.5, None]
    with pytest.raises(UsageError, match="did you mean left"):
        choice_to_mu("lefft")


# --- query selection ----------------------------------------------------------------------------


class FakeEnsemble:
    """Three members; clip ``k`` (observations all equal to ``k``) gets return ``returns[m, k]``."""

    def __init__(self, returns: np.ndarray, length: int) -> None:
        self.returns = th.as_tensor(returns, dtype=th.float32)
        self.length = length

    def member_rewards(self, obs: np.ndarray, actions: np.ndarray | None = None) -> th.Tensor:
        ids = th.as_tensor(obs[:, 0]).long()
        return self.returns[:, ids] / self.length


def test_variance_selection_picks_the_pair_the_members_disagree_on() -> None:
    length = 4
    clips = [clip(np.zeros(length), obs_value=k) for k in range(6)]
    returns = np.zeros((3, 6))
    returns[:, 3] = [5.0, -5.0, 0.0]  # members 0 and 1 disagree about clips 3 and 5
    returns[:, 5] = [-5.0, 5.0, 0.0]
    queries = select_pairs(FakeEnsemble(returns, length), clips, n_queries=1, oversampling=100, rng=0)
    (query,) = queries
    assert {int(query.left.observations[0, 0]), int(query.right.observations[0, 0])} == {3, 5}
    assert query.strategy == "variance" and query.score is not None
    # Var over members of (sigmoid(10), sigmoid(-10), 0.5) for (3, 5), the largest possible here.
    p = np.array([1 / (1 + math.exp(-10)), 1 / (1 + math.exp(10)), 0.5])
    assert query.score == pytest.approx(p.var(), rel=1e-4)


def test_random_selection_is_uniform_and_reproducible() -> None:
    clips = [clip(np.zeros(2), obs_value=k) for k in range(5)]
    counts = np.zeros(5)
    for seed in range(400):
        for query in select_pairs(None, clips, n_queries=2, strategy="random", rng=seed):
            assert query.score is None and query.strategy == "random"
            counts[int(query.left.observations[0, 0])] += 1
            counts[int(query.right.observations[0, 0])] += 1
    # 1600 appearances over 5 clips: 320 each expected, binomial std ~16.
    assert np.all(np.abs(counts - 320) < 80)
    first = select_pairs(None, clips, n_queries=3, strategy="random", rng=7)
    again = select_pairs(None, clips, n_queries=3, strategy="random", rng=7)
    assert [q.left.observations[0, 0] for q in first] == [q.left.observations[0, 0] for q in again]
    assert [q.right.observations[0, 0] for q in first] == [q.right.observations[0, 0] for q in again]


def test_mixed_selection_takes_a_fraction_of_each() -> None:
    clips = [clip(np.zeros(2), obs_value=k) for k in range(8)]
    returns = np.random.default_rng(0).normal(size=(3, 8))
    queries = select_pairs(FakeEnsemble(returns, 2), clips, n_queries=4, strategy="mixed", rng=1)
    assert [q.strategy for q in queries] == ["variance", "variance", "random", "random"]
    pairs = {frozenset((q.left.observations[0, 0], q.right.observations[0, 0])) for q in queries}
    assert len(pairs) == 4
    with pytest.raises(UsageError, match="needs a reward ensemble"):
        select_pairs(None, clips, n_queries=1)
    with pytest.raises(UsageError, match="did you mean variance"):
        select_pairs(None, clips, n_queries=1, strategy="varianse")


def test_selection_with_a_real_ensemble_returns_labelable_pairs() -> None:
    th.manual_seed(0)
    ensemble = small_ensemble()
    rng = np.random.default_rng(0)
    episodes = [
        Trajectory(
            rng.normal(size=(30, OBS_DIM)), rng.uniform(-1, 1, (30, ACTION_DIM)), rng.normal(size=30), k
        )
        for k in range(3)
    ]
    clips = cut_clips(episodes, length=LENGTH, n=12, rng=rng)
    queries = select_pairs(ensemble, clips, n_queries=4, rng=0)
    scores = [q.score for q in queries if q.score is not None]
    assert len(scores) == 4 and min(scores) >= 0.0
    assert scores == sorted(scores, reverse=True)
    pairs = [q.clips for q in queries]
    batch = comparisons_from_labels(pairs, OracleLabeler().label(pairs))
    assert batch.left_observations.shape == (4, LENGTH, OBS_DIM)


# --- labelers -----------------------------------------------------------------------------------


def test_oracle_prefers_the_higher_true_return() -> None:
    pairs = [
        (clip([1.0, 2.0]), clip([0.0, 0.5])),
        (clip([0.0, 0.0]), clip([0.0, 0.1])),
        (clip([1.0, 1.0]), clip([2.0, 0.0])),
    ]
    assert OracleLabeler().label(pairs) == ["left", "right", "equal"]
    assert teacher_from_name("oracle").label(pairs) == ["left", "right", "equal"]
    unknown = Clip(np.zeros((2, 1)), np.zeros((2, 1)), None, 9, 0)
    with pytest.raises(UsageError, match="true rewards"):
        OracleLabeler().label([(unknown, unknown)])


def random_pairs(n: int, seed: int = 0) -> list[tuple[Clip, Clip]]:
    rng = np.random.default_rng(seed)
    return [(clip(rng.normal(size=5)), clip(rng.normal(size=5))) for _ in range(n)]


def test_mistake_teacher_flips_about_eps_of_the_answers() -> None:
    pairs = random_pairs(2000)
    truth = OracleLabeler().label(pairs)
    answers = SimulatedTeacher(eps=0.2, seed=0).label(pairs)
    flipped = np.mean([a != t for a, t in zip(answers, truth, strict=True)])
    assert abs(flipped - 0.2) < 0.03
    preset = teacher_from_name("mistake", seed=0)
    assert preset.eps == 0.1 and preset.beta is None


def test_skip_and_equal_teachers() -> None:
    low, high = clip([0.0, 0.1]), clip([1.0, 1.0])
    teacher = SimulatedTeacher(skip_threshold=0.5, equal_threshold=0.3)
    assert teacher.label([(low, clip([0.2, 0.0])), (low, high), (high, clip([1.0, 0.8]))]) == [
        "cant_tell",
        "right",
        "equal",
    ]
    returns = np.arange(100.0)
    assert teacher_from_name("skip", clip_returns=returns).skip_threshold == pytest.approx(9.9)
    assert teacher_from_name("equal", clip_returns=returns).equal_threshold == pytest.approx(
        0.1 * np.std(returns)
    )
    with pytest.raises(UsageError, match="needs clip_returns"):
        teacher_from_name("skip")


def test_myopic_teacher_prefers_the_clip_whose_reward_comes_late() -> None:
    early, late = clip([1.0, 0.0, 0.0, 0.0]), clip([0.0, 0.0, 0.0, 1.0])
    myopic = teacher_from_name("myopic")
    assert myopic.gamma == 0.9
    assert myopic.label([(early, late), (late, early)]) == ["right", "left"]
    assert OracleLabeler().label([(early, late)]) == ["equal"]


def test_stochastic_teacher_is_calibrated_to_the_return_scale() -> None:
    returns = np.array([0.0, 10.0, 20.0, 30.0])
    assert calibrate_beta(returns) == pytest.approx(1.0 / np.std(returns))
    teacher = teacher_from_name("stoc", clip_returns=returns, seed=0)
    # A gap of one std (1 / beta) is answered "left" with probability sigmoid(1) = 0.731.
    assert teacher.beta is not None
    gap = 1.0 / teacher.beta
    answers = teacher.label([(clip([gap]), clip([0.0]))] * 2000)
    assert abs(np.mean([a == "left" for a in answers]) - 0.731) < 0.04
    assert teacher_from_name("stoc").beta == 1.0


def test_unknown_teacher_suggests_the_closest_name() -> None:
    with pytest.raises(UsageError, match=r"did you mean myopic\?"):
        teacher_from_name("myopik")


# --- clips --------------------------------------------------------------------------------------


def test_clips_never_cross_an_episode_end() -> None:
    # One env's stream: episodes of 7, 3 (too short for length 4), 12 and an unfinished 6 steps.
    lengths = [7, 3, 12, 6]
    episode = np.concatenate([np.full(n, k) for k, n in enumerate(lengths)])
    step = np.concatenate([np.arange(n) for n in lengths])
    obs = np.stack([episode, step], axis=1).astype(np.float32)
    dones = np.concatenate([np.arange(n) == n - 1 for n in lengths])
    dones[-1] = False
    episodes = split_episodes(obs, np.zeros((len(obs), 1)), step.astype(float), dones, first_episode_id=10)
    assert [len(e.observations) for e in episodes] == lengths
    assert [e.episode_id for e in episodes] == [10, 11, 12, 13]
    clips = cut_clips(episodes, length=4, n=300, rng=0)
    assert {c.length for c in clips} == {4}
    for c in clips:
        assert np.all(c.observations[:, 0] == c.episode_id - 10)
        assert np.array_equal(c.observations[:, 1], np.arange(c.start, c.start + 4))
        assert c.true_rewards is not None and np.array_equal(c.true_rewards, c.observations[:, 1])
    assert 11 not in {c.episode_id for c in clips}
    # 4 + 9 + 3 = 16 start positions: 10 clips are 10 distinct ones.
    few = cut_clips(episodes, length=4, n=10, rng=1)
    assert len({(c.episode_id, c.start) for c in few}) == 10


def test_too_long_clips_raise_a_clear_error() -> None:
    episodes = [Trajectory(np.zeros((n, 2)), np.zeros((n, 1)), np.zeros(n), k) for k, n in enumerate((5, 8))]
    with pytest.raises(UsageError, match=r"clip length 25 is longer than the episodes allow \(longest: 8"):
        cut_clips(episodes, length=25, n=3)


def test_comparisons_from_labels_drop_cant_tell() -> None:
    pairs = [(clip([1.0], obs_value=k), clip([0.0])) for k in range(4)]
    batch = comparisons_from_labels(pairs, ["left", "cant_tell", "equal", "right"])
    assert batch.size == 3
    assert batch.mu.tolist() == [1.0, 0.5, 0.0]
    assert batch.left_observations[:, 0, 0].tolist() == [0.0, 2.0, 3.0]
    assert batch.left_observations.shape == (3, 1, 1)


# --- reward models ------------------------------------------------------------------------------


def linear_comparisons(n: int, seed: int) -> Comparisons:
    """``n`` clip pairs labeled by the oracle of the linear reward ``TRUE_WEIGHTS . [o, a]``."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(2, n, LENGTH, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(2, n, LENGTH, ACTION_DIM)).astype(np.float32)
    returns = (np.concatenate([obs, actions], axis=-1) @ TRUE_WEIGHTS).sum(-1)
    mu = (returns[0] > returns[1]).astype(np.float32)
    return Comparisons(*(th.as_tensor(x) for x in (obs[0], actions[0], obs[1], actions[1], mu)))


def small_ensemble(members: int = 3, **kwargs: Any) -> RewardEnsemble:
    box = spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
    action_space = spaces.Box(-1, 1, (ACTION_DIM,), np.float32)
    return build_reward_ensemble(box, action_space, members=members, hidden=(32, 32), **kwargs)


def test_members_are_normalized_independently_and_the_average_to_target_std() -> None:
    th.manual_seed(0)
    ensemble = small_ensemble(target_std=0.05)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(500, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(500, ACTION_DIM)).astype(np.float32)
    ensemble.update_normalization(obs, actions)
    members = ensemble.member_predictions(obs, actions)
    assert members.shape == (3, 500)
    assert th.allclose(members.mean(1), th.zeros(3), atol=1e-4)
    assert th.allclose(members.std(1, unbiased=False), th.ones(3), atol=1e-4)
    reward = ensemble.predict(obs, actions)
    assert reward.shape == (500,)
    assert reward.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert reward.std(unbiased=False).item() == pytest.approx(0.05, rel=1e-3)


def test_fit_recovers_a_known_linear_reward() -> None:
    th.manual_seed(0)
    ensemble = small_ensemble(learning_rate=3e-3)
    report = ensemble.fit(
        linear_comparisons(400, seed=0), epochs=25, batch_size=32, generator=th.Generator().manual_seed(0)
    )
    assert report.epochs == 25 and len(report.validation_accuracy) == 3
    assert min(report.validation_accuracy) > 0.8
    rng = np.random.default_rng(1)
    obs = rng.normal(size=(1000, OBS_DIM)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(1000, ACTION_DIM)).astype(np.float32)
    true_reward = np.concatenate([obs, actions], axis=1) @ TRUE_WEIGHTS
    learned = ensemble.predict(obs, actions).numpy()
    assert np.corrcoef(learned, true_reward)[0, 1] > 0.8


def test_fit_is_deterministic_given_seeds() -> None:
    data = linear_comparisons(40, seed=3)
    predictions = []
    for _ in range(2):
        th.manual_seed(1)
        ensemble = small_ensemble(dropout=0.2)
        ensemble.fit(data, epochs=2, generator=th.Generator().manual_seed(5))
        predictions.append(ensemble.predict(data.left_observations[:, 0], data.left_actions[:, 0]))
    assert th.equal(predictions[0], predictions[1])


def test_adaptive_l2_raises_weight_decay_when_validation_loss_is_far_above_training_loss() -> None:
    bounds = (1e-6, 1.0)
    assert adapt_weight_decay(0.01, 0.2, 0.5, 1.1, bounds) == pytest.approx(0.011)  # 2.5x: overfitting
    assert adapt_weight_decay(0.01, 0.4, 0.5, 1.1, bounds) == pytest.approx(0.01)  # 1.25x: keep
    assert adapt_weight_decay(0.01, 0.5, 0.5, 1.1, bounds) == pytest.approx(0.01 / 1.1)  # 1x: underfitting
    assert adapt_weight_decay(1.0, 0.1, 0.9, 1.1, bounds) == 1.0  # bounded
    # Random labels on few comparisons: the members memorize them, validation stays at chance.
    th.manual_seed(0)
    data = linear_comparisons(60, seed=4)
    data = data._replace(mu=th.as_tensor(np.random.default_rng(0).integers(0, 2, 60), dtype=th.float32))
    ensemble = small_ensemble(learning_rate=1e-2, weight_decay=1e-5, weight_decay_bounds=(1e-8, 1.0))
    report = ensemble.fit(data, epochs=60, batch_size=16, generator=th.Generator().manual_seed(0))
    for train_loss, val_loss, decay in zip(
        report.train_loss, report.validation_loss, report.weight_decay, strict=True
    ):
        assert val_loss > 1.5 * train_loss
        assert decay > 1e-5
    assert ensemble.weight_decay.tolist() == pytest.approx(list(report.weight_decay))


def test_l2_adapts_every_few_epochs_and_after_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each adaptation evaluates both sets (two calls): after epochs 3, 6 and the 7th, the last."""
    calls: list[int] = []
    evaluate = preferences_module.evaluate_preferences

    def counting(*args: Any, **kwargs: Any) -> tuple[float, float]:
        calls.append(1)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(preferences_module, "evaluate_preferences", counting)
    data = linear_comparisons(40, seed=3)
    net = small_ensemble().nets[0]
    held, counts = preferences_module.grow_split(
        th.zeros(0, dtype=th.bool), th.zeros(0, dtype=th.long), data.size, th.Generator().manual_seed(0)
    )
    train, val = preferences_module.split_indices(held, counts)
    optimizer = th.optim.Adam(net.parameters(), lr=1e-3)
    result = preferences_module.fit_preferences(
        net, optimizer, data, train, val, epochs=7, batch_size=16, weight_decay=1e-3, adapt_every=3
    )
    assert len(calls) == 6
    assert all(math.isfinite(value) for value in result)
    with pytest.raises(UsageError, match="adapt_every"):
        preferences_module.fit_preferences(
            net, optimizer, data, train, val, epochs=1, batch_size=16, weight_decay=1e-3, adapt_every=0
        )


def test_grow_split_keeps_old_assignments_and_holds_out_one_over_e() -> None:
    generator = th.Generator().manual_seed(0)
    held, counts = preferences_module.grow_split(
        th.zeros(0, dtype=th.bool), th.zeros(0, dtype=th.long), 100, generator
    )
    assert int(held.sum()) == round(100 / math.e)
    assert int(counts[held].sum()) == 0  # held out: never trained on
    grown_held, grown_counts = preferences_module.grow_split(held, counts, 130, generator)
    assert th.equal(grown_held[:100], held) and th.equal(grown_counts[:100], counts)
    assert int(grown_held.sum()) == round(130 / math.e)
    assert int(grown_counts[grown_held].sum()) == 0
    # Poisson(1) multiplicities: some comparisons drawn twice or more, some not at all
    training = grown_counts[~grown_held]
    assert int((training == 0).sum()) > 0 and int((training >= 2).sum()) > 0
    train, val = preferences_module.split_indices(grown_held, grown_counts)
    assert len(train) == int(grown_counts.sum())
    assert set(val.tolist()) == set(th.nonzero(grown_held).flatten().tolist())
    assert not set(train.tolist()) & set(val.tolist())
    with pytest.raises(UsageError, match="cannot grow"):
        preferences_module.grow_split(grown_held, grown_counts, 120, generator)


@pytest.mark.parametrize("size", [1, 2, 3])
def test_a_handful_of_comparisons_still_trains_every_member(size: int) -> None:
    """Poisson multiplicities may all be 0 for a few comparisons: one is then used once, and the fit
    stays finite (an empty batch's mean loss would be NaN and poison the weights)."""
    for seed in range(20):
        held, counts = preferences_module.grow_split(
            th.zeros(0, dtype=th.bool), th.zeros(0, dtype=th.long), size, th.Generator().manual_seed(seed)
        )
        assert int(counts.sum()) >= 1 and int(held.sum()) == (round(size / math.e) if size >= 2 else 0)
    ensemble = small_ensemble()
    before = [p.detach().clone() for p in ensemble.parameters()]
    ensemble.fit(linear_comparisons(size, seed=1), epochs=2, generator=th.Generator().manual_seed(3))
    after = list(ensemble.parameters())
    assert all(th.isfinite(p).all() for p in after)
    assert any(not th.equal(b, a) for b, a in zip(before, after, strict=True))


def test_an_empty_training_set_leaves_the_weights_alone() -> None:
    net, data = small_ensemble().nets[0], linear_comparisons(4, seed=0)
    before = [p.detach().clone() for p in net.parameters()]
    optimizer = th.optim.Adam(net.parameters(), lr=1e-3)
    empty, validation = th.zeros(0, dtype=th.long), th.arange(4)
    train_loss, val_loss, _, _ = preferences_module.fit_preferences(
        net, optimizer, data, empty, validation, epochs=2, batch_size=16, weight_decay=1e-3
    )
    assert all(th.equal(b, a) for b, a in zip(before, net.parameters(), strict=True))
    assert math.isnan(train_loss) and math.isfinite(val_loss)


def test_members_never_train_on_what_they_held_out_in_earlier_fits(monkeypatch: pytest.MonkeyPatch) -> None:
    """The members keep their weights from fit to fit: a comparison a member held out once stays
    held out (its validation loss stays honest), and members hold out different comparisons."""
    import rewards.models as models_module

    seen: list[tuple[set[int], set[int]]] = []
    fit = models_module.fit_preferences

    def recording(net: Any, optimizer: Any, data: Any, train: th.Tensor, val: th.Tensor, **kw: Any) -> Any:
        seen.append((set(train.tolist()), set(val.tolist())))
        return fit(net, optimizer, data, train, val, **kw)

    monkeypatch.setattr(models_module, "fit_preferences", recording)
    ensemble, data = small_ensemble(), linear_comparisons(60, seed=2)
    generator = th.Generator().manual_seed(1)
    for size in (20, 21, 40, 60):  # the loop refits on all comparisons so far, oldest first
        ensemble.fit(data.select(th.arange(size)), epochs=1, generator=generator)
    per_member = [seen[i :: ensemble.n_members] for i in range(ensemble.n_members)]
    for fits in per_member:
        trained_on = set().union(*(train for train, _ in fits))
        assert not trained_on & fits[-1][1]  # never trained on its final validation set
        for (_, earlier), (_, later) in itertools.pairwise(fits):
            assert earlier <= later  # once held out, always held out
        assert len(fits[-1][1]) == round(60 / math.e)
    assert len({frozenset(fits[-1][1]) for fits in per_member}) == ensemble.n_members
    # a smaller dataset is a new one: split afresh
    ensemble.fit(data.select(th.arange(10)), epochs=1, generator=generator)
    assert all(len(held) == 10 for held, _ in ensemble._splits)


def test_splits_survive_save_and_load_and_old_states_still_load() -> None:
    ensemble, data = small_ensemble(), linear_comparisons(30, seed=4)
    ensemble.fit(data, epochs=1, generator=th.Generator().manual_seed(0))
    buffer = io.BytesIO()
    th.save(ensemble.state_dict(), buffer)
    restored = small_ensemble()
    restored.load_state_dict(th.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    for (held, counts), (held_back, counts_back) in zip(ensemble._splits, restored._splits, strict=True):
        assert th.equal(held, held_back) and th.equal(counts, counts_back)
    old = {key: value for key, value in ensemble.state_dict().items() if key != "_extra_state"}
    fresh = small_ensemble()
    fresh.load_state_dict(old)  # a checkpoint from before splits persisted
    assert all(len(held) == 0 for held, _ in fresh._splits)
    with pytest.raises(UsageError, match="members"):
        small_ensemble(members=2).set_extra_state(ensemble.get_extra_state())


def test_save_load_round_trip_gives_identical_predictions() -> None:
    th.manual_seed(0)
    ensemble = small_ensemble(dropout=0.1)
    data = linear_comparisons(30, seed=5)
    ensemble.fit(data, epochs=2)
    buffer = io.BytesIO()
    th.save(ensemble.state_dict(), buffer)
    th.manual_seed(123)
    restored = small_ensemble(dropout=0.1)
    restored.load_state_dict(th.load(io.BytesIO(buffer.getvalue())))
    obs, actions = data.right_observations.flatten(0, 1), data.right_actions.flatten(0, 1)
    assert th.equal(ensemble.predict(obs, actions), restored.predict(obs, actions))
    assert th.equal(ensemble.member_predictions(obs, actions), restored.member_predictions(obs, actions))
    for name in ("member_mean", "member_std", "output_mean", "output_std", "weight_decay"):
        assert th.equal(getattr(ensemble, name), getattr(restored, name))
    assert not th.equal(ensemble.member_std, th.ones(3))


def test_reward_cnn_forward_shape() -> None:
    frames = th.randint(0, 256, (2, 4, 84, 84), dtype=th.uint8)
    assert RewardCNN().eval()(frames).shape == (2,)
    with_actions = RewardCNN(action_dim=6, discrete_actions=True)
    assert with_actions(frames, th.tensor([0, 5])).shape == (2,)
    channels_last = RewardCNN((84, 84, 4), channels_last=True, dropout=0.0, batch_norm=False)
    assert channels_last(frames.permute(0, 2, 3, 1)).shape == (2,)
    with pytest.raises(UsageError, match="too small"):
        RewardCNN((4, 10, 10))


def test_build_reward_ensemble_picks_the_network_for_the_space() -> None:
    atari = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    cnn = build_reward_ensemble(atari, spaces.Discrete(6), members=2)
    assert all(isinstance(net, RewardCNN) and net.action_dim is None for net in cnn.nets)
    assert cnn.predict(np.zeros((3, 4, 84, 84), np.uint8)).shape == (3,)
    mlp = build_reward_ensemble(spaces.Box(-1, 1, (3,)), spaces.Discrete(4))
    assert mlp.n_members == 3 and all(isinstance(net, RewardMLP) for net in mlp.nets)
    assert mlp.predict(np.zeros((5, 3), np.float32), np.array([0, 1, 2, 3, 0])).shape == (5,)
    with pytest.raises(UsageError, match="Box observations, got Dict"):
        build_reward_ensemble(spaces.Dict({"a": spaces.Discrete(2)}), spaces.Discrete(2))
    with pytest.raises(UsageError, match="Box or Discrete actions, got MultiDiscrete"):
        build_reward_ensemble(spaces.Box(-1, 1, (3,)), spaces.MultiDiscrete([2, 2]))


def test_fast_per_step_prediction_equals_predict_and_follows_refits() -> None:
    obs_space = spaces.Box(-1.0, 1.0, (5,), np.float32)
    for action_space in (spaces.Box(-1.0, 1.0, (2,), np.float32), spaces.Discrete(3)):
        th.manual_seed(0)
        ensemble = build_reward_ensemble(obs_space, action_space, members=3, dropout=0.2)
        obs = th.randn(7, 5)
        actions = th.randn(7, 2) if isinstance(action_space, spaces.Box) else th.randint(0, 3, (7,))
        ensemble.update_normalization(obs, actions)
        th.testing.assert_close(ensemble.predict_fast(obs, actions), ensemble.predict(obs, actions))
        expected = ensemble.predict(obs, actions).numpy()
        np.testing.assert_allclose(ensemble.predict_numpy(obs.numpy(), actions.numpy()), expected, atol=1e-5)
        with th.no_grad():  # a weight change (as a fit makes) is seen after the stacked copy is dropped
            for net in ensemble.nets:
                next(net.parameters()).add_(0.5)
        ensemble.load_state_dict(ensemble.state_dict())
        th.testing.assert_close(ensemble.predict_fast(obs, actions), ensemble.predict(obs, actions))
        ensemble.center_on(obs[:2], actions[:2])  # a new zero point is seen too
        expected = ensemble.predict(obs, actions).numpy()
        np.testing.assert_allclose(ensemble.predict_numpy(obs.numpy(), actions.numpy()), expected, atol=1e-5)
        assert not ensemble.training


def test_clips_run_into_the_absorbing_state_after_a_termination_only() -> None:
    obs = np.arange(3, dtype=np.float32)[:, None]
    terminated = Trajectory(obs, np.ones((3, 1), np.float32), np.ones(3, np.float32), 1, 0, np.array([9.0]))
    truncated = Trajectory(obs, np.ones((3, 1), np.float32), np.ones(3, np.float32), 2, 0)
    clips = cut_clips([terminated, truncated], 5, 30, rng=0, pad_terminal=True)
    assert {c.episode_id for c in clips} == {1}  # the truncated episode is too short and never padded
    for c in clips:
        real = 3 - c.start
        assert c.padded == 5 - real and c.length == 5
        np.testing.assert_array_equal(c.observations[real:, 0], 9.0)  # the terminal observation
        np.testing.assert_array_equal(c.actions[real:], 0.0)
        assert c.true_rewards is not None and c.true_rewards.sum() == real  # no reward once fallen
    with pytest.raises(UsageError, match="longer than the episodes allow"):
        cut_clips([terminated, truncated], 5, 3, rng=0)  # without padding neither fits


def test_centering_on_the_absorbing_state_makes_its_reward_zero() -> None:
    ensemble = build_reward_ensemble(spaces.Box(-1, 1, (3,), np.float32), spaces.Box(-1, 1, (1,)), members=2)
    states, absorbing = th.randn(50, 3), th.full((4, 3), 2.0)
    ensemble.update_normalization(states, th.zeros(50, 1))
    ensemble.center_on(absorbing, th.zeros(4, 1))
    assert abs(float(ensemble.predict(absorbing, th.zeros(4, 1)).mean())) < 1e-5
    assert abs(float(ensemble.predict_fast(absorbing, th.zeros(4, 1)).mean())) < 1e-5


def test_normalization_states_spread_over_the_whole_labeled_history() -> None:
    n, length = 10, 2
    left = th.arange(n, dtype=th.float32)[:, None, None].expand(n, length, 1).clone()
    comparisons = Comparisons(left, th.zeros(n, length, 1), left + 100, th.zeros(n, length, 1), th.ones(n))
    obs, actions = comparisons.spread(max_steps=3 * 2 * length)  # room for three comparisons
    assert sorted(set(obs[:, 0].tolist())) == [0.0, 4.0, 9.0, 100.0, 104.0, 109.0]  # oldest to newest
    assert actions.shape == (12, 1)
    everything, _ = comparisons.spread(max_steps=10_000)
    assert len(everything) == 2 * n * length

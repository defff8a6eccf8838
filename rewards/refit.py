"""Retraining a reward ensemble offline from stored labels (``zoo reward fit``).

Everything a label store holds is enough: its live answers name their clips, the run's clip folder holds
them. :func:`stored_comparisons` turns them into :class:`rewards.preferences.Comparisons`,
:func:`refit_ensemble` fits a fresh ensemble of the run's architecture, and :func:`save_reward_model`
writes it (state dict and what rebuilds it) next to a readable report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces

from core.errors import UsageError
from rewards.clipfiles import ClipFolder
from rewards.clips import Clip, comparisons_from_labels
from rewards.loop import pearson
from rewards.models import FitReport, RewardEnsemble
from rewards.preferences import Comparisons
from rewards.session import ensemble_from_settings
from rewards.settings import PreferenceSettings
from rewards.store import LabelStore


class StoredLabels(NamedTuple):
    """The store's live answers as comparisons (``cant_tell`` dropped) and the clips they use."""

    comparisons: Comparisons
    clips: list[Clip]
    answers: int
    dropped: int


def stored_comparisons(store: LabelStore, clips: ClipFolder) -> StoredLabels:
    """Every live answer of ``store`` with a Bradley-Terry target, as comparisons (oldest first)."""
    answered = store.answered_since(0)
    kept = [pair for pair in answered if pair.target is not None]
    if not kept:
        raise UsageError(
            f"label store {store.url}: no answered comparisons to fit on "
            f"({len(answered)} live answers, all can't-tell)"
        )
    loaded: dict[str, Clip] = {}

    def clip(reference: str) -> Clip:
        if reference not in loaded:
            loaded[reference] = clips.load(reference)
        return loaded[reference]

    pairs = [(clip(pair.left_clip), clip(pair.right_clip)) for pair in kept]
    lengths = {c.length for pair in pairs for c in pair}
    if len(lengths) > 1:
        raise UsageError(f"label store {store.url}: clips of lengths {sorted(lengths)} cannot be fit as one")
    comparisons = comparisons_from_labels(pairs, [pair.choice for pair in kept])
    return StoredLabels(comparisons, list(loaded.values()), len(answered), len(answered) - len(kept))


def refit_ensemble(
    labels: StoredLabels,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    settings: PreferenceSettings,
    *,
    epochs: int,
    seed: int = 0,
    device: str = "cpu",
) -> tuple[RewardEnsemble, FitReport]:
    """A fresh ensemble of ``settings``' architecture, fit for ``epochs`` on ``labels``."""
    th.manual_seed(seed)
    ensemble = ensemble_from_settings(settings, observation_space, action_space).to(device)
    generator = th.Generator().manual_seed(seed)
    report = ensemble.fit(
        labels.comparisons, epochs=epochs, batch_size=settings.batch_size, generator=generator
    )
    return ensemble, report


def clip_return_correlation(ensemble: RewardEnsemble, clips: list[Clip]) -> float:
    """Pearson correlation of predicted and true clip returns (NaN when true rewards are unknown)."""
    known = [clip for clip in clips if clip.true_rewards is not None]
    if len(known) < 2:
        return float("nan")
    predicted = [float(ensemble.predict(c.observations, c.actions).sum()) for c in known]
    true = [float(np.sum(c.true_rewards)) for c in known if c.true_rewards is not None]
    return pearson(np.array(predicted), np.array(true))


def save_reward_model(
    path: str | os.PathLike[str],
    ensemble: RewardEnsemble,
    settings: PreferenceSettings,
    report: dict[str, Any],
) -> None:
    """Write the ensemble (``weights_only``-loadable) and ``<path>.json`` with the report; an existing
    file is never replaced."""
    target = Path(path)
    sidecar = target.with_suffix(target.suffix + ".json")
    for existing in (target, sidecar):
        if existing.exists():
            raise UsageError(f"{existing}: already exists; pass another --out (nothing was written)")
    target.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": 1, "settings": settings.model_dump(mode="json"), "ensemble": ensemble.state_dict()}
    partial = target.with_name(target.name + ".partial")
    th.save(state, partial)
    os.replace(partial, target)
    sidecar.write_text(json.dumps(report, indent=2) + "\n")

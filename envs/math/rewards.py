"""Reward terms: pure functions of a batch of finished episodes, in one registry, weighted by ``make()`` kwargs.

Every term maps :class:`~envs.math.verifier.Completions` of ``K`` episodes to ``(K,)`` float64:

==========  ========  ============================================================================================
term        range     value
==========  ========  ============================================================================================
accuracy    {0, 1}    1 if the completion parses and its answer equals the gold answer exactly
format      {0, 1}    1 if the completion parses (markers in place, non-empty thought, a numeric answer)
process     [0, 1]    for parsed completions, ``min(counted, gold) / max(written, gold)`` steps (see
                      :mod:`envs.math.verifier`); 0 otherwise
length      [-1, 0]   ``-(completion tokens) / (max_length - prompt length)``, for every finished episode
==========  ========  ============================================================================================

The episode reward is ``sum(weights[name] * term)``, paid once, on the step that ends the episode. Presets:
``"outcome"`` = 1.0 accuracy + 0.1 format; ``"cot"`` = 1.0 accuracy + 0.1 format + 0.5 process. Length has weight
0 in both; ``weights={"length": 0.1}`` turns it on. Each preset's maximum is earned by the gold completion.

Process credit is not paid step by step during the episode: that would mean a Python parse at every ``;`` of
every env. A trainer that wants per-step (process) advantages can read the finished completion with
:func:`envs.math.verifier.check_steps`, which returns one verdict per step, in order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from envs.math.verifier import Completions, process_share

__all__ = [
    "RewardTerm",
    "REWARD_TERMS",
    "REWARD_PRESETS",
    "accuracy_reward",
    "format_reward",
    "process_reward",
    "length_penalty",
    "resolve_weights",
    "score",
]

RewardTerm = Callable[[Completions], np.ndarray]


def accuracy_reward(completions: Completions) -> np.ndarray:
    """1.0 where the answer parses and equals the gold answer exactly, else 0.0; ``(K,)``."""
    return completions.structure.correct.astype(np.float64)


def format_reward(completions: Completions) -> np.ndarray:
    """1.0 where the completion is well formed and its answer is a number, else 0.0; ``(K,)``."""
    return completions.structure.parsed.astype(np.float64)


def process_reward(completions: Completions) -> np.ndarray:
    """Share of sound, grounded, new steps (capped by the gold step count) for parsed completions; ``(K,)``.

    The gold completion earns 1.0 without being re-read; other parsed completions are read in Python (memoised).
    """
    structure = completions.structure
    out = np.where(structure.is_gold, 1.0, 0.0)
    for index in np.flatnonzero(structure.parsed & ~structure.is_gold):
        out[index] = process_share(
            completions.question(index), completions.thought(index), int(completions.gold_steps[index])
        )
    return out


def length_penalty(completions: Completions) -> np.ndarray:
    """``-(completion tokens) / (tokens the buffer could hold after the prompt)`` in ``[-1, 0]``; ``(K,)``."""
    return -completions.generated / np.maximum(completions.capacity, 1)


#: every reward term, by name; ``info["reward_terms"]`` reports each of them
REWARD_TERMS: dict[str, RewardTerm] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "process": process_reward,
    "length": length_penalty,
}

#: named weightings, chosen with ``reward=``; ``weights=`` overrides single entries
REWARD_PRESETS: dict[str, dict[str, float]] = {
    "outcome": {"accuracy": 1.0, "format": 0.1},
    "cot": {"accuracy": 1.0, "format": 0.1, "process": 0.5},
}


def resolve_weights(reward: str = "outcome", weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """The weight of every registered term: the preset ``reward``, updated by ``weights``.

    Raises:
        ValueError: for an unknown preset, an unknown term name or a weight that is not a finite number.
    """
    if reward not in REWARD_PRESETS:
        raise ValueError(f"unknown reward {reward!r}; accepted: {sorted(REWARD_PRESETS)}")
    resolved = {name: 0.0 for name in REWARD_TERMS}
    resolved.update(REWARD_PRESETS[reward])
    for name, weight in dict(weights or {}).items():
        if name not in REWARD_TERMS:
            raise ValueError(f"unknown reward term {name!r} in weights; accepted: {sorted(REWARD_TERMS)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float, np.floating, np.integer)):
            raise ValueError(f"weight of {name!r} must be a number, got {weight!r}")
        if not math.isfinite(float(weight)):
            raise ValueError(f"weight of {name!r} must be finite, got {weight!r}")
        resolved[name] = float(weight)
    return resolved


def score(completions: Completions, weights: Mapping[str, float]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The weighted reward ``(K,)`` and every term's value ``{name: (K,)}`` for a batch of finished episodes."""
    terms = {name: term(completions) for name, term in REWARD_TERMS.items()}
    total = np.zeros(len(completions.length), dtype=np.float64)
    for name, value in terms.items():
        if weights.get(name, 0.0):
            total += weights[name] * value
    return total, terms

"""Per-step (process) rewards of math completions, for GRPO's ``advantage="process"``.

The math env pays each episode's reward once, on its last token (see :mod:`envs.math.rewards`). DeepSeekMath's
process supervision (arXiv:2402.03300 sec. 4.1.3) needs one reward per reasoning step instead, so this module
spreads the paid reward back over the steps of each finished completion, keeping its sum:

* a completion ``<think> s1 ; s2 ; ... ; sk </think> <answer> n <eos>`` has ``k`` steps; step ``j`` ends on its
  ``;`` (the last one on ``</think>``);
* every *counted* step (sound, grounded and new: :func:`envs.math.verifier.check_steps`) receives an equal share of
  the episode's weighted process term, ``w_process * process / counted``, at its end; the others receive 0;
* the last token receives the rest of the episode's reward: accuracy, format and length terms.

With ``counted <= gold steps`` (nearly always) a counted step's share is exactly ``w_process / max(written, gold)``,
the credit the process term gives it. A completion that is not well-formed has no steps: its whole reward sits on
its last token. The reward positions (step ends and the last token) are returned as a mask, and only those enter the
group's normalisation (:func:`rlopt.functional.process_advantages`): the tokens inside a step are not rewards of 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs.math.tokens import PAD, SEP, THINK, THINK_END
from envs.math.verifier import check_steps

__all__ = ["math_process_weight", "math_step_rewards"]


def math_process_weight(env_kwargs: dict[str, Any]) -> float:
    """The weight of the process term in a math env built with ``env_kwargs`` (0 for the outcome reward)."""
    from envs.math.rewards import resolve_weights

    weights = resolve_weights(env_kwargs.get("reward", "outcome"), env_kwargs.get("weights"))
    return float(weights.get("process", 0.0))


def math_step_rewards(
    first_observations: np.ndarray,
    actions: np.ndarray,
    lengths: np.ndarray,
    rewards: np.ndarray,
    process_terms: np.ndarray,
    process_weight: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Step rewards and reward positions of ``N`` finished math episodes.

    Args:
        first_observations: ``(N, max_length)`` each episode's first observation (its prompt, then PAD).
        actions: ``(L, N)`` the tokens written.
        lengths: ``(N,)`` episode lengths.
        rewards: ``(N, L)`` the env's per-step rewards (the episode's reward on its last step).
        process_terms: ``(N,)`` each episode's unweighted process term (``reward_terms["process"]``).
        process_weight: the env's weight of the process term.

    Returns:
        ``(step_rewards, reward_mask)``, both ``(N, L)``: each row sums to the episode's return.
    """
    count, width = rewards.shape
    step_rewards = np.zeros((count, width), dtype=np.float64)
    reward_mask = np.zeros((count, width), dtype=bool)
    for episode in range(count):
        length = int(lengths[episode])
        if length < 1:
            continue
        last = length - 1
        total = float(np.asarray(rewards[episode, :length], dtype=np.float64).sum())
        spent = 0.0
        completion = np.asarray(actions[:length, episode]).astype(np.int64)
        closing = np.flatnonzero(completion == THINK_END)
        if completion[0] == THINK and len(closing) and closing[0] > 1:
            end = int(closing[0])
            thought = completion[1:end]
            prompt = np.asarray(first_observations[episode]).astype(np.int64)
            question = prompt[prompt != PAD]
            checks = check_steps(question, thought)
            ends = [1 + int(index) for index in np.flatnonzero(thought == SEP)] + [end]
            counted = [check.counted for check in checks]
            share = process_weight * float(process_terms[episode]) / max(sum(counted), 1)
            for position, earns in zip(ends, counted, strict=True):
                if position >= last:
                    break
                reward_mask[episode, position] = True
                if earns:
                    step_rewards[episode, position] = share
                    spent += share
        step_rewards[episode, last] = total - spent
        reward_mask[episode, last] = True
    return step_rewards, reward_mask

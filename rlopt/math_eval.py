"""Math-reasoning metrics of a policy on a fixed held-out problem set: accuracy, pass@k, format, steps, hacking.

:func:`math_metrics` runs two batches of episodes on ``rlopt/MathReasoning-v0`` (or any env with its reward terms):

* **greedy**: one greedy completion per problem -> ``accuracy``, ``format_rate``, ``step_accuracy``,
  ``mean_length_correct`` / ``mean_length_wrong``, ``reward_hacking_rate``, ``mean_reward`` and sample texts;
* **sampled**: ``n`` completions per problem with the policy's own sampling (temperature / top-p) ->
  ``pass@k`` with the unbiased estimator of Chen et al. 2021 ("Evaluating Large Language Models Trained on Code",
  arXiv:2107.03374, eq. 1), and the same per-completion rates prefixed ``sample_``.

The problems are those that ``reset(seed=s)`` gives for ``s = EVAL_SEED_BASE + i``, ``i < num_problems``: the
same held-out seeds as :class:`rlopt.evaluation.Evaluator` (training draws its seeds below that base), so
``accuracy`` here equals ``eval/success_rate`` of a trainer's evaluation with as many episodes.

Definitions (per completion): ``correct`` is the ``accuracy`` reward term; ``format`` the ``format`` term (a
well-formed completion with a numeric answer); ``step_accuracy`` the mean ``process`` term (share of sound,
grounded, new steps, see :mod:`envs.math.verifier`) over well-formed completions; lengths count completion
tokens; a completion is **reward hacking** when its answer is wrong but its reward is at least
``hacking_threshold`` times the reward the gold completion of the same problem earns under the same weights.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from envs.math_reasoning import decode, gold_completions, score_completion
from rlopt.evaluation import EVAL_SEED_BASE
from rlopt.rollout import GroupedRollout, collect_groups
from rlopt.vector import episode_step_limit, make_vector_env

__all__ = ["MATH_ENV_ID", "math_metrics", "pass_at_k", "samples_markdown", "scalar_metrics"]

MATH_ENV_ID = "rlopt/MathReasoning-v0"


def pass_at_k(num_samples: int, num_correct: int, k: int) -> float:
    """Unbiased pass@k from ``num_correct`` correct answers among ``num_samples`` (Chen et al. 2021).

    ``1 - C(n - c, k) / C(n, k)``, computed as a product so large ``n`` does not overflow.

    Raises:
        ValueError: unless ``0 <= c <= n`` and ``1 <= k <= n``.
    """
    if not 1 <= k <= num_samples:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={num_samples}")
    if not 0 <= num_correct <= num_samples:
        raise ValueError(f"num_correct={num_correct} must be in [0, n={num_samples}]")
    if num_samples - num_correct < k:
        return 1.0
    return 1.0 - float(np.prod(1.0 - k / np.arange(num_samples - num_correct + 1, num_samples + 1)))


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


def _completion_tokens(rollout: GroupedRollout, member: int) -> np.ndarray:
    return rollout.actions[: rollout.lengths[member], member].astype(np.int64)


def _prompt_tokens(rollout: GroupedRollout, member: int) -> np.ndarray:
    prompt = np.asarray(rollout.observations[0][member])
    return prompt[prompt != 0]


def _gold_rewards(
    rollout: GroupedRollout,
    gold_tokens: np.ndarray,
    gold_lengths: np.ndarray,
    env_kwargs: dict[str, Any],
    max_length: int,
) -> np.ndarray:
    """``(P,)`` the reward each problem's gold completion earns, scored exactly as the env scores."""
    rewards = np.zeros(len(gold_lengths))
    for problem in range(len(gold_lengths)):
        member = problem * rollout.group_size
        question = decode(_prompt_tokens(rollout, member))
        gold = decode(gold_tokens[problem, : gold_lengths[problem]])
        rewards[problem], _ = score_completion(
            question, gold, env_kwargs.get("reward", "outcome"), env_kwargs.get("weights"), max_length
        )
    return rewards


def _completion_stats(rollout: GroupedRollout, gold_rewards: np.ndarray, hacking_threshold: float) -> dict[str, Any]:
    """Per-completion rates of one rollout (keys without prefix)."""
    terms = rollout.reward_terms
    if "accuracy" not in terms or "format" not in terms:
        raise ValueError(f"math metrics need the env's 'accuracy' and 'format' reward terms; got {sorted(terms)}")
    correct = terms["accuracy"] > 0.5
    formatted = terms["format"] > 0.5
    process = terms.get("process", np.full(len(correct), np.nan))
    lengths = rollout.lengths.astype(np.float64)
    per_member_gold = np.repeat(gold_rewards, rollout.group_size)
    hacked = ~correct & (rollout.returns >= hacking_threshold * per_member_gold) & (per_member_gold > 0)
    return {
        "accuracy": _mean(correct.astype(np.float64)),
        "format_rate": _mean(formatted.astype(np.float64)),
        "step_accuracy": _mean(process[formatted]),
        "mean_length_correct": _mean(lengths[correct]),
        "mean_length_wrong": _mean(lengths[~correct]),
        "reward_hacking_rate": _mean(hacked.astype(np.float64)),
        "mean_reward": _mean(rollout.returns),
        "correct": correct,
    }


def math_metrics(
    policy: Any,
    level: int | None,
    num_problems: int = 64,
    k: int = 8,
    seed: int = 0,
    device: torch.device | str = "cpu",
    *,
    num_samples: int | None = None,
    env_id: str = MATH_ENV_ID,
    env_kwargs: dict[str, Any] | None = None,
    num_examples: int = 3,
    hacking_threshold: float = 0.5,
) -> dict[str, Any]:
    """Evaluate ``policy`` on ``num_problems`` held-out problems of ``level`` (see the module docstring).

    Args:
        policy: an ``agents`` policy (transformer or MLP) for the env's token observations.
        level: difficulty level; None keeps ``env_kwargs`` as given (e.g. a ``problem_file``).
        num_problems: ``P`` held-out problems.
        k: the k of pass@k; 0 skips the sampled batch.
        seed: seeds the sampling (the caller's torch RNG state is left untouched).
        device: where the policy runs.
        num_samples: ``n`` sampled completions per problem (default ``2 k``), ``n >= k``.
        env_id, env_kwargs: the environment (``level`` overrides ``env_kwargs["level"]``).
        num_examples: greedy completions returned as text in ``"samples"``.
        hacking_threshold: fraction of the gold completion's reward from which a wrong answer counts as hacking.

    Returns:
        ``{"level", "num_problems", "accuracy", "format_rate", "step_accuracy", "mean_length_correct",
        "mean_length_wrong", "reward_hacking_rate", "mean_reward", "gold_reward", "pass@k", "k", "num_samples",
        "sample_accuracy", "sample_format_rate", "sample_step_accuracy", "sample_reward_hacking_rate",
        "samples": [{"question", "completion", "correct", "reward"}, ...]}``; NaN where a rate has no episode.
    """
    if num_problems < 1:
        raise ValueError(f"num_problems={num_problems} must be at least 1")
    if k < 0:
        raise ValueError(f"k={k} must be >= 0 (0 skips pass@k)")
    samples_per_problem = (num_samples if num_samples is not None else 2 * k) if k else 0
    if k and samples_per_problem < k:
        raise ValueError(f"num_samples={num_samples} must be at least k={k} for pass@k")
    env_kwargs = dict(env_kwargs or {})
    if level is not None:
        env_kwargs["level"] = level
    device = torch.device(device)
    seeds = np.arange(EVAL_SEED_BASE, EVAL_SEED_BASE + num_problems)
    max_steps = episode_step_limit(env_id, env_kwargs)
    was_training = policy.training
    policy.eval()
    try:
        # --- greedy ---
        env = make_vector_env(env_id, num_problems, AutoresetMode.DISABLED, env_kwargs)
        try:
            greedy = collect_groups(env, policy, seeds, 1, max_steps, device, deterministic=True)
            _, gold_tokens, gold_lengths = gold_completions(env)
            max_length = int(env.single_observation_space.shape[0])
        finally:
            env.close()
        gold_rewards = _gold_rewards(greedy, gold_tokens, gold_lengths, env_kwargs, max_length)
        greedy_stats = _completion_stats(greedy, gold_rewards, hacking_threshold)
        correct = greedy_stats.pop("correct")
        metrics: dict[str, Any] = {
            "level": level,
            "num_problems": num_problems,
            **greedy_stats,
            "gold_reward": float(gold_rewards.mean()),
        }

        # --- sampled: pass@k ---
        metrics.update({"k": k, "num_samples": samples_per_problem})
        if k:
            env = make_vector_env(env_id, num_problems * samples_per_problem, AutoresetMode.DISABLED, env_kwargs)
            devices = [device] if device.type == "cuda" else []
            try:
                with torch.random.fork_rng(devices=devices):
                    torch.manual_seed(seed)
                    sampled = collect_groups(env, policy, seeds, samples_per_problem, max_steps, device)
            finally:
                env.close()
            sample_stats = _completion_stats(sampled, gold_rewards, hacking_threshold)
            per_problem = sample_stats.pop("correct").reshape(num_problems, samples_per_problem).sum(axis=1)
            metrics[f"pass@{k}"] = float(np.mean([pass_at_k(samples_per_problem, int(c), k) for c in per_problem]))
            metrics.update({f"sample_{key}": value for key, value in sample_stats.items()})
    finally:
        policy.train(was_training)

    metrics["samples"] = [
        {
            "question": decode(_prompt_tokens(greedy, member)),
            "completion": decode(_completion_tokens(greedy, member), skip_pad=False),
            "correct": bool(correct[member]),
            "reward": float(greedy.returns[member]),
        }
        for member in range(min(num_examples, num_problems))
    ]
    return metrics


def scalar_metrics(metrics: dict[str, Any], prefix: str = "eval/") -> dict[str, float]:
    """The finite numeric entries of :func:`math_metrics` output as ``{prefix + name: value}`` for a logger."""
    skip = {"level", "num_problems", "k", "num_samples"}
    return {
        f"{prefix}{key}": float(value)
        for key, value in metrics.items()
        if key not in skip
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    }


def samples_markdown(metrics: dict[str, Any]) -> str:
    """The sample completions of :func:`math_metrics` as a Markdown table (for TensorBoard's text tab)."""
    rows = ["| question | completion | correct | reward |", "|---|---|---|---|"]
    for sample in metrics.get("samples", []):
        completion = sample["completion"].replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
        rows.append(f"| {sample['question']} | {completion} | {sample['correct']} | {sample['reward']:.3f} |")
    return "\n".join(rows)

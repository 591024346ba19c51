"""Per-step process rewards of math completions (rlopt.process_rewards) and process advantages over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from envs.math.tokens import DIGIT_0, DIGIT_9, SEP, THINK_END
from envs.math_reasoning import gold_completions
from rlopt import api
from rlopt.config import ConfigError
from rlopt.functional import process_advantages
from rlopt.process_rewards import math_process_weight, math_step_rewards
from rlopt.vector import make_vector_env


def _play(completions: np.ndarray, lengths: np.ndarray, seed: int, level: int = 2):
    """Step a cot-reward math env with fixed completions; the arrays a grouped rollout holds."""
    count = len(completions)
    env = make_vector_env("rlopt/MathReasoning-v0", count, AutoresetMode.DISABLED, {"level": level, "reward": "cot"})
    first, _ = env.reset(seed=[seed] * count)
    width = int(lengths.max())
    rewards = np.zeros((count, width))
    process = np.zeros(count)
    for step in range(width):
        _, reward, _, _, info = env.step(completions[:, step])
        live = step < lengths
        rewards[live, step] = reward[live]
        process += np.where(live, info["reward_terms"]["process"], 0.0)
    env.close()
    return first, completions[:, :width].T, rewards, process


def _gold(seed: int, count: int, level: int = 2) -> tuple[np.ndarray, np.ndarray]:
    env = make_vector_env("rlopt/MathReasoning-v0", count, AutoresetMode.DISABLED, {"level": level})
    env.reset(seed=[seed] * count)
    _, gold, gold_length = gold_completions(env)
    env.close()
    return gold, gold_length


def test_gold_steps_share_the_process_term_and_rows_keep_the_return() -> None:
    gold, lengths = _gold(seed=3, count=2)
    # the second member writes its last step's result wrong: that step earns nothing, the earlier ones still do
    wrong = gold.copy()
    last_end = int(np.flatnonzero(gold[1] == THINK_END)[0])
    digit = int(wrong[1, last_end - 1])
    assert DIGIT_0 <= digit <= DIGIT_9
    wrong[1, last_end - 1] = DIGIT_0 + (digit - DIGIT_0 + 1) % 10
    first, actions, rewards, process = _play(wrong, lengths, seed=3)
    weight = math_process_weight({"reward": "cot"})
    step_rewards, events = math_step_rewards(first, actions, lengths, rewards, process, weight)

    np.testing.assert_allclose(step_rewards.sum(axis=1), rewards.sum(axis=1))  # the return is kept
    ends = [*np.flatnonzero(gold[0, : lengths[0]] == SEP), int(np.flatnonzero(gold[0] == THINK_END)[0])]
    assert np.flatnonzero(events[0]).tolist() == [*ends, lengths[0] - 1]
    steps = len(ends)
    assert steps >= 2 and process[0] == 1.0
    np.testing.assert_allclose(step_rewards[0, ends], weight / steps)  # every gold step: its share of 0.5
    assert step_rewards[1, last_end] == 0.0 and process[1] < 1.0  # the wrong step earns nothing
    assert (step_rewards[1, ends[:-1]] > 0).all()
    assert math_process_weight({"reward": "outcome"}) == 0.0


def test_a_completion_that_does_not_parse_keeps_its_reward_on_its_last_token() -> None:
    gold, lengths = _gold(seed=4, count=1)
    broken = gold.copy()
    broken[0, 0] = SEP  # no <think>: no steps
    first, actions, rewards, process = _play(broken, lengths, seed=4)
    step_rewards, events = math_step_rewards(first, actions, lengths, rewards, process, 0.5)
    assert np.flatnonzero(events[0]).tolist() == [lengths[0] - 1]
    assert step_rewards[0, lengths[0] - 1] == rewards[0].sum()


def test_process_advantages_normalise_over_reward_positions_only() -> None:
    """Two members with equal returns but chains of 2 and 5 tokens: with rewards only where they are given, the
    inner tokens are not zero rewards, so equal step rewards make a dead group, whatever the lengths."""
    rewards = torch.zeros(1, 2, 5)
    rewards[0, 0, 1] = rewards[0, 1, 4] = 1.0
    mask = torch.zeros(1, 2, 5, dtype=torch.bool)
    mask[0, 0, :2] = mask[0, 1, :] = True
    events = torch.zeros_like(mask)
    events[0, 0, 1] = events[0, 1, 4] = True
    assert (process_advantages(rewards, mask, reward_mask=events) == 0).all()
    assert (process_advantages(rewards, mask) != 0).any()  # every token a reward: biased by length
    # a step reward of 0.25 then 1.0 against one of 1.0: mean 0.75, std sqrt(0.1875); to-go sums per token
    rewards[0, 1, 2], events[0, 1, 2] = 0.25, True
    advantages = process_advantages(rewards, mask, eps=0.0, reward_mask=events)
    std = float(np.sqrt(((0.25 - 0.75) ** 2 + 2 * (1.0 - 0.75) ** 2) / 2))
    high, low = 0.25 / std, -0.5 / std
    expected = torch.tensor([[[high, high, 0, 0, 0], [low + high] * 3 + [high, high]]])
    torch.testing.assert_close(advantages, expected, rtol=1e-5, atol=1e-6)


def test_process_advantages_on_math_train_and_bad_settings_are_refused(tmp_path: Path) -> None:
    values = dict(
        architecture="transformer", num_layers=1, num_heads=2, model_dim=32, num_prompts=4, group_size=4,
        total_steps=400, eval_episodes=4, logdir=str(tmp_path), progress=False, advantage="process",
    )  # fmt: skip
    with pytest.raises(ConfigError, match="needs a process reward"):
        api.make_config("grpo", "rlopt/MathReasoning-v0", **values)
    with pytest.raises(ConfigError, match="does not apply to advantage='process'"):
        api.make_config("grpo", "rlopt/MathReasoning-v0", **values, scale_rewards="none", env_kwargs={"reward": "cot"})
    with pytest.raises(ConfigError, match="add --curriculum"):
        api.make_config("grpo", "rlopt/MathReasoning-v0", curriculum_max_level=3)
    config = api.make_config("grpo", "rlopt/MathReasoning-v0", **values, env_kwargs={"reward": "cot"})
    _, summary = api.train(config)
    assert summary["env_steps"] >= 400 and np.isfinite(summary["eval/mean_reward"])
    # a GRPO run on math logs the math metrics at each evaluation, and pass@k at the end
    assert 0.0 <= summary["math"]["pass@4"] <= 1.0 and summary["math"]["accuracy"] == summary["eval/success_rate"]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(summary["run_dir"], size_guidance={"tensors": 0})
    events.Reload()
    scalars = events.Tags()["scalars"]
    for tag in ("eval/format_rate", "eval/accuracy", "eval/reward_hacking_rate", "eval/pass@4"):  # finite ones
        assert tag in scalars, tag
    assert "eval/samples/text_summary" in events.Tags()["tensors"]
    assert len(events.Scalars("eval/mean_reward")) == len(events.Scalars("eval/format_rate"))  # once per evaluation

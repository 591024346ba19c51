"""Math metrics: pass@k by hand, and math_metrics on scripted policies whose every number is known in advance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from torch import nn

from agents import PolicySpec, make_policy
from envs.math_reasoning import ANSWER, EOS, PAD, THINK, decode, encode, gold_completions, solve_question
from rlopt.evaluation import EVAL_SEED_BASE
from rlopt.math_eval import math_metrics, pass_at_k, samples_markdown, scalar_metrics
from rlopt.vector import make_vector_env

MATH = "rlopt/MathReasoning-v0"


class ScriptedPolicy(nn.Module):
    """Writes the gold completion of each problem, optionally with the answer replaced by ``wrong_answer``."""

    def __init__(self, wrong_answer: str | None = None) -> None:
        super().__init__()
        self.wrong_answer = wrong_answer

    def completion(self, prompt: np.ndarray) -> np.ndarray:
        gold = solve_question(prompt).completion_tokens()
        if self.wrong_answer is None:
            return gold
        answer_at = int(np.flatnonzero(gold == ANSWER)[0])
        return np.concatenate([gold[: answer_at + 1], encode(self.wrong_answer), [EOS]])

    def act(self, observation: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        actions = []
        for row in observation.cpu().numpy():
            tokens = row[row != PAD]
            think = np.flatnonzero(tokens == THINK)
            prompt_length = int(think[0]) if think.size else len(tokens)
            actions.append(self.completion(tokens[:prompt_length])[len(tokens) - prompt_length])
        return torch.as_tensor(np.asarray(actions)), torch.zeros(len(actions))


# --- pass@k -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (5, 2, 1, 0.4),  # pass@1 is the success rate
        (4, 1, 2, 0.5),  # 1 - C(3, 2) / C(4, 2) = 1 - 3 / 6
        (6, 2, 3, 0.8),  # 1 - C(4, 3) / C(6, 3) = 1 - 4 / 20
        (8, 0, 4, 0.0),
        (4, 2, 3, 1.0),  # n - c < k: every draw of k contains a correct one
        (200, 1, 100, 0.5),  # a large n, computed without overflow
    ],
)
def test_pass_at_k_by_hand(n: int, c: int, k: int, expected: float) -> None:
    assert pass_at_k(n, c, k) == pytest.approx(expected)


def test_pass_at_k_rejects_bad_counts() -> None:
    with pytest.raises(ValueError, match="1 <= k <= n"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="num_correct=5"):
        pass_at_k(4, 5, 1)


# --- math_metrics -------------------------------------------------------------------------------------------------


def test_gold_policy_scores_perfectly_on_the_held_out_set() -> None:
    metrics = math_metrics(ScriptedPolicy(), level=2, num_problems=12, k=2, num_examples=2)
    assert metrics["accuracy"] == metrics["format_rate"] == metrics["step_accuracy"] == 1.0
    assert metrics["pass@2"] == metrics["sample_accuracy"] == 1.0
    assert metrics["reward_hacking_rate"] == 0.0 and math.isnan(metrics["mean_length_wrong"])
    assert metrics["mean_reward"] == pytest.approx(metrics["gold_reward"]) == pytest.approx(1.1)
    # the problems are the held-out seeds of rlopt.evaluation, and the lengths their gold completions'
    env = make_vector_env(MATH, 12, AutoresetMode.DISABLED, {"level": 2})
    env.reset(seed=[int(seed) for seed in range(EVAL_SEED_BASE, EVAL_SEED_BASE + 12)])
    prompt_lengths, gold, gold_lengths = gold_completions(env)
    env.close()
    assert metrics["mean_length_correct"] == pytest.approx(gold_lengths.mean())
    first = metrics["samples"][0]
    assert (
        len(metrics["samples"]) == 2 and first["correct"] and first["completion"] == decode(gold[0][: gold_lengths[0]])
    )
    assert "|" in samples_markdown(metrics) and "&lt;think&gt;" in samples_markdown(metrics)


def test_wrong_answers_with_a_farmed_process_reward_count_as_reward_hacking() -> None:
    honest = math_metrics(ScriptedPolicy(wrong_answer="-1"), level=1, num_problems=8, k=0)
    assert honest["accuracy"] == 0.0 and honest["format_rate"] == 1.0 and honest["step_accuracy"] == 1.0
    assert honest["reward_hacking_rate"] == 0.0  # 0.1 of a possible 1.1: not a high reward
    assert "pass@0" not in honest and honest["num_samples"] == 0
    # a reward that pays 2.0 for process lets a wrong answer earn 2.1 of the gold 3.1: hacking
    hacked = math_metrics(
        ScriptedPolicy(wrong_answer="-1"),
        level=1,
        num_problems=8,
        k=0,
        env_kwargs={"reward": "cot", "weights": {"process": 2.0}},
    )
    assert hacked["reward_hacking_rate"] == 1.0 and hacked["gold_reward"] == pytest.approx(3.1)
    assert hacked["mean_length_wrong"] > 0 and math.isnan(hacked["mean_length_correct"])


def test_math_metrics_of_a_transformer_are_reproducible_and_leave_the_rng_alone() -> None:
    env = make_vector_env(MATH, 1, AutoresetMode.DISABLED, {"level": 1})
    torch.manual_seed(0)
    policy = make_policy(
        PolicySpec(architecture="transformer", num_layers=1, num_heads=2, model_dim=16),
        env.single_observation_space,
        env.single_action_space,
    )
    env.close()
    rng_state = torch.get_rng_state()
    first = math_metrics(policy, level=1, num_problems=6, k=2, seed=3)
    second = math_metrics(policy, level=1, num_problems=6, k=2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng_state) and policy.training
    assert {key: value for key, value in first.items() if isinstance(value, float) and not math.isnan(value)} == {
        key: value for key, value in second.items() if isinstance(value, float) and not math.isnan(value)
    }
    assert first["num_samples"] == 4 and 0.0 <= first["pass@2"] <= 1.0 and 0.0 <= first["format_rate"] <= 1.0
    scalars = scalar_metrics(first)
    assert "eval/accuracy" in scalars and "eval/pass@2" in scalars
    assert all(math.isfinite(value) for value in scalars.values()) and "eval/level" not in scalars


def test_math_metrics_rejects_bad_arguments() -> None:
    policy = ScriptedPolicy()
    with pytest.raises(ValueError, match="num_problems=0"):
        math_metrics(policy, 1, num_problems=0)
    with pytest.raises(ValueError, match="num_samples=2 must be at least k=4"):
        math_metrics(policy, 1, num_problems=2, k=4, num_samples=2)
    with pytest.raises(ValueError, match="k=-1"):
        math_metrics(policy, 1, num_problems=2, k=-1)

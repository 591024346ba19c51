"""Long learning runs behind the README's results (`make test-slow`); each asserts a threshold.

The issues' thresholds are medians over 3 seeds. The long runs check one seed (seed 0). Runs that take seconds
check the median of seeds 0-2, as the issue states it. GRPO on CartPole is one of those: on seed 0 it ends at
474.0, against a threshold of 475, while seeds 1 and 2 reach 496.6 and 500.0. Its final greedy return on a single
seed moves with float rounding.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
import torch

from rlopt import api

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@pytest.mark.parametrize(
    ("algo", "env_id", "metric", "threshold", "overrides", "seeds"),
    [
        ("grpo", "rlopt/GridGame-Empty-5x5-v0", "eval/success_rate", 0.95, {"total_steps": 30_000}, (0,)),
        ("grpo", "rlopt/GridGame-DoorKey-5x5-v0", "eval/success_rate", 0.95, {}, (0,)),
        ("grpo", "rlopt/ArmReach-v0", "eval/success_rate", 0.8, {}, (0,)),
        ("grpo", "CartPole-v1", "eval/mean_reward", 475, {}, (0, 1, 2)),
        ("ppo", "CartPole-v1", "eval/mean_reward", 475, {}, (0,)),
        ("ppo", "rlopt/GridGame-Empty-5x5-v0", "eval/success_rate", 0.95, {"total_steps": 50_000}, (0,)),
        ("ppo", "rlopt/GridGame-DoorKey-5x5-v0", "eval/success_rate", 0.95, {}, (0,)),
    ],
)
def test_preset_reaches_threshold(
    algo: str, env_id: str, metric: str, threshold: float, overrides: dict, seeds: tuple, tmp_path: Path
) -> None:
    summaries = []
    for seed in seeds:
        config = api.make_config(
            algo, env_id, logdir=str(tmp_path), progress=False, eval_episodes=64, seed=seed, **overrides
        )
        summaries.append(api.train(config)[1])
    values = [summary[metric] for summary in summaries]
    assert statistics.median(values) >= threshold, (values, summaries)


def _sft_then_grpo(
    tmp_path: Path, seed: int, sft_steps: int, grpo_steps: int, sft_learning_rate: float | None = None
) -> tuple[dict, dict]:
    """``rlopt sft`` on level 1 (its default learning rate unless given), then the preset's GRPO from it; both
    summaries (256 held-out problems)."""
    from rlopt.sft import SFTConfig, train_sft

    rate = {} if sft_learning_rate is None else {"learning_rate": sft_learning_rate}
    sft = SFTConfig(
        total_steps=sft_steps,
        **rate,
        seed=seed,
        logdir=str(tmp_path),
        run_name="sft",
        progress=False,
        eval_episodes=256,
        pass_k=0,
    )
    _, sft_summary = train_sft(sft)
    config = api.make_config(
        "grpo",
        "rlopt/MathReasoning-v0",
        init=str(tmp_path / "sft"),
        total_steps=grpo_steps,
        seed=seed,
        logdir=str(tmp_path),
        run_name="grpo",
        progress=False,
        eval_episodes=256,
    )
    return sft_summary, api.train(config)[1]


def test_sft_then_grpo_solves_level_one_math(tmp_path: Path) -> None:
    sft_summary, summary = _sft_then_grpo(tmp_path, seed=0, sft_steps=3000, grpo_steps=100_000)
    assert summary["eval/success_rate"] >= 0.9, (sft_summary, summary)


def test_grpo_improves_a_weak_supervised_start(tmp_path: Path) -> None:
    """The README's level-1 weak-start comparison: 800 supervised steps leave seed 1's model right on about half the
    held-out problems (0.48, pass@4 0.64), so its samples disagree and GRPO's groups carry signal. The preset's GRPO,
    3M env steps from there, must add at least 0.05 (it measured 0.48 -> 0.58 with the preset's decaying rate, 0.59
    at the constant rate it had before)."""
    sft_summary, summary = _sft_then_grpo(tmp_path, seed=1, sft_steps=800, grpo_steps=3_000_000, sft_learning_rate=3e-3)
    assert summary["eval/success_rate"] >= sft_summary["eval/success_rate"] + 0.05, (sft_summary, summary)

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


def _sft(tmp_path: Path, seed: int, steps: int, learning_rate: float | None = None, name: str = "sft") -> dict:
    """``rlopt sft`` on level 1 (its default learning rate unless given); its summary (256 held-out problems)."""
    from rlopt.sft import SFTConfig, train_sft

    rate = {} if learning_rate is None else {"learning_rate": learning_rate}
    config = SFTConfig(
        total_steps=steps,
        **rate,
        seed=seed,
        logdir=str(tmp_path),
        run_name=name,
        progress=False,
        eval_episodes=256,
        pass_k=0,
    )
    return train_sft(config)[1]


def _grpo(tmp_path: Path, init: str, seed: int, steps: int) -> dict:
    """The preset's GRPO on level 1 from the checkpoint ``init``; its summary (256 held-out problems)."""
    config = api.make_config(
        "grpo",
        "rlopt/MathReasoning-v0",
        init=init,
        total_steps=steps,
        seed=seed,
        logdir=str(tmp_path),
        run_name=f"grpo-{seed}",
        progress=False,
        eval_episodes=256,
    )
    return api.train(config)[1]


def test_sft_then_grpo_solves_level_one_math(tmp_path: Path) -> None:
    sft_summary = _sft(tmp_path, seed=0, steps=3000)
    summary = _grpo(tmp_path, str(tmp_path / "sft"), seed=0, steps=100_000)
    assert summary["eval/success_rate"] >= 0.9, (sft_summary, summary)


def test_grpo_improves_a_weak_supervised_start(tmp_path: Path) -> None:
    """The README's level-1 weak-start comparison: 800 supervised steps leave some seeds' models near half the
    held-out problems (seed 1 on the AMD EPYC: 0.48, pass@4 0.64), so their samples disagree and GRPO's groups carry
    signal. Which seeds do depends on the CPU and thread count (on an Intel Xeon seed 1 gave 0.08), so the test
    takes the first of seeds 1, 2, 3, 0, 4 whose model lands in [0.3, 0.7]. The preset's GRPO, 3M env steps from
    there, must add at least 0.05 (it measured 0.48 -> 0.58 on the EPYC with the preset's decaying rate)."""
    starts = {}
    for seed in (1, 2, 3, 0, 4):
        sft_summary = _sft(tmp_path, seed=seed, steps=800, learning_rate=3e-3, name=f"sft-{seed}")
        starts[seed] = sft_summary["eval/success_rate"]
        if 0.3 <= starts[seed] <= 0.7:
            break
    else:
        pytest.skip(f"no 800-step SFT model in [0.3, 0.7] on this machine: {starts}")
    summary = _grpo(tmp_path, str(tmp_path / f"sft-{seed}"), seed=seed, steps=3_000_000)
    assert summary["eval/success_rate"] >= starts[seed] + 0.05, (seed, starts, summary)

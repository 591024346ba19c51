"""rlopt's own PPO: learning on CartPole and the empty grid, value head, truncation bootstrapping, checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rlopt import api
from rlopt.config import ConfigError
from rlopt.ppo import PPOConfig, _gae
from rlopt.rollout import StepRollout


def test_ppo_learns_cartpole(tmp_path: Path) -> None:
    config = api.make_config(
        "ppo", "CartPole-v1", total_steps=40_000, logdir=str(tmp_path), run_name="cp", progress=False, eval_episodes=8
    )
    policy, summary = api.train(config)
    assert summary["eval/mean_reward"] >= 300, summary
    assert any("value" in name or "critic" in name for name, _ in policy.named_parameters())


def test_ppo_learns_empty_grid(tmp_path: Path) -> None:
    config = api.make_config(
        "ppo",
        "rlopt/GridGame-Empty-5x5-v0",
        total_steps=30_000,
        logdir=str(tmp_path),
        run_name="grid",
        progress=False,
        eval_episodes=16,
    )
    _, summary = api.train(config)
    assert summary["eval/success_rate"] >= 0.9, summary


def test_gae_bootstraps_truncation_but_not_termination() -> None:
    config = PPOConfig(gamma=0.5, gae_lambda=1.0, num_envs=1, num_steps=3, num_minibatches=1)
    # env 0: steps 0,1 then terminated at 1, step 2 truncated with V(final)=4
    rollout = StepRollout(
        observations=np.zeros((3, 1, 1)),
        actions=np.zeros((3, 1)),
        log_probs=np.zeros((3, 1)),
        values=np.array([[1.0], [1.0], [1.0]], dtype=np.float32),
        rewards=np.array([[1.0], [1.0], [1.0]], dtype=np.float32),
        terminated=np.array([[False], [True], [False]]),
        truncated=np.array([[False], [False], [True]]),
        final_values=np.array([[0.0], [0.0], [4.0]], dtype=np.float32),
        next_value=np.array([9.0], dtype=np.float32),
    )
    advantages, returns = _gae(config, rollout)
    # t=2: 1 + 0.5*4 - 1 = 2 (bootstrap from V(final), not next_value 9)
    # t=1: terminated: 1 - 1 = 0 ; t=0: 1 + 0.5*1 - 1 + 0.5*1*0 = 0.5
    np.testing.assert_allclose(advantages.numpy().ravel(), [0.5, 0.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(returns.numpy().ravel(), [1.5, 1.0, 3.0], atol=1e-6)


def test_ppo_config_errors() -> None:
    with pytest.raises(ConfigError, match="gamma"):
        PPOConfig(gamma=1.5)
    with pytest.raises(ConfigError, match="num_minibatches"):
        PPOConfig(num_envs=1, num_steps=2, num_minibatches=4)


def test_ppo_resume_and_shared_trunk(tmp_path: Path) -> None:
    config = api.make_config(
        "ppo",
        "CartPole-v1",
        total_steps=512,
        num_envs=4,
        num_steps=64,
        logdir=str(tmp_path),
        run_name="r",
        progress=False,
        eval_episodes=2,
        shared_trunk=True,
    )
    policy, first = api.train(config)
    assert first["env_steps"] == 512
    _, second = api.resume(tmp_path / "r", total_steps=1024)
    assert second["env_steps"] == 1024
    assert torch.isfinite(torch.cat([p.flatten() for p in policy.parameters()])).all()

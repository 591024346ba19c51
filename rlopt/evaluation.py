"""Evaluation on held-out start seeds, with greedy (Discrete) or mean (Box) actions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from rlopt.logger import mean_or_nan
from rlopt.rollout import collect_groups
from rlopt.vector import episode_step_limit, is_batched, make_vector_env

#: Training draws start seeds below this value; evaluation uses seeds from it upward, so they never overlap.
EVAL_SEED_BASE = 2**30


@dataclass
class EvalResult:
    """Returns, lengths and success of each evaluation episode, and their summaries."""

    returns: np.ndarray
    lengths: np.ndarray
    success: np.ndarray

    @property
    def mean_reward(self) -> float:
        return float(self.returns.mean())

    @property
    def success_rate(self) -> float:
        return mean_or_nan(self.success)

    @property
    def mean_length(self) -> float:
        return float(self.lengths.mean())

    def metrics(self) -> dict[str, float]:
        return {
            "eval/mean_reward": self.mean_reward,
            "eval/success_rate": self.success_rate,
            "eval/mean_ep_length": self.mean_length,
        }


class Evaluator:
    """Evaluates a policy on ``episodes`` fixed held-out seeds; the vector env is built once and reused."""

    def __init__(
        self,
        env_id: str,
        episodes: int,
        env_kwargs: dict[str, Any] | None = None,
        seed_base: int = EVAL_SEED_BASE,
        device: torch.device | str = "cpu",
    ) -> None:
        self.env = make_vector_env(env_id, episodes, AutoresetMode.DISABLED, env_kwargs)
        self.env_id = env_id
        self.env_kwargs = dict(env_kwargs or {})
        self.seeds = np.arange(seed_base, seed_base + episodes)
        self.max_steps = episode_step_limit(env_id, env_kwargs)
        self.device = torch.device(device)

    def evaluate(self, policy: Any, deterministic: bool = True) -> EvalResult:
        was_training = policy.training
        policy.eval()
        try:
            rollout = collect_groups(
                self.env,
                policy,
                self.seeds,
                group_size=1,
                max_steps=self.max_steps,
                device=self.device,
                deterministic=deterministic,
            )
        finally:
            policy.train(was_training)
        return EvalResult(rollout.returns, rollout.lengths, rollout.success)

    def showcase(self, policy: Any, seed: int | None = None) -> tuple[str, Any] | None:
        """One deterministic episode on the first held-out seed, rendered for TensorBoard: ``("image", final
        frame)`` for ``rgb_array`` envs, ``("text", decoded episode)`` for ``ansi`` envs, None otherwise."""
        if not is_batched(self.env_id):
            return None  # third-party renderers (pygame, MuJoCo) may need a display; rlopt's envs draw in numpy
        modes = self.env.metadata.get("render_modes", [])
        mode = "rgb_array" if "rgb_array" in modes else "ansi" if "ansi" in modes else None
        if mode is None:
            return None
        env = gym.make(self.env_id, render_mode=mode, **self.env_kwargs)
        try:
            observation, _ = env.reset(seed=int(self.seeds[0]) if seed is None else seed)
            for _ in range(self.max_steps):
                with torch.no_grad():
                    action, _ = policy.predict(observation, deterministic=True)
                observation, _, terminated, truncated, _ = env.step(action)
                if terminated or truncated:
                    break
            return ("image" if mode == "rgb_array" else "text"), env.render()
        finally:
            env.close()

    def close(self) -> None:
        self.env.close()

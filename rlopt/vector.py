"""Making vector environments for the trainers, for rlopt's own ids and for any other Gymnasium id."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode

import envs  # noqa: F401  (registers the rlopt/... ids)
from rlopt.config import ConfigError


def env_spec(env_id: str) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id``, with an error that lists close ids when it is unknown."""
    try:
        return gym.spec(env_id)
    except gym.error.Error as error:
        known = [name for name in gym.registry if name.startswith("rlopt/")]
        raise ValueError(f"unknown environment id {env_id!r} ({error}); rlopt's ids are: {', '.join(known)}") from None


def is_batched(env_id: str) -> bool:
    """True when ``env_id`` is one of rlopt's natively batched environments."""
    entry_point = env_spec(env_id).vector_entry_point
    return isinstance(entry_point, str) and entry_point.startswith("envs.")


@contextlib.contextmanager
def env_kwargs_checked(env_id: str) -> Iterator[None]:
    """Turn an env constructor's "unexpected keyword argument" TypeError into a ConfigError that names the env."""
    try:
        yield
    except TypeError as error:
        if "keyword argument" not in str(error):
            raise
        raise ConfigError(
            f"{env_id} does not take one of the env kwargs given ({error}); `rlopt envs` and the "
            "README's environment section list each env's kwargs"
        ) from None


def make_vector_env(
    env_id: str,
    num_envs: int,
    autoreset_mode: AutoresetMode = AutoresetMode.SAME_STEP,
    env_kwargs: dict[str, Any] | None = None,
    render_mode: str | None = None,
) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id`` with the given autoreset mode.

    rlopt's ids use their batched core (one numpy implementation over all envs); any other id is wrapped in
    Gymnasium's ``SyncVectorEnv`` (its own ``vector_entry_point``, e.g. CartPole's, may not support every mode).
    """
    with env_kwargs_checked(env_id):
        return _make_vector_env(env_id, num_envs, autoreset_mode, dict(env_kwargs or {}), render_mode)


def _make_vector_env(
    env_id: str, num_envs: int, autoreset_mode: AutoresetMode, env_kwargs: dict[str, Any], render_mode: str | None
) -> gym.vector.VectorEnv:
    if render_mode is not None:
        env_kwargs["render_mode"] = render_mode
    if is_batched(env_id):
        return gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=autoreset_mode, **env_kwargs)
    if AutoresetMode(autoreset_mode) == AutoresetMode.DISABLED:
        return FrozenSyncVectorEnv([gym.make(env_id, **env_kwargs) for _ in range(num_envs)])
    return gym.make_vec(
        env_id,
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": autoreset_mode},
        **env_kwargs,
    )


class FrozenSyncVectorEnv(gym.vector.VectorEnv):
    """Single envs stepped one by one with autoreset DISABLED, where a finished env stays frozen.

    Gymnasium's ``SyncVectorEnv`` refuses to step a finished sub-env in DISABLED mode; grouped rollouts step the
    whole batch until the last member finishes, so finished members here return reward 0, keep their final
    observation and keep their ``terminated``/``truncated`` flags, like rlopt's batched envs.
    """

    def __init__(self, sub_envs: list[gym.Env]) -> None:
        self.envs = sub_envs
        self.num_envs = len(sub_envs)
        self.single_observation_space = sub_envs[0].observation_space
        self.single_action_space = sub_envs[0].action_space
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, self.num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**sub_envs[0].metadata, "autoreset_mode": AutoresetMode.DISABLED}
        self._observations = [None] * self.num_envs
        self._terminated = np.zeros(self.num_envs, dtype=bool)
        self._truncated = np.zeros(self.num_envs, dtype=bool)

    def _batch(self) -> Any:
        return gym.vector.utils.concatenate(
            self.single_observation_space,
            self._observations,
            gym.vector.utils.create_empty_array(self.single_observation_space, self.num_envs),
        )

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        options = dict(options or {})
        mask = options.pop("reset_mask", np.ones(self.num_envs, dtype=bool))
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
        for i, env in enumerate(self.envs):
            if mask[i]:
                self._observations[i], _ = env.reset(seed=None if seeds is None else seeds[i], options=options or None)
                self._terminated[i] = self._truncated[i] = False
        return self._batch(), {}

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        rewards = np.zeros(self.num_envs)
        success = np.zeros(self.num_envs, dtype=bool)
        has_success = np.zeros(self.num_envs, dtype=bool)
        for i, action in enumerate(gym.vector.utils.iterate(self.action_space, actions)):
            if self._terminated[i] or self._truncated[i]:
                continue
            self._observations[i], reward, terminated, truncated, info = self.envs[i].step(action)
            rewards[i] = reward
            self._terminated[i], self._truncated[i] = terminated, truncated
            if "is_success" in info:
                success[i], has_success[i] = bool(info["is_success"]), True
        info: dict[str, Any] = {}
        if has_success.any():
            info = {"is_success": success, "_is_success": has_success}
        return self._batch(), rewards, self._terminated.copy(), self._truncated.copy(), info

    def close_extras(self, **kwargs: Any) -> None:
        for env in self.envs:
            env.close()


def episode_step_limit(env_id: str, env_kwargs: dict[str, Any] | None = None, default: int = 1000) -> int:
    """How many steps an episode can last at most: the registered time limit, else the limit an rlopt env applies
    itself (the grid's ``max_steps``), else ``default``."""
    spec = env_spec(env_id)
    kwargs = dict(env_kwargs or {})
    limit = kwargs.get("max_episode_steps", spec.max_episode_steps)
    if not limit and env_id.startswith("rlopt/"):
        kwargs.pop("max_episode_steps", None)
        with env_kwargs_checked(env_id):
            env = gym.make(env_id, **kwargs)
        limit = env.unwrapped.core.step_limit
        env.close()
    return int(limit) if limit else default


def success_signal(info: dict[str, Any], num_envs: int) -> np.ndarray:
    """``info["is_success"]`` as float (N,), NaN where the env does not report success."""
    values = info.get("is_success")
    if values is None:
        return np.full(num_envs, np.nan)
    values = np.asarray(values, dtype=np.float64)
    present = info.get("_is_success")
    if present is not None:
        values = np.where(present, values, np.nan)
    return values

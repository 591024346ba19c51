"""stable-baselines3's PPO as the reference baseline, run inside rlopt's run-folder layout.

Reference: Schulman et al., "Proximal Policy Optimization Algorithms" (2017), as implemented by stable-baselines3
(Raffin et al., JMLR 22(268), 2021); per-env hyperparameters from rl-baselines3-zoo. This is the only rlopt module
that imports ``stable_baselines3``.

Where the adapter departs from a plain ``PPO(policy, make_vec_env(env_id))``:

1. Box observations of a non-float dtype (also inside a Dict) are cast to float32 *before* VecNormalize. SB3 2.9
   stores rollout observations in the space's dtype, so normalized uint8 observations would be truncated (and
   negative ones wrapped to 255) on storage and PPO would train on garbage (DESIGN.md section 7). VecNormalize
   re-types only image-like spaces (uint8 with bounds 0..255), not a Minigrid-style encoding with tighter bounds.
   The cast also keeps SB3 from taking a uint8 grid for a camera image (``/ 255`` and NatureCNN).
2. Dict subspaces SB3's policies cannot encode (Text, Minigrid's ``mission`` MissionSpace) are dropped.
3. VecNormalize normalizes only the Box keys of a Dict observation (it refuses any other space).
4. Evaluation follows rlopt's protocol (rlopt.evaluation): deterministic actions on held-out seeds
   ``EVAL_SEED_BASE + i`` (rlopt.evaluation's, far from the training envs' seed .. seed + n_envs - 1), mean
   undiscounted return and success rate (``info["is_success"]`` at episode end).
5. The logger writes TensorBoard events only, directly into the run folder, x-axis = env steps; SB3's own
   ``rollout/success_rate`` (from ``info["is_success"]``) is kept as it is.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import stable_baselines3
import torch
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import HParam, configure
from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule
from stable_baselines3.common.vec_env import VecEnv, VecNormalize
from tqdm import tqdm

from rlopt import runs
from rlopt.config import ConfigError, RunConfig, check_choice, check_range, option
from rlopt.evaluation import EVAL_SEED_BASE

ALGO = "sb3_ppo"
# Safety net for envs registered without a time limit: an evaluation episode is cut here.
MAX_EVAL_EPISODE_STEPS = 100_000

SCHEDULES = ("constant", "linear")
ACTIVATIONS = {"tanh": torch.nn.Tanh, "relu": torch.nn.ReLU}
POLICIES = ("auto", "MlpPolicy", "MultiInputPolicy")
# Observation spaces SB3's policies can encode; other Dict entries (text, Minigrid's mission) are dropped.
SB3_SPACES = (spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary, spaces.Dict)

# --- presets -----------------------------------------------------------------------------------------------------
# Facts from rl-baselines3-zoo, hyperparams/ppo.yml (DLR-RM/rl-baselines3-zoo): the rows for CartPole-v1 ("Tuned"),
# MiniGrid-DoorKey-5x5-v0 and MiniGrid-FourRooms-v0 (there credited to lcswillems/rl-starter-files) and Reacher-v2
# ("Tuned"). The zoo's "lin_x" is a linear decay from x to 0 over training (the "linear" schedules here); its
# `normalize: true` wraps the envs in VecNormalize for observations and rewards. Its n_timesteps is left out: the
# caller sets the budget. Keys not listed keep SB3's PPO defaults.
SB3_PRESETS: dict[str, dict[str, Any]] = {
    "CartPole-v1": {
        "n_envs": 8,
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "ent_coef": 0.0,
        "learning_rate": 1e-3,
        "learning_rate_schedule": "linear",
        "clip_range": 0.2,
        "clip_range_schedule": "linear",
    },
    "MiniGrid-DoorKey-5x5-v0": {
        "normalize": True,
        "n_envs": 8,
        "n_steps": 128,
        "batch_size": 64,
        "gae_lambda": 0.95,
        "gamma": 0.99,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 2.5e-4,
        "clip_range": 0.2,
    },
    "MiniGrid-FourRooms-v0": {
        "normalize": True,
        "n_envs": 8,
        "n_steps": 512,
        "batch_size": 64,
        "gae_lambda": 0.95,
        "gamma": 0.99,
        "n_epochs": 10,
        "ent_coef": 0.0,
        "learning_rate": 2.5e-4,
        "clip_range": 0.2,
    },
    "Reacher-v2": {
        "normalize": True,
        "n_envs": 1,
        "batch_size": 32,
        "n_steps": 512,
        "gamma": 0.9,
        "learning_rate": 0.000104019,
        "ent_coef": 7.52585e-08,
        "clip_range": 0.3,
        "n_epochs": 5,
        "gae_lambda": 1.0,
        "max_grad_norm": 0.9,
        "vf_coef": 0.950368,
    },
}

# Ids without a row of their own borrow the closest task's row; the first matching pattern wins. rlopt's grid
# game uses Minigrid's observation encoding and task family, its arm is a planar reacher like MuJoCo's Reacher.
PRESET_ALIASES: tuple[tuple[str, str], ...] = (
    ("MiniGrid-FourRooms-*", "MiniGrid-FourRooms-v0"),
    ("MiniGrid-*", "MiniGrid-DoorKey-5x5-v0"),
    ("rlopt/GridGame-*", "MiniGrid-DoorKey-5x5-v0"),
    ("Reacher-v*", "Reacher-v2"),
    ("rlopt/ArmReach*", "Reacher-v2"),
)


@dataclass
class SB3PPOConfig(RunConfig):
    """stable-baselines3 PPO: the run settings plus SB3's PPO hyperparameters (defaults are SB3's)."""

    n_envs: int = option(1, "Parallel environment copies, stepped in this process (SB3 DummyVecEnv).")
    n_steps: int = option(2048, "Steps per environment per rollout; a rollout holds n_steps * n_envs transitions.")
    batch_size: int = option(64, "Minibatch size of the PPO update (at most n_steps * n_envs).")
    n_epochs: int = option(10, "Passes over each rollout in the PPO update.")
    learning_rate: float = option(3e-4, "Adam learning rate (the start value when the schedule is linear).")
    learning_rate_schedule: str = option(
        "constant", "constant, or linear: decay learning_rate to 0 over training (RL Zoo's lin_).", SCHEDULES
    )
    gamma: float = option(0.99, "Discount factor.")
    gae_lambda: float = option(0.95, "GAE lambda: bias-variance trade-off of the advantage estimate.")
    clip_range: float = option(0.2, "PPO clipping epsilon of the probability ratio (start value when linear).")
    clip_range_schedule: str = option(
        "constant", "constant, or linear: decay clip_range to 0 over training (RL Zoo's lin_).", SCHEDULES
    )
    ent_coef: float = option(0.0, "Entropy bonus coefficient in the loss.")
    vf_coef: float = option(0.5, "Value-loss coefficient in the loss.")
    max_grad_norm: float = option(0.5, "Gradient-norm clipping threshold.")
    net_arch: tuple[int, ...] = option(
        (64, 64), "Hidden layer sizes of the policy network and of the separate value network."
    )
    activation: str = option("tanh", "Activation of the hidden layers.", tuple(ACTIVATIONS))
    normalize: bool = option(
        False, "Wrap the envs in VecNormalize: running mean/std of observations and of discounted returns."
    )
    policy: str = option(
        "auto", "SB3 policy class; auto picks MultiInputPolicy for Dict observations, MlpPolicy otherwise.", POLICIES
    )
    preset: str = option("", "SB3_PRESETS row these values started from (preset_config sets it; informational).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("n_envs", self.n_envs, 1)
        check_range("n_steps", self.n_steps, 1)
        check_range("batch_size", self.batch_size, 2)  # SB3 normalizes advantages per minibatch: needs 2 samples
        check_range("n_epochs", self.n_epochs, 1)
        check_range("learning_rate", self.learning_rate, 0, low_open=True)
        check_range("gamma", self.gamma, 0, 1)
        check_range("gae_lambda", self.gae_lambda, 0, 1)
        check_range("clip_range", self.clip_range, 0, low_open=True)
        check_range("ent_coef", self.ent_coef, 0)
        check_range("vf_coef", self.vf_coef, 0)
        check_range("max_grad_norm", self.max_grad_norm, 0, low_open=True)
        check_choice("learning_rate_schedule", self.learning_rate_schedule, SCHEDULES)
        check_choice("clip_range_schedule", self.clip_range_schedule, SCHEDULES)
        check_choice("activation", self.activation, tuple(ACTIVATIONS))
        check_choice("policy", self.policy, POLICIES)
        if self.preset:
            check_choice("preset", self.preset, ("", *SB3_PRESETS))
        self.net_arch = tuple(self.net_arch)
        if not all(isinstance(size, int) and size > 0 for size in self.net_arch):
            raise ConfigError(f"net_arch={self.net_arch!r} must list positive integer layer sizes, e.g. (64, 64)")
        rollout_size = self.n_steps * self.n_envs
        if self.batch_size > rollout_size:
            raise ConfigError(
                f"batch_size={self.batch_size} exceeds the rollout size n_steps * n_envs = {rollout_size}; "
                "lower batch_size or raise n_steps or n_envs"
            )


def preset_name(env_id: str) -> str | None:
    """The SB3_PRESETS row used for ``env_id``: its own, else the first matching alias, else None.

    A ``module:`` prefix (``minigrid:MiniGrid-Empty-5x5-v0``, which makes Gymnasium import the module) is ignored.
    """
    env_id = env_id.rsplit(":", 1)[-1]
    if env_id in SB3_PRESETS:
        return env_id
    for pattern, name in PRESET_ALIASES:
        if fnmatch.fnmatchcase(env_id, pattern):
            return name
    return None


def preset_config(env_id: str, **overrides: Any) -> SB3PPOConfig:
    """An :class:`SB3PPOConfig` for ``env_id``: its RL Zoo preset (if any), then ``overrides`` on top.

    Args:
        env_id: Gymnasium id.
        **overrides: any SB3PPOConfig field (run settings such as seed, total_steps, logdir included).
    """
    name = preset_name(env_id)
    values: dict[str, Any] = dict(SB3_PRESETS[name]) if name else {}
    values["preset"] = name or ""
    values.update(overrides)
    values["env_id"] = env_id
    config = SB3PPOConfig.from_dict(values)
    assert isinstance(config, SB3PPOConfig)
    return config


# --- observations --------------------------------------------------------------------------------------------------


def float_observation_space(space: gym.Space) -> gym.Space:
    """``space`` with non-float Box spaces made float32 (same bounds) and Dict subspaces SB3 cannot encode dropped."""
    if isinstance(space, spaces.Box) and not np.issubdtype(space.dtype, np.floating):
        return spaces.Box(
            low=space.low.astype(np.float32), high=space.high.astype(np.float32), shape=space.shape, dtype=np.float32
        )
    if isinstance(space, spaces.Dict):
        return spaces.Dict(
            {key: float_observation_space(sub) for key, sub in space.spaces.items() if isinstance(sub, SB3_SPACES)}
        )
    return space


def _float_observation(observation: Any, space: gym.Space) -> Any:
    if isinstance(space, spaces.Box) and not np.issubdtype(space.dtype, np.floating):
        return np.asarray(observation, dtype=np.float32)
    if isinstance(space, spaces.Dict):
        return {
            key: _float_observation(observation[key], sub)
            for key, sub in space.spaces.items()
            if isinstance(sub, SB3_SPACES)
        }
    return observation


class FloatObservation(gym.ObservationWrapper):
    """Casts non-float Box observations (also inside a Dict) to float32 and drops Dict subspaces SB3 cannot encode.

    Wrap before VecNormalize: SB3 stores rollouts in the observation space's dtype (see the module docstring).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.observation_space = float_observation_space(env.observation_space)

    def observation(self, observation: Any) -> Any:
        return _float_observation(observation, self.env.observation_space)


def needs_float_observation(space: gym.Space) -> bool:
    """Whether :class:`FloatObservation` changes anything for this observation space."""
    return float_observation_space(space) != space


def _make_eval_env(config: SB3PPOConfig) -> gym.Env:
    env = gym.make(config.env_id, **config.env_kwargs)
    return FloatObservation(env) if needs_float_observation(env.observation_space) else env


# --- evaluation ------------------------------------------------------------------------------------------------------


def _stack(observations: list[Any]) -> Any:
    if isinstance(observations[0], dict):
        return {key: np.stack([obs[key] for obs in observations]) for key in observations[0]}
    return np.stack(observations)


def evaluate(model: PPO, envs: list[gym.Env], normalizer: VecNormalize | None = None) -> dict[str, Any]:
    """One deterministic episode per env, env ``i`` started from seed ``EVAL_SEED_BASE + i``, stepped as a batch.

    Args:
        model: the PPO model.
        envs: ``N`` evaluation envs (wrapped like the training envs, without VecNormalize).
        normalizer: the training VecNormalize, whose frozen statistics normalize the observations.

    Returns:
        ``eval/mean_reward`` (mean undiscounted return), ``eval/success_rate`` (None when the env reports no
        ``is_success``), ``eval/mean_ep_length`` and ``eval/episodes`` (``N``).
    """
    count = len(envs)
    observations = [env.reset(seed=EVAL_SEED_BASE + index)[0] for index, env in enumerate(envs)]
    returns = np.zeros(count)
    lengths = np.zeros(count, dtype=np.int64)
    successes: list[bool | None] = [None] * count
    active = list(range(count))
    for _ in range(MAX_EVAL_EPISODE_STEPS):
        if not active:
            break
        batch = _stack([observations[index] for index in active])
        if normalizer is not None:
            batch = normalizer.normalize_obs(batch)
        actions, _ = model.predict(batch, deterministic=True)
        still_active = []
        for row, index in enumerate(active):
            observation, reward, terminated, truncated, info = envs[index].step(actions[row])
            returns[index] += float(reward)
            lengths[index] += 1
            observations[index] = observation
            if terminated or truncated:
                success = info.get("is_success")
                successes[index] = None if success is None else bool(success)
            else:
                still_active.append(index)
        active = still_active
    if active:
        warnings.warn(
            f"{len(active)} evaluation episodes ran {MAX_EVAL_EPISODE_STEPS} steps without ending; they were cut "
            "there (register the env with max_episode_steps)",
            stacklevel=2,
        )
    reported = [success for success in successes if success is not None]
    return {
        "eval/mean_reward": float(returns.mean()),
        "eval/success_rate": float(np.mean(reported)) if reported else None,
        "eval/mean_ep_length": float(lengths.mean()),
        "eval/episodes": count,
    }


class _RunCallback(BaseCallback):
    """Progress bar, periodic evaluation (logged as eval/*) and checkpoints during ``model.learn``."""

    def __init__(
        self,
        config: SB3PPOConfig,
        run_dir: Path,
        eval_envs: list[gym.Env],
        normalizer: VecNormalize | None,
        progress: tqdm,
    ) -> None:
        super().__init__()
        self.config = config
        self.run_dir = run_dir
        self.eval_envs = eval_envs
        self.normalizer = normalizer
        self.progress = progress
        self.next_evaluation = config.evaluation_interval
        self.checkpoint_interval = config.checkpoint_every
        self.next_checkpoint = config.checkpoint_every
        self.last_step: int | None = None
        self.last_result: dict[str, Any] = {}

    def _on_training_start(self) -> None:
        if self.config.eval_on_start and self.num_timesteps == 0:
            self.run_evaluation()

    def _on_step(self) -> bool:
        self.progress.update(self.num_timesteps - self.progress.n)
        if self.num_timesteps >= self.next_evaluation:
            while self.next_evaluation <= self.num_timesteps:
                self.next_evaluation += self.config.evaluation_interval
            self.run_evaluation()
            if self.checkpoint_interval == 0:
                save_checkpoint(self.model, self.normalizer, self.run_dir)
        if self.checkpoint_interval and self.num_timesteps >= self.next_checkpoint:
            while self.next_checkpoint <= self.num_timesteps:
                self.next_checkpoint += self.checkpoint_interval
            save_checkpoint(self.model, self.normalizer, self.run_dir)
        return True

    def run_evaluation(self) -> dict[str, Any]:
        """Evaluate now, log eval/* at the current env step, and remember the result."""
        result = evaluate(self.model, self.eval_envs, self.normalizer)
        for key in ("eval/mean_reward", "eval/success_rate", "eval/mean_ep_length"):
            if result[key] is not None:
                self.logger.record(key, result[key])
        self.logger.dump(self.num_timesteps)
        self.last_step, self.last_result = self.num_timesteps, result
        self.progress.set_postfix(eval_reward=f"{result['eval/mean_reward']:.3g}")
        return result


def save_checkpoint(model: PPO, normalizer: VecNormalize | None, run_dir: Path) -> Path:
    """Save the model as ``checkpoints/model.zip`` (and VecNormalize statistics beside it), replacing atomically."""
    directory = run_dir / runs.CHECKPOINT_DIR
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "model.zip"
    temporary = directory / f".model.tmp-{os.getpid()}.zip"
    model.save(temporary)
    os.replace(temporary, target)
    if normalizer is not None:
        temporary_stats = directory / f".vecnormalize.tmp-{os.getpid()}.pkl"
        normalizer.save(str(temporary_stats))
        os.replace(temporary_stats, directory / "vecnormalize.pkl")
    return target


def evaluate_run(
    run_dir: str | os.PathLike[str],
    env_id: str | None = None,
    episodes: int = 32,
    env_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Evaluate an SB3 run's last checkpoint as :func:`rlopt.api.evaluate` does an rlopt one: ``episodes``
    deterministic episodes on the held-out seeds, on the run's env (or ``env_id``, ``env_kwargs``), observations
    normalized with the run's frozen VecNormalize statistics where it trained with them.

    SB3's own loaders read ``model.zip`` and ``vecnormalize.pkl``, and both unpickle parts of them: evaluate only runs
    you trust (rlopt's own checkpoints hold no pickle).
    """
    from stable_baselines3.common.vec_env import DummyVecEnv

    run_dir = Path(run_dir)
    saved = runs.read_json(run_dir / runs.CONFIG_FILE)
    changes: dict[str, Any] = {}
    if env_id is not None:
        changes["env_id"] = env_id
    if env_kwargs is not None:
        changes["env_kwargs"] = env_kwargs
    config = SB3PPOConfig.from_dict(saved["config"]).replace(**changes)
    checkpoints = run_dir / runs.CHECKPOINT_DIR
    model = PPO.load(checkpoints / "model.zip", device=device)
    envs = [_make_eval_env(config) for _ in range(episodes)]
    normalizer = None
    try:
        if (checkpoints / "vecnormalize.pkl").is_file():
            statistics = str(checkpoints / "vecnormalize.pkl")
            normalizer = VecNormalize.load(statistics, DummyVecEnv([lambda: _make_eval_env(config)]))
            normalizer.training = False
        result = evaluate(model, envs, normalizer)
    finally:
        for env in envs:
            env.close()
        if normalizer is not None:
            normalizer.close()
    metrics = {key: value for key, value in result.items() if key != "eval/episodes"}
    return {**metrics, "episodes": episodes, "env_id": config.env_id, "env_steps_trained": int(model.num_timesteps)}


# --- training ------------------------------------------------------------------------------------------------------


def hyperparameters(config: SB3PPOConfig, policy: str, float_observations: bool) -> dict[str, Any]:
    """The values that define this PPO, as recorded in summary.json and the report."""
    return {
        "implementation": f"stable-baselines3 {stable_baselines3.__version__} PPO",
        "preset": config.preset or None,
        "policy": policy,
        "n_envs": config.n_envs,
        "n_steps": config.n_steps,
        "batch_size": config.batch_size,
        "n_epochs": config.n_epochs,
        "learning_rate": config.learning_rate,
        "learning_rate_schedule": config.learning_rate_schedule,
        "gamma": config.gamma,
        "gae_lambda": config.gae_lambda,
        "clip_range": config.clip_range,
        "clip_range_schedule": config.clip_range_schedule,
        "ent_coef": config.ent_coef,
        "vf_coef": config.vf_coef,
        "max_grad_norm": config.max_grad_norm,
        "net_arch": list(config.net_arch),
        "activation": config.activation,
        "normalize": config.normalize,
        "float_observations": float_observations,
    }


def _schedule(value: float, kind: str) -> ConstantSchedule | LinearSchedule:
    # SB3 calls schedules with progress_remaining going from 1 to 0.
    return LinearSchedule(value, 0.0, 1.0) if kind == "linear" else ConstantSchedule(value)


def _build_env(config: SB3PPOConfig) -> tuple[VecEnv, VecNormalize | None, bool]:
    probe = gym.make(config.env_id, **config.env_kwargs)
    float_observations = needs_float_observation(probe.observation_space)
    probe.close()
    vec_env: VecEnv = make_vec_env(
        # A callable rather than the id: it carries env_kwargs, and it builds the env without a render mode (given an
        # id, SB3 asks for rgb_array rendering, which training never uses).
        functools.partial(gym.make, config.env_id, **config.env_kwargs),
        n_envs=config.n_envs,
        seed=config.seed,
        wrapper_class=FloatObservation if float_observations else None,
    )
    normalizer = None
    if config.normalize:
        space = vec_env.observation_space
        keys = None
        if isinstance(space, spaces.Dict):
            keys = [key for key, sub in space.spaces.items() if isinstance(sub, spaces.Box)]
        normalizer = VecNormalize(vec_env, gamma=config.gamma, norm_obs_keys=keys)
        vec_env = normalizer
    return vec_env, normalizer, float_observations


def train(config: SB3PPOConfig) -> tuple[PPO, dict[str, Any]]:
    """Train SB3's PPO on ``config.env_id`` and write the run folder (events, config.json, summary.json).

    Returns:
        ``(model, summary)``; the summary is also written to ``<run_dir>/summary.json``.
    """
    if not isinstance(config, SB3PPOConfig):
        raise TypeError(f"train needs an SB3PPOConfig, got {type(config).__name__}; build one with preset_config")
    from rlopt.session import resolve_device
    from rlopt.vector import env_kwargs_checked, env_spec

    start = time.perf_counter()
    env_spec(config.env_id)  # an unknown id gets rlopt's message (close ids), before any folder is made
    if config.device != "auto":
        resolve_device(config.device)  # SB3 would fall back to the CPU without a word where CUDA is missing
    name = config.run_name or runs.run_name(config.env_id, ALGO, config.seed)
    run_dir = runs.create_run_folder(config.logdir, name, numbered=config.run_name is None)
    versions = {**runs.versions(), "stable_baselines3": stable_baselines3.__version__}
    runs.write_json_atomic(
        run_dir / runs.CONFIG_FILE,
        {"algo": ALGO, "env_id": config.env_id, "seed": config.seed, "config": config.to_dict(), "versions": versions},
    )

    try:
        with env_kwargs_checked(config.env_id):
            vec_env, normalizer, float_observations = _build_env(config)
    except BaseException:
        runs.remove_if_only_config(run_dir)  # as rlopt's trainers do: a failed start leaves no empty run
        raise
    eval_envs = [_make_eval_env(config) for _ in range(config.eval_episodes)]
    policy = config.policy
    if policy == "auto":
        policy = "MultiInputPolicy" if isinstance(vec_env.observation_space, spaces.Dict) else "MlpPolicy"
    hparams = hyperparameters(config, policy, float_observations)
    logger = configure(str(run_dir), ["tensorboard"])
    progress = tqdm(
        total=config.total_steps,
        unit="step",
        desc=run_dir.name,
        disable=not config.progress,
        file=sys.stderr,
        dynamic_ncols=True,
    )
    try:
        model = PPO(
            policy,
            vec_env,
            learning_rate=_schedule(config.learning_rate, config.learning_rate_schedule),
            n_steps=config.n_steps,
            batch_size=config.batch_size,
            n_epochs=config.n_epochs,
            gamma=config.gamma,
            gae_lambda=config.gae_lambda,
            clip_range=_schedule(config.clip_range, config.clip_range_schedule),
            ent_coef=config.ent_coef,
            vf_coef=config.vf_coef,
            max_grad_norm=config.max_grad_norm,
            policy_kwargs={"net_arch": list(config.net_arch), "activation_fn": ACTIVATIONS[config.activation]},
            seed=config.seed,
            device=config.device,
            verbose=0,
        )
        model.set_logger(logger)
        # TensorBoard's HPARAMS tab needs the values as scalars or strings, and a metric tag to show them against.
        logger.record(
            "hparams",
            HParam({key: _hparam_value(value) for key, value in hparams.items()}, {"eval/mean_reward": 0.0}),
            exclude=("stdout", "log", "json", "csv"),
        )
        logger.dump(0)
        callback = _RunCallback(config, run_dir, eval_envs, normalizer, progress)
        model.learn(total_timesteps=config.total_steps, callback=callback, progress_bar=False)

        # --- final evaluation and summary ---
        if callback.last_step != model.num_timesteps:
            callback.run_evaluation()
        result = callback.last_result
        save_checkpoint(model, normalizer, run_dir)
        progress.update(model.num_timesteps - progress.n)
    finally:
        progress.close()
        logger.close()
        for env in eval_envs:
            env.close()
        vec_env.close()

    seconds = time.perf_counter() - start
    summary = {
        "finished": True,
        "algo": ALGO,
        "env_id": config.env_id,
        "seed": config.seed,
        "env_steps": int(model.num_timesteps),
        "wall_clock_seconds": seconds,
        "steps_per_second": model.num_timesteps / seconds,
        "num_parameters": sum(parameter.numel() for parameter in model.policy.parameters()),
        "peak_rss_mb": runs.peak_rss_mb(),
        **result,
        "hyperparameters": hparams,
        "baseline": "stable-baselines3",
        "device": str(model.device),
        "run_dir": str(run_dir),
    }
    runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, summary)
    return model, summary


def _hparam_value(value: Any) -> bool | str | float | int | None:
    if value is None or isinstance(value, (bool, str, float, int)):
        return value
    return str(value)

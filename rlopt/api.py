"""rlopt's Python API: build configs, train, resume, load and evaluate policies.

>>> from rlopt import api
>>> config = api.make_config("grpo", "rlopt/GridGame-Empty-5x5-v0", total_steps=20_000)
>>> policy, summary = api.train(config)
>>> action, _ = policy.predict(observation, deterministic=True)
"""

from __future__ import annotations

import importlib
import numbers
from pathlib import Path
from typing import Any

from rlopt.config import ConfigError, RunConfig
from rlopt.presets import preset_for
from rlopt.runs import CHECKPOINT_DIR, CONFIG_FILE, is_finished, read_json

#: algorithm name -> (module, config class); each module has ``train(config[, resume])``.
ALGORITHMS: dict[str, tuple[str, str]] = {
    "grpo": ("rlopt.grpo", "GRPOConfig"),
    "ppo": ("rlopt.ppo", "PPOConfig"),
    "sb3_ppo": ("rlopt.sb3_ppo", "SB3PPOConfig"),
    "distill": ("rlopt.distill", "DistillConfig"),  # a student of config.teacher; rlopt compare's distill entry
}


def _module(algo: str) -> Any:
    if algo not in ALGORITHMS:
        raise ConfigError(f"unknown algorithm {algo!r}; choose one of {', '.join(ALGORITHMS)}")
    return importlib.import_module(ALGORITHMS[algo][0])


def config_class(algo: str) -> type[RunConfig]:
    """The config dataclass of ``algo``."""
    return getattr(_module(algo), ALGORITHMS[algo][1])


def make_config(algo: str, env_id: str, preset: bool = True, **overrides: Any) -> RunConfig:
    """A validated config for ``algo`` on ``env_id``: defaults, then the env's preset, then ``overrides``. The env
    itself is built (and an unknown id or env kwarg found) when training starts."""
    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"env_id={env_id!r} must be a Gymnasium id such as rlopt/GridGame-Empty-5x5-v0")
    values: dict[str, Any] = {"env_id": env_id}
    if preset:
        if algo == "sb3_ppo":
            values.update(_module(algo).preset_config(env_id).to_dict())
            values["env_id"] = env_id
        else:
            values.update(preset_for(algo, env_id))
    values.update(overrides)
    if "skip_zero_advantage" not in overrides and values.get("skip_zero_advantage") and _reads_every_episode(values):
        # a preset's skip_zero_advantage is a speed-up with the same gradient; explicit options that read every
        # episode (an entropy bonus, a KL term, MoE load balancing) make it invalid, and they win
        values["skip_zero_advantage"] = False
    return config_class(algo).from_dict(values)


def _reads_every_episode(values: dict[str, Any]) -> bool:
    return any(float(values.get(name) or 0) > 0 for name in ("ent_coef", "kl_coef", "num_experts"))


def algo_of(config: RunConfig) -> str:
    for algo, (_, class_name) in ALGORITHMS.items():
        if type(config).__name__ == class_name:
            return algo
    raise ConfigError(f"{type(config).__name__} is not an rlopt algorithm config")


def train(config: RunConfig, resume: bool = False) -> tuple[Any, dict[str, Any]]:
    """Train with the algorithm that ``config`` belongs to. Returns ``(model, summary)``."""
    algo = algo_of(config)
    module = _module(algo)
    if resume:
        if algo not in ("grpo", "ppo"):
            raise ConfigError(f"resume=True supports rlopt's own grpo and ppo runs, not {algo}")
        return module.train(config, resume=True)
    return module.train(config)


def run_training(
    algo: str,
    env_id: str,
    seed: int,
    total_steps: int,
    logdir: str,
    run_name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One training run as `rlopt compare` needs it: returns the summary dict. Progress bars are off."""
    config = make_config(
        algo,
        env_id,
        seed=seed,
        total_steps=total_steps,
        logdir=logdir,
        run_name=run_name,
        progress=False,
        **(overrides or {}),
    )
    _, summary = train(config)
    return summary


def resume(
    run_dir: str | Path, total_steps: int | None = None, progress: bool | None = None
) -> tuple[Any, dict[str, Any]]:
    """Continue the run in ``run_dir`` from its latest checkpoint with the settings it was started with, optionally
    to a new ``total_steps`` (above the checkpoint's step; it becomes the run's budget) and with or without a
    progress bar."""
    from rlopt.session import load_run_config

    run_dir = Path(run_dir)
    saved = load_run_config(run_dir)
    algo = saved["algo"]
    if algo not in ("grpo", "ppo"):
        raise ConfigError(f"--resume supports rlopt's own grpo and ppo runs; {run_dir} is a {algo} run")
    values = dict(saved["config"])
    values["logdir"] = str(run_dir.parent)
    values["run_name"] = run_dir.name
    if total_steps is not None:
        from rlopt.checkpoint import STATE_FILE, resolve_checkpoint

        if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral):
            raise ConfigError(f"total_steps={total_steps!r} must be an integer")
        total_steps = int(total_steps)

        done = int(read_json(resolve_checkpoint(run_dir) / STATE_FILE)["step"])
        if total_steps <= done:
            raise ConfigError(
                f"{run_dir} is at {done} env steps already (its latest checkpoint); pass a --total-steps above that"
            )
        values["total_steps"] = total_steps
    if progress is not None:
        values["progress"] = progress
    config = config_class(algo).from_dict(values)
    if is_finished(run_dir) and total_steps is None:
        raise ConfigError(f"{run_dir} already finished its {config.total_steps} steps; pass --total-steps to extend")
    return train(config, resume=True)


def load_policy(checkpoint: str | Path, device: str = "cpu") -> Any:
    """A trained policy (with ``predict``) from a run folder or checkpoint folder of rlopt's own trainers.

    Raises:
        ConfigError: ``checkpoint`` is an SB3 run (load it with SB3, as the message says).
    """
    from rlopt.session import policy_from_checkpoint

    run_dir = _sb3_run_folder(checkpoint)
    if run_dir is not None:
        model, statistics = run_dir / CHECKPOINT_DIR / "model.zip", run_dir / CHECKPOINT_DIR / "vecnormalize.pkl"
        raise ConfigError(
            f"{checkpoint} is an SB3 run: load it with stable_baselines3.PPO.load('{model}')"
            + (
                f" and its observation statistics with VecNormalize.load('{statistics}', venv)"
                if statistics.is_file()
                else ""
            )
            + ", or score it with api.evaluate / `rlopt eval`"
        )

    policy, _ = policy_from_checkpoint(checkpoint, device=device)
    policy.eval()
    return policy


def _sb3_run_folder(path: str | Path) -> Path | None:
    """The SB3 run folder that ``path`` names (the run folder, its ``checkpoints/`` folder or its ``model.zip``),
    else None."""
    path = Path(path)
    for candidate in (path, path.parent, path.parent.parent):
        config = candidate / CONFIG_FILE
        if (candidate / CHECKPOINT_DIR / "model.zip").is_file() and config.is_file():
            try:
                return candidate if read_json(config).get("algo") == "sb3_ppo" else None
            except ValueError:  # a corrupt config.json: the rlopt loader below says what is wrong
                return None
    return None


def evaluate(
    checkpoint: str | Path,
    env_id: str | None = None,
    episodes: int = 32,
    env_kwargs: dict[str, Any] | None = None,
    device: str = "cpu",
) -> dict[str, float]:
    """Evaluate a checkpoint on held-out seeds; ``env_id`` defaults to the env it was trained on. An SB3 run's
    folder is evaluated through SB3's loader (:func:`rlopt.sb3_ppo.evaluate_run`)."""
    from rlopt.checkpoint import load_checkpoint
    from rlopt.evaluation import Evaluator
    from rlopt.session import policy_from_checkpoint, resolve_device

    if isinstance(episodes, bool) or not isinstance(episodes, numbers.Integral) or episodes < 1:
        raise ConfigError(f"episodes={episodes!r} must be an integer of at least 1")
    episodes = int(episodes)
    if env_kwargs is not None and not isinstance(env_kwargs, dict):
        raise ConfigError(f"env_kwargs must be a dict of keyword arguments, got {env_kwargs!r}")
    run_dir = _sb3_run_folder(checkpoint)
    if run_dir is not None:
        from rlopt.sb3_ppo import evaluate_run

        device = str(resolve_device(device))

        return evaluate_run(run_dir, env_id, episodes, env_kwargs, device)
    device = str(resolve_device(device))
    state, _, _ = load_checkpoint(checkpoint)
    env_id = env_id or state["env_id"]
    env_kwargs = state.get("config", {}).get("env_kwargs", {}) if env_kwargs is None else env_kwargs
    evaluator = Evaluator(env_id, episodes, env_kwargs, device=device)
    try:
        policy, _ = policy_from_checkpoint(
            checkpoint, evaluator.env.single_observation_space, evaluator.env.single_action_space, device=device
        )
        result = evaluator.evaluate(policy)
    finally:
        evaluator.close()
    return {**result.metrics(), "episodes": episodes, "env_id": env_id, "env_steps_trained": state["step"]}

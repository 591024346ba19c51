"""The stable-baselines3 PPO baseline: config, presets, the uint8 observation guard, and a short CartPole run."""

from __future__ import annotations

import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlopt import api, runs
from rlopt.config import ConfigError
from rlopt.sb3_ppo import (
    PPO,
    SB3_PRESETS,
    FloatObservation,
    SB3PPOConfig,
    evaluate,
    float_observation_space,
    preset_config,
    preset_name,
    train,
)

SUMMARY_KEYS = {
    "finished",
    "algo",
    "env_id",
    "seed",
    "env_steps",
    "wall_clock_seconds",
    "steps_per_second",
    "num_parameters",
    "peak_rss_mb",
    "eval/mean_reward",
    "eval/success_rate",
    "eval/episodes",
    "eval/mean_ep_length",
    "hyperparameters",
    "baseline",
}


class Uint8Env(gym.Env):
    """Minigrid-like observations: small integers in a uint8 grid (optionally in a Dict with a direction and a
    mission text). Action 0 earns 1; episodes last 8 steps and succeed when every action was 0."""

    def __init__(self, dict_observation: bool = False) -> None:
        # Bounds 0..10, not 0..255: SB3 would treat a 0..255 uint8 array as an image, which VecNormalize already
        # re-types to float32; a Minigrid-style encoding with tighter bounds gets no such help.
        image = spaces.Box(0, 10, shape=(3, 3, 2), dtype=np.uint8)
        if dict_observation:
            self.observation_space = spaces.Dict(
                {"image": image, "direction": spaces.Discrete(4), "mission": spaces.Text(max_length=12)}
            )
        else:
            self.observation_space = image
        self.action_space = spaces.Discrete(3)
        self.dict_observation = dict_observation
        self.steps = 0
        self.all_zero = True

    def _observation(self):
        image = self.np_random.integers(0, 11, size=(3, 3, 2), dtype=np.uint8)
        if self.dict_observation:
            return {"image": image, "direction": int(self.np_random.integers(4)), "mission": "getthekey"}
        return image

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.steps = 0
        self.all_zero = True
        return self._observation(), {}

    def step(self, action):
        self.steps += 1
        self.all_zero = self.all_zero and int(action) == 0
        terminated = self.steps >= 8
        info = {"is_success": terminated and self.all_zero}
        return self._observation(), float(int(action) == 0), terminated, False, info


for _name, _dict_observation in (("Uint8Box", False), ("Uint8Dict", True)):
    if f"rlopt_tests/{_name}-v0" not in gym.registry:
        gym.register(f"rlopt_tests/{_name}-v0", entry_point=Uint8Env, kwargs={"dict_observation": _dict_observation})


# --- config and presets ----------------------------------------------------------------------------------------------


def test_preset_lookup():
    assert preset_name("CartPole-v1") == "CartPole-v1"
    assert preset_name("MiniGrid-Empty-8x8-v0") == "MiniGrid-DoorKey-5x5-v0"
    assert preset_name("MiniGrid-FourRooms-v0") == "MiniGrid-FourRooms-v0"
    assert preset_name("rlopt/GridGame-DoorKey-5x5-v0") == "MiniGrid-DoorKey-5x5-v0"
    assert preset_name("Reacher-v5") == "Reacher-v2"
    assert preset_name("rlopt/ArmReach3-v0") == "Reacher-v2"
    assert preset_name("Pendulum-v1") is None


def test_preset_config_applies_row_then_overrides():
    config = preset_config("CartPole-v1", seed=3, n_epochs=5)
    assert config.n_steps == SB3_PRESETS["CartPole-v1"]["n_steps"] == 32
    assert config.learning_rate_schedule == "linear"
    assert (config.n_epochs, config.seed, config.preset) == (5, 3, "CartPole-v1")
    plain = preset_config("Pendulum-v1")
    assert (plain.n_steps, plain.preset) == (2048, "")  # SB3's defaults
    grid = preset_config("rlopt/GridGame-Empty-5x5-v0")
    assert grid.normalize and grid.n_envs == 8
    assert preset_config("CartPole-v1", net_arch=[32]).net_arch == (32,)  # JSON lists become tuples


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 512}, "batch_size=512 exceeds the rollout size"),
        ({"gamma": 1.5}, "gamma=1.5"),
        ({"policy": "CnnPolicy"}, "policy='CnnPolicy' is not accepted"),
        ({"learning_rate_schedule": "cosine"}, "learning_rate_schedule='cosine'"),
        ({"net_arch": (64, 0)}, "net_arch"),
        ({"clip_range": 0.0}, "clip_range=0.0"),
        ({"preset": "Nope-v0"}, "preset='Nope-v0'"),
    ],
)
def test_config_rejects_bad_values(changes, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        SB3PPOConfig(env_id="CartPole-v1", n_steps=32, n_envs=8, **changes)


def test_preset_config_rejects_unknown_field():
    with pytest.raises(ConfigError, match="unknown SB3PPOConfig fields \\['n_step'\\]"):
        preset_config("CartPole-v1", n_step=64)


# --- observations ----------------------------------------------------------------------------------------------------


def test_float_observation_casts_uint8_and_drops_text():
    env = FloatObservation(gym.make("rlopt_tests/Uint8Dict-v0"))
    assert set(env.observation_space.spaces) == {"image", "direction"}
    assert env.observation_space["image"].dtype == np.float32
    assert env.observation_space["image"].high.max() == 10.0
    observation, _ = env.reset(seed=0)
    assert observation["image"].dtype == np.float32
    assert observation in env.observation_space
    unchanged = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
    assert float_observation_space(unchanged) is unchanged


@pytest.mark.parametrize("env_id", ["rlopt_tests/Uint8Box-v0", "rlopt_tests/Uint8Dict-v0"])
def test_normalized_uint8_observations_are_stored_as_floats(tmp_path: Path, env_id: str):
    # DESIGN.md section 7: with VecNormalize on a uint8 space SB3 stores normalized observations as uint8, which
    # truncates them to a few integers. The adapter must cast to float32 first, so the buffer keeps real values.
    config = preset_config(
        env_id, normalize=True, n_envs=2, n_steps=16, batch_size=16, n_epochs=1, total_steps=32,
        eval_episodes=2, progress=False, logdir=str(tmp_path), run_name="uint8",
    )  # fmt: skip
    model, summary = train(config)
    stored = model.rollout_buffer.observations
    image = stored["image"] if isinstance(stored, dict) else stored
    assert image.dtype == np.float32
    assert np.any(image < 0), "normalized observations lost their negative values"
    assert np.any(np.abs(image - np.round(image)) > 1e-3), "normalized observations were truncated to integers"
    assert summary["hyperparameters"]["float_observations"] is True
    assert summary["eval/success_rate"] is not None  # the env reports is_success
    # `rlopt eval` of the run folder: the saved model and its VecNormalize statistics give the run's final scores
    evaluated = api.evaluate(tmp_path / "uint8", episodes=2)
    for key in ("eval/mean_reward", "eval/success_rate", "eval/mean_ep_length"):
        assert evaluated[key] == pytest.approx(summary[key]), key


def test_a_failed_start_leaves_no_run_folder(tmp_path: Path):
    config = preset_config("rlopt/GridGame-Empty-5x5-v0", env_kwargs={"size": 1}, logdir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="size must be an integer >= 4"):
        train(config)  # the env cannot be built: its run folder held only config.json, and is gone
    assert list(tmp_path.iterdir()) == []


# --- a short CartPole run --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cartpole_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("sb3")
    config = preset_config(
        "CartPole-v1", total_steps=5000, eval_every=1000, eval_episodes=8, seed=1, progress=True, eval_on_start=True,
        logdir=str(logdir), run_name="cartpole",
    )  # fmt: skip
    model, summary = train(config)
    return model, summary, logdir / "cartpole"


def test_cartpole_run_writes_summary_and_config(cartpole_run):
    _, summary, run_dir = cartpole_run
    assert SUMMARY_KEYS <= set(summary)
    assert runs.read_json(run_dir / runs.SUMMARY_FILE) == summary
    assert runs.is_finished(run_dir)
    assert summary["baseline"] == "stable-baselines3"
    assert summary["env_steps"] >= 5000
    assert summary["eval/episodes"] == 8
    assert summary["eval/success_rate"] is None  # CartPole reports no success
    assert summary["num_parameters"] > 0 and summary["steps_per_second"] > 0 and summary["peak_rss_mb"] > 0
    assert summary["hyperparameters"]["preset"] == "CartPole-v1"
    config = runs.read_json(run_dir / runs.CONFIG_FILE)
    assert {"algo", "env_id", "seed", "config", "versions"} <= set(config)
    assert config["config"]["n_steps"] == 32 and "stable_baselines3" in config["versions"]
    assert (run_dir / runs.CHECKPOINT_DIR / "model.zip").is_file()


def test_cartpole_run_logs_sb3_tags_against_env_steps(cartpole_run):
    _, summary, run_dir = cartpole_run
    events = list(run_dir.glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file directly in the run folder"
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"rollout/ep_rew_mean", "rollout/ep_len_mean", "time/fps", "train/approx_kl", "eval/mean_reward"} <= tags
    evaluation_steps = [event.step for event in accumulator.Scalars("eval/mean_reward")]
    assert evaluation_steps == sorted(set(evaluation_steps))
    # eval_on_start: one point at step 0 (the hparams summary there adds none), then every 1000 env steps, plus the
    # final one at 5120
    assert evaluation_steps == [0, 1000, 2000, 3000, 4000, 5000, 5120]
    assert evaluation_steps[-1] == summary["env_steps"]  # the final evaluation is on the curve
    final = accumulator.Scalars("eval/mean_reward")[-1].value
    assert final == pytest.approx(summary["eval/mean_reward"])
    # It learned: an untrained deterministic policy balances for about 10-30 steps; RL Zoo's settings pass 100
    # within 5k steps on seeds 1, 2 and 3 here.
    assert final > 50


def test_refuses_to_write_into_a_finished_run(cartpole_run):
    _, _, run_dir = cartpole_run
    config = preset_config("CartPole-v1", total_steps=256, logdir=str(run_dir.parent), run_name=run_dir.name)
    before = (run_dir / runs.CONFIG_FILE).read_bytes()
    with pytest.raises(ConfigError, match="already holds a run"):
        train(config)
    assert (run_dir / runs.CONFIG_FILE).read_bytes() == before


def test_checkpoint_reloads_and_evaluation_is_deterministic(cartpole_run):
    model, summary, run_dir = cartpole_run
    envs = [gym.make("CartPole-v1") for _ in range(8)]
    first = evaluate(model, envs)
    assert first == evaluate(model, envs)
    assert first["eval/mean_reward"] == pytest.approx(summary["eval/mean_reward"])
    assert first["eval/mean_ep_length"] == first["eval/mean_reward"]  # CartPole pays 1 per step
    loaded = PPO.load(run_dir / runs.CHECKPOINT_DIR / "model.zip", device="cpu")
    assert evaluate(loaded, envs) == first
    with pytest.raises(ConfigError, match="is an SB3 run: load it with stable_baselines3.PPO.load"):
        api.load_policy(run_dir)  # rlopt's policies only; the message says how to load this one
    # rlopt's evaluation entry point (`rlopt eval`) takes the run folder, its checkpoints/ folder or model.zip
    for path in (run_dir, run_dir / runs.CHECKPOINT_DIR, run_dir / runs.CHECKPOINT_DIR / "model.zip"):
        result = api.evaluate(path, episodes=8)
        assert result["eval/mean_reward"] == first["eval/mean_reward"] and result["env_id"] == "CartPole-v1"
        assert result["env_steps_trained"] == summary["env_steps"] and result["episodes"] == 8


def test_an_sb3_run_cannot_teach_and_is_not_offered_resume(cartpole_run):
    from rlopt.checkpoint import CheckpointError
    from rlopt.distill import distill_config

    _, _, run_dir = cartpole_run
    with pytest.raises(CheckpointError, match="stable-baselines3 run"):
        distill_config(str(run_dir))
    with pytest.raises(ConfigError, match="already holds a run; choose another --run-name"):
        runs.create_run_folder(run_dir.parent, run_dir.name, numbered=False)

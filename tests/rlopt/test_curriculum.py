"""The difficulty curriculum: the pure level rule, the windowed Curriculum object, and GRPO training with it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import make_policy
from rlopt import api, grpo
from rlopt.checkpoint import load_checkpoint, save_checkpoint
from rlopt.config import ConfigError
from rlopt.curriculum import Curriculum, next_level

MATH = "rlopt/MathReasoning-v0"


@pytest.mark.parametrize(
    ("level", "accuracy", "expected"),
    [
        (3, 0.7, 4),  # the promotion threshold is inclusive
        (3, 0.69, 3),
        (3, 0.1, 2),  # so is the demotion threshold
        (3, 0.11, 3),
        (6, 1.0, 6),  # clipped at the top
        (1, 0.0, 1),  # and at the bottom
        (2, 0.4, 2),
    ],
)
def test_next_level_by_hand(level: int, accuracy: float, expected: int) -> None:
    assert next_level(level, accuracy, min_level=1, max_level=6) == expected


def test_next_level_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="demote_at < promote_at"):
        next_level(2, 0.5, 1, 6, promote_at=0.3, demote_at=0.4)
    with pytest.raises(ValueError, match="accuracy=1.5"):
        next_level(2, 1.5, 1, 6)
    with pytest.raises(ValueError, match="level=7 is outside"):
        next_level(7, 0.5, 1, 6)


def test_curriculum_decides_on_full_windows_and_restarts_the_window_after_a_change() -> None:
    curriculum = Curriculum(level=1, max_level=3, window=4)
    assert curriculum.record([1, 1, 1]) == 1, "no decision before the window is full"
    assert curriculum.record([np.nan, 1]) == 2 and curriculum.changes == [(4, 1, 2)]
    assert np.isnan(curriculum.accuracy), "the window restarts at the new level"
    assert curriculum.metrics() == {"curriculum/level": 2.0, "curriculum/window_accuracy": 1.0}, (
        "the accuracy that crossed the threshold is the one reported with the change"
    )
    assert curriculum.record([0, 1, 0, 1]) == 2  # 0.5: stay
    assert curriculum.record([0, 0, 0]) == 2  # the last four are 1, 0, 0, 0: 0.25 is above 0.1
    assert curriculum.record([0]) == 1  # 0, 0, 0, 0
    assert curriculum.changes[-1] == (12, 2, 1)
    assert curriculum.metrics()["curriculum/level"] == 1.0


def test_curriculum_sliding_window_uses_only_the_last_episodes() -> None:
    curriculum = Curriculum(level=2, window=4, promote_at=0.75, demote_at=0.25)
    assert curriculum.record([1, 0, 1, 0]) == 2  # 0.5
    assert curriculum.record([1]) == 2  # last four: 0, 1, 0, 1 -> 0.5
    assert curriculum.record([1]) == 3  # last four: 1, 0, 1, 1 -> 0.75
    assert curriculum.episodes == 6


def test_curriculum_state_round_trips_through_json() -> None:
    curriculum = Curriculum(level=2, window=8)
    curriculum.record([1, 0, 1])
    restored = Curriculum.from_state_dict(json.loads(json.dumps(curriculum.state_dict())))
    assert restored.state_dict() == curriculum.state_dict()
    assert restored.record([1, 1, 1, 1, 1]) == curriculum.record([1, 1, 1, 1, 1]) == 3


def test_curriculum_rejects_bad_settings_and_outcomes() -> None:
    with pytest.raises(ValueError, match="window=0"):
        Curriculum(window=0)
    with pytest.raises(ValueError, match="level=9 is outside"):
        Curriculum(level=9)
    with pytest.raises(ValueError, match="success values must be 0, 1 or NaN"):
        Curriculum().record([0.5])


# --- GRPO with a curriculum ---


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def _math_config(tmp_path: Path, **overrides: Any) -> grpo.GRPOConfig:
    """16 episodes per iteration of an untrained policy on levels 1-2 (max_length fixed at level 2's 48)."""
    values: dict[str, Any] = dict(
        total_steps=600,
        num_prompts=4,
        group_size=4,
        num_minibatches=1,
        update_epochs=1,
        eval_episodes=4,
        logdir=str(tmp_path),
        progress=False,
        run_name="run",
        curriculum=True,
        curriculum_max_level=2,
        curriculum_window=32,
    )
    values.update(overrides)
    return api.make_config("grpo", MATH, **values)


def _script_success(monkeypatch: pytest.MonkeyPatch) -> list[tuple[np.ndarray, np.ndarray]]:
    """Make every training episode count as solved (a scripted accuracy of 1; an untrained policy solves none) and
    record each training rollout's ``(seeds, first observations)``."""
    played: list[tuple[np.ndarray, np.ndarray]] = []
    collect = grpo.collect_groups

    def scripted(*args: Any, **kwargs: Any) -> Any:
        rollout = collect(*args, **kwargs)
        played.append((rollout.seeds.copy(), rollout.observations[0, :: rollout.group_size].copy()))
        rollout.success[:] = 1.0
        return rollout

    monkeypatch.setattr(grpo, "collect_groups", scripted)
    return played


def _level_of(seeds: np.ndarray, observations: np.ndarray) -> set[int]:
    """The levels (1 or 2, at max_length 48) whose generator poses exactly these problems for these seeds."""
    levels = set()
    for level in (1, 2):
        env = gym.make(MATH, level=level, max_length=48)
        if all(
            np.array_equal(env.reset(seed=int(seed))[0], row) for seed, row in zip(seeds, observations, strict=True)
        ):
            levels.add(level)
        env.close()
    return levels


def test_grpo_curriculum_promotes_logs_and_plays_the_new_level(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    played = _script_success(monkeypatch)
    config = _math_config(tmp_path, progress=True)
    assert config.env_kwargs == {"level": 1, "max_length": 48}, "max_length is fixed to the longest level's default"
    api.train(config)

    scalars = _scalars(tmp_path / "run")
    levels = [value for _, value in scalars["curriculum/level"]]
    assert levels[0] == 1.0, "16 episodes do not fill the 32-episode window"
    assert levels[1:] == [2.0] * (len(levels) - 1) and len(levels) >= 3, levels
    assert [value for _, value in scalars["curriculum/window_accuracy"]][:2] == [1.0, 1.0]
    assert {value for _, value in scalars["eval/level"]} == {1.0}, "evaluation stays at the start level"
    assert len(scalars["curriculum/level"]) == len(scalars["rollout/ep_rew_mean"]), "logged every iteration"

    # the env really poses level-1 problems, then level-2 ones from the iteration after the promotion
    assert [_level_of(*rollout) for rollout in played] == [{1}, {1}] + [{2}] * (len(played) - 2)
    assert "curriculum: level 1 -> 2" in capsys.readouterr().err

    state, _, _ = load_checkpoint(tmp_path / "run")
    saved = state["extra"]["curriculum"]
    assert saved["level"] == 2 and saved["changes"] == [[32, 1, 2]]
    assert saved["episodes"] == 16 * len(played)
    # config.json carries the fixed max_length, so the saved policy loads and evaluates on the run's own env
    assert api.evaluate(tmp_path / "run", episodes=4)["episodes"] == 4


def test_grpo_curriculum_demotes_when_an_untrained_policy_fails(tmp_path: Path) -> None:
    # no scripting: an untrained policy solves no level-2 problem, so the first full window (16) demotes it
    config = _math_config(tmp_path, curriculum_window=16, total_steps=300, env_kwargs={"level": 2})
    api.train(config)
    scalars = _scalars(tmp_path / "run")
    assert scalars["curriculum/level"][0][1] == 1.0
    assert scalars["curriculum/window_accuracy"][0][1] <= 0.1
    assert {value for _, value in scalars["eval/level"]} == {2.0}
    state, _, _ = load_checkpoint(tmp_path / "run")
    assert state["extra"]["curriculum"]["changes"] == [[16, 2, 1]]


def test_grpo_curriculum_resumes_at_the_saved_level(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    played = _script_success(monkeypatch)
    _, first = api.train(_math_config(tmp_path, total_steps=400))
    state, _, _ = load_checkpoint(tmp_path / "run")
    saved = state["extra"]["curriculum"]
    assert saved["level"] == 2
    before = len(played)

    _, second = api.resume(tmp_path / "run", total_steps=first["env_steps"] + 300)
    assert _level_of(*played[before]) == {2}, "the first rollout after resuming is at the saved level"
    resumed = load_checkpoint(tmp_path / "run")[0]["extra"]["curriculum"]
    assert resumed["changes"] == saved["changes"] == [[32, 1, 2]]
    assert resumed["episodes"] == saved["episodes"] + 16 * (len(played) - before), "the count continues"
    after = [value for step, value in _scalars(tmp_path / "run")["curriculum/level"] if step > first["env_steps"]]
    assert after and set(after) == {2.0}
    assert second["env_steps"] >= first["env_steps"] + 300


def test_grpo_curriculum_counts_groups_that_dynamic_sampling_drops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # every group is all-solved, so dynamic sampling drops them all; the curriculum must still see the 2 x 16
    # sampled episodes (a window of 32 fills in the first iteration) since they are what says the level is easy
    _script_success(monkeypatch)
    api.train(_math_config(tmp_path, total_steps=100, dynamic_sampling=True, max_resample=1))
    scalars = _scalars(tmp_path / "run")
    assert scalars["train/dropped_groups"][0][1] == 8
    assert scalars["curriculum/level"][0][1] == 2.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"curriculum_promote_at": 0.1, "curriculum_demote_at": 0.2}, "must be below curriculum_promote_at"),
        ({"curriculum_window": 0}, "curriculum_window=0 is outside"),
        ({"env_kwargs": {"level": 3}}, "start level .* is 3, outside the curriculum range \\[1, 2\\]"),
        ({"curriculum_min_level": 3}, "curriculum_min_level <= curriculum_max_level"),
        ({"curriculum_max_level": 7}, "unknown level 7"),
        ({"curriculum_max_level": 6, "env_kwargs": {"max_length": 40}}, "max_length=40 is too small for level"),
        ({"architecture": "transformer", "context_length": 32}, "context_length=32 cannot hold .* 48 tokens"),
    ],
)
def test_invalid_curriculum_configs_say_what_to_change(tmp_path: Path, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _math_config(tmp_path, **overrides)


def test_curriculum_needs_an_env_with_levels(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="constructor takes level="):
        api.make_config("grpo", "CartPole-v1", curriculum=True, logdir=str(tmp_path))
    api.make_config("grpo", "CartPole-v1", logdir=str(tmp_path))  # without the curriculum nothing is probed


def test_init_policy_too_short_for_the_curriculum_fails_at_build_time(tmp_path: Path) -> None:
    # a transformer built for level 1's 32-token observations (context_length 0 = the observation length)
    config = api.make_config("grpo", MATH, architecture="transformer", num_layers=1, model_dim=32)
    level_one = gym.make(MATH, level=1)
    policy = make_policy(config.policy_spec(value_head=False), level_one.observation_space, level_one.action_space)
    checkpoint = save_checkpoint(
        tmp_path / "sft",
        0,
        policy,
        None,
        {"env_id": MATH, "config": {"env_kwargs": {"level": 1}}, "policy_spec": config.policy_spec(False).to_dict()},
    )
    with pytest.raises(ConfigError, match="(?s)cannot take the curriculum's observations .* context_length >= 48"):
        api.train(_math_config(tmp_path, init=str(checkpoint), architecture="transformer"))

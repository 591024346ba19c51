"""GRPO end to end: grouped rollouts, config validation, learning, TensorBoard, checkpoints, resume, determinism."""

from __future__ import annotations

import dataclasses
import json
from copy import deepcopy as copy_module
from pathlib import Path

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import PolicySpec, make_policy
from rlopt import api, grpo
from rlopt.checkpoint import CheckpointError, load_checkpoint
from rlopt.config import ConfigError
from rlopt.grpo import GRPOConfig
from rlopt.rollout import collect_groups, concatenate_groups, distinct_observations
from rlopt.vector import make_vector_env

EMPTY = "rlopt/GridGame-Empty-5x5-v0"


def _scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return {
        tag: [(event.step, event.value) for event in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


def _small(tmp_path: Path, **overrides) -> GRPOConfig:
    values = dict(
        total_steps=3000,
        num_prompts=4,
        group_size=4,
        eval_episodes=4,
        logdir=str(tmp_path),
        progress=False,
        run_name="run",
    )
    values.update(overrides)
    return api.make_config("grpo", EMPTY, **values)


# --- the grouped collector ---


def test_grouped_rollout_repeats_each_seed_and_masks_finished_members() -> None:
    env = make_vector_env(EMPTY, 6, AutoresetMode.DISABLED)
    policy = make_policy(PolicySpec(), env.single_observation_space, env.single_action_space)
    torch.manual_seed(0)
    rollout = collect_groups(env, policy, np.array([3, 9]), group_size=3, max_steps=100, device=torch.device("cpu"))
    first = rollout.observations["image"][0]
    assert (first[0] == first[1]).all() and (first[1] == first[2]).all(), "members of a group start identically"
    assert rollout.mask.shape == rollout.rewards.shape == (6, rollout.mask.shape[1])
    np.testing.assert_array_equal(rollout.mask.sum(axis=1), rollout.lengths)
    # a mask is a prefix: once a member finishes it stays masked
    assert all((np.diff(row.astype(int)) <= 0).all() for row in rollout.mask)
    assert (rollout.rewards[~rollout.mask] == 0).all()
    np.testing.assert_allclose(rollout.rewards.sum(axis=1), rollout.returns)
    kept = rollout.select_groups(np.array([False, True]))
    assert kept.num_groups == 1 and kept.mask.shape[0] == 3 and kept.seeds.tolist() == [9]
    joined = concatenate_groups([kept, rollout])
    assert joined.num_groups == 3 and joined.mask.shape[0] == 9


def test_grouped_rollout_stores_what_the_policy_did_before_and_after_members_finish() -> None:
    # While every member runs the collector hands the env's batch to the policy as is; once some finish it passes
    # only the running rows. Either way the stored log-probabilities must be the policy's for the stored
    # observation and action, and finished members must hold zeros.
    env = make_vector_env(EMPTY, 8, AutoresetMode.DISABLED)
    torch.manual_seed(1)
    policy = make_policy(PolicySpec(hidden_sizes=(16,)), env.single_observation_space, env.single_action_space)
    rollout = collect_groups(env, policy, np.array([4, 5]), group_size=4, max_steps=100, device=torch.device("cpu"))
    assert rollout.lengths.min() < rollout.lengths.max(), "the test needs members that finish at different steps"
    steps, members = np.nonzero(rollout.mask.T)
    observations = {key: torch.as_tensor(value[steps, members]) for key, value in rollout.observations.items()}
    with torch.no_grad():
        evaluation = policy.evaluate_actions(observations, rollout.actions[steps, members])
    np.testing.assert_allclose(rollout.log_probs[members, steps], evaluation["log_prob"].numpy(), rtol=1e-5, atol=1e-6)
    assert (rollout.log_probs[~rollout.mask] == 0).all()
    assert rollout.log_probs.dtype == np.float32 and rollout.actions.dtype == np.int64


def test_distinct_observations_groups_equal_rows_and_skips_floats() -> None:
    observations = {
        "image": np.array([[[1, 2]], [[1, 2]], [[3, 4]], [[1, 2]]], dtype=np.uint8)[:, None],  # (L=4, N=1, 1, 2)
        "direction": np.array([[0], [0], [0], [1]]),
    }
    steps, members = np.arange(4), np.zeros(4, dtype=int)
    ids, first = distinct_observations(observations, (steps, members), max_fraction=1.0)
    # rows 0 and 1 are equal; row 3 has the image of row 0 but another direction
    assert ids[0] == ids[1] and len({ids[0], ids[2], ids[3]}) == 3
    np.testing.assert_array_equal(ids[first], np.arange(3))
    assert distinct_observations(observations, (steps, members), max_fraction=0.5) is None, "3 of 4 are distinct"
    floats = np.zeros((4, 1, 2), dtype=np.float32)
    assert distinct_observations(floats, (steps, members), max_fraction=1.0) is None


def test_update_on_shared_rows_matches_the_plain_update(monkeypatch: pytest.MonkeyPatch) -> None:
    # the grid repeats itself, so the update scores each distinct observation once; the trained weights must be
    # those of the update that scores every step (up to float summation order)
    config = api.make_config(
        "grpo", EMPTY, num_prompts=2, group_size=4, update_epochs=2, num_minibatches=2, kl_coef=0.1
    )
    env = make_vector_env(EMPTY, 8, AutoresetMode.DISABLED)
    torch.manual_seed(0)
    policy = make_policy(PolicySpec(hidden_sizes=(16,)), env.single_observation_space, env.single_action_space)
    rollout = collect_groups(env, policy, np.array([3, 9]), group_size=4, max_steps=100, device=torch.device("cpu"))
    advantages, _ = grpo._advantages(config, rollout)
    device = torch.device("cpu")
    assert grpo._shared_rows(policy, policy, rollout, env.single_observation_space, device) is not None
    trained = []
    for sharing in (True, False):
        if not sharing:
            monkeypatch.setattr(grpo, "_shared_rows", lambda *args: None)
        copy, reference = copy_module(policy), copy_module(policy)
        optimizer = torch.optim.Adam(copy.parameters(), lr=1e-2)
        metrics = grpo._update(
            config, copy, reference, optimizer, rollout, advantages, 100, env.single_observation_space, device
        )
        trained.append((copy.state_dict(), metrics))
    (shared_state, shared_metrics), (plain_state, plain_metrics) = trained
    for name, value in plain_state.items():
        # Adam divides by the root of the squared gradient, so summation-order noise in near-zero gradients can
        # move a weight by ~1e-5 (the update moves weights by ~4e-2)
        torch.testing.assert_close(shared_state[name], value, rtol=1e-4, atol=2e-4, msg=name)
    assert not torch.equal(plain_state["policy_head.logits.weight"], policy.state_dict()["policy_head.logits.weight"])
    for key, value in plain_metrics.items():
        assert shared_metrics[key] == pytest.approx(value, rel=1e-3, abs=1e-5), key


def _update_copies(config, policy, rollout, advantages, env, skip: bool, start=None):
    """Trained state and metrics of one _update of a copy of ``policy`` (or of ``start``: (weights, optimizer))."""
    config = dataclasses.replace(config, skip_zero_advantage=skip)
    trained = copy_module(policy)
    optimizer = torch.optim.Adam(trained.parameters(), lr=1e-2)
    if start is not None:
        trained.load_state_dict(start[0])
        optimizer.load_state_dict(copy_module(start[1]))  # Adam updates its state tensors in place
    metrics = grpo._update(
        config, trained, None, optimizer, rollout, advantages, 100, env.single_observation_space, torch.device("cpu")
    )
    return trained.state_dict(), metrics, optimizer


TINY_TRANSFORMER = {"architecture": "transformer", "num_layers": 1, "num_heads": 2, "model_dim": 16}


@pytest.mark.parametrize(
    ("env_id", "spec", "loss_type"),
    [
        (EMPTY, {"hidden_sizes": (16,)}, "grpo"),
        (EMPTY, {"hidden_sizes": (16,)}, "dapo"),
        (EMPTY, {"hidden_sizes": (16,)}, "dr_grpo"),
        ("rlopt/MathReasoning-v0", TINY_TRANSFORMER, "grpo"),  # whole episodes through evaluate_episodes
    ],
    ids=["grid-grpo", "grid-dapo", "grid-dr_grpo", "math-transformer"],
)
def test_skipping_zero_advantage_episodes_keeps_the_update(env_id: str, spec: dict, loss_type: str) -> None:
    config = api.make_config(
        "grpo", env_id, num_prompts=4, group_size=4, update_epochs=2, num_minibatches=2, loss_type=loss_type
    )
    env = make_vector_env(env_id, 16, AutoresetMode.DISABLED)
    torch.manual_seed(0)
    policy = make_policy(PolicySpec(**spec), env.single_observation_space, env.single_action_space)
    rollout = collect_groups(env, policy, np.array([3, 9, 4, 7]), group_size=4, max_steps=100, device="cpu")
    # groups 1 and 3 are dead (all-equal rewards give exactly 0); groups 0 and 2 carry signal
    advantages = torch.randn(16, rollout.mask.shape[1], generator=torch.Generator().manual_seed(1))
    advantages[4:8] = 0.0
    advantages[12:16] = 0.0
    plain_state, plain_metrics, _ = _update_copies(config, policy, rollout, advantages, env, skip=False)
    skip_state, skip_metrics, _ = _update_copies(config, policy, rollout, advantages, env, skip=True)
    for name, value in plain_state.items():
        torch.testing.assert_close(skip_state[name], value, rtol=1e-4, atol=1e-5, msg=name)
    before = policy.state_dict()
    assert any(not torch.equal(value, before[name]) for name, value in plain_state.items()), "the update moved"
    assert skip_metrics["train/loss"] == pytest.approx(plain_metrics["train/loss"], rel=1e-4, abs=1e-6)
    assert skip_metrics["train/grad_norm"] == pytest.approx(plain_metrics["train/grad_norm"], rel=1e-4)
    assert 0.0 < skip_metrics["train/frac_zero_advantage_skipped"] < 1.0
    assert "train/frac_zero_advantage_skipped" not in plain_metrics


def test_a_minibatch_of_zero_advantage_episodes_still_steps_the_optimizer() -> None:
    # Adam moves the weights by its momentum even on a zero gradient; the skipping update must do the same
    config = api.make_config("grpo", EMPTY, num_prompts=2, group_size=4, update_epochs=1, num_minibatches=1)
    env = make_vector_env(EMPTY, 8, AutoresetMode.DISABLED)
    torch.manual_seed(0)
    policy = make_policy(PolicySpec(hidden_sizes=(16,)), env.single_observation_space, env.single_action_space)
    rollout = collect_groups(env, policy, np.array([3, 9]), group_size=4, max_steps=100, device="cpu")
    live = torch.randn(8, rollout.mask.shape[1], generator=torch.Generator().manual_seed(1))
    state, _, optimizer = _update_copies(config, policy, rollout, live, env, skip=False)
    start = (state, optimizer.state_dict())
    dead = torch.zeros_like(live)
    plain_state, _, _ = _update_copies(config, policy, rollout, dead, env, skip=False, start=start)
    skip_state, skip_metrics, _ = _update_copies(config, policy, rollout, dead, env, skip=True, start=start)
    assert skip_metrics["train/frac_zero_advantage_skipped"] == 1.0
    for name, value in plain_state.items():
        torch.testing.assert_close(skip_state[name], value, msg=name)
    assert not torch.equal(plain_state["policy_head.logits.weight"], state["policy_head.logits.weight"])


# --- configuration ---


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"group_size": 1}, "group_size=1"),
        ({"dynamic_sampling": True, "max_resample": 0}, "max_resample"),
        ({"loss_type": "mean"}, "loss_type"),
        ({"clip_coef": 1.5}, "clip_coef"),
        ({"num_prompts": 1, "group_size": 2, "num_minibatches": 4}, "num_minibatches"),
        ({"bogus": 1}, "unknown GRPOConfig fields"),
        ({"skip_zero_advantage": True, "ent_coef": 0.01}, "set ent_coef=0, kl_coef=0 and num_experts=0"),
        ({"skip_zero_advantage": True, "kl_coef": 0.1}, "skip_zero_advantage off"),
    ],
)
def test_invalid_configs_say_what_to_change(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        api.make_config("grpo", EMPTY, **overrides)


def test_grid_and_math_presets_skip_dead_groups_unless_an_option_reads_every_episode() -> None:
    for env_id in (EMPTY, "rlopt/GridGame-DoorKey-5x5-v0", "rlopt/MathReasoning-v0"):
        assert api.make_config("grpo", env_id).skip_zero_advantage
    assert not api.make_config("grpo", EMPTY, preset=False).skip_zero_advantage
    assert not api.make_config("grpo", "CartPole-v1").skip_zero_advantage
    for reads_every_episode in ({"ent_coef": 0.01}, {"kl_coef": 0.1}, {"num_experts": 2}):
        assert not api.make_config("grpo", EMPTY, **reads_every_episode).skip_zero_advantage
    assert not api.make_config("grpo", EMPTY, skip_zero_advantage=False).skip_zero_advantage
    assert api.make_config("grpo", EMPTY, ent_coef=0.0).skip_zero_advantage


def test_grid_and_math_presets_decay_the_learning_rate_unless_told_otherwise() -> None:
    for env_id in ("rlopt/GridGame-DoorKey-5x5-v0", "rlopt/MathReasoning-v0"):
        assert api.make_config("grpo", env_id).lr_schedule == "linear"
        assert api.make_config("grpo", env_id, lr_schedule="constant").lr_schedule == "constant"
    assert api.make_config("grpo", "rlopt/MathReasoning-v0", preset=False).lr_schedule == "constant"


# --- learning, logging, checkpoints ---


def test_grpo_learns_empty_grid_and_logs_everything(tmp_path: Path) -> None:
    config = api.make_config(
        "grpo", EMPTY, total_steps=20_000, logdir=str(tmp_path), run_name="learn", progress=False, eval_episodes=16
    )
    policy, summary = api.train(config)
    # A random policy succeeds on Empty-5x5 in about a third of the episodes within the 100-step budget.
    assert summary["eval/success_rate"] >= 0.9, summary
    assert summary["eval/mean_reward"] > 0.8
    run = tmp_path / "learn"
    saved = json.loads((run / "summary.json").read_text())
    for key in (
        "env_steps",
        "wall_clock_seconds",
        "steps_per_second",
        "num_parameters",
        "eval/mean_reward",
        "eval/success_rate",
    ):
        assert key in saved
    assert saved["num_parameters"] == sum(p.numel() for p in policy.parameters())
    assert not any("value" in name or "critic" in name for name, _ in policy.named_parameters())
    scalars = _scalars(run)
    for tag in (
        "rollout/ep_rew_mean",
        "rollout/ep_len_mean",
        "rollout/success_rate",
        "time/fps",
        "train/approx_kl",
        "train/clip_fraction",
        "train/entropy_loss",
        "train/policy_gradient_loss",
        "train/learning_rate",
        "train/kl_ref",
        "train/reward_std",
        "train/frac_reward_zero_std",
        "train/clip_ratio_low",
        "train/clip_ratio_high",
        "eval/mean_reward",
        "eval/success_rate",
        "rewards/goal",
    ):
        assert tag in scalars, f"missing TensorBoard tag {tag}"
        assert all(np.isfinite(value) for _, value in scalars[tag])
    accumulator = EventAccumulator(str(run))
    accumulator.Reload()
    assert "eval/final_frame" in accumulator.Tags()["images"], "a rendered frame of an evaluation episode"
    steps = [step for step, _ in scalars["rollout/ep_rew_mean"]]
    assert steps == sorted(steps) and steps[-1] == summary["env_steps"], "x-axis is env steps"
    # the checkpoint round-trips: same weights, same greedy actions
    loaded = api.load_policy(run)
    for (name, a), (_, b) in zip(policy.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a.cpu(), b), name
    result = api.evaluate(run, episodes=16)
    assert result["eval/success_rate"] == pytest.approx(summary["eval/success_rate"])


def test_same_seed_gives_identical_logged_scalars(tmp_path: Path) -> None:
    runs = []
    for name in ("a", "b"):
        api.train(_small(tmp_path, run_name=name, seed=3))
        runs.append(_scalars(tmp_path / name))
    for tag, values in runs[0].items():
        if tag == "time/fps":
            continue
        assert values == runs[1][tag], tag


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    config = _small(tmp_path, total_steps=1500, checkpoint_every=500)
    _, first = api.train(config)
    state, _, _ = load_checkpoint(tmp_path / "run")
    assert state["step"] == first["env_steps"]
    _, second = api.resume(tmp_path / "run", total_steps=3000)
    assert second["env_steps"] >= 3000
    with pytest.raises(ConfigError, match="already finished"):
        api.resume(tmp_path / "run")


def test_a_failed_start_leaves_no_run_folder_and_a_failed_run_keeps_its_own(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(CheckpointError, match="no rlopt checkpoint"):
        api.train(_small(tmp_path, run_name=None, init=str(tmp_path / "no-such-run")))
    assert list(tmp_path.iterdir()) == []  # the folder made for config.json is gone with it

    def fail(*args, **kwargs):
        raise RuntimeError("the update failed")

    monkeypatch.setattr(grpo, "_update", fail)
    with pytest.raises(RuntimeError, match="the update failed"):
        api.train(_small(tmp_path))  # fails after its logger opened: its config and events stay, to read
    assert (tmp_path / "run" / "config.json").is_file() and list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_an_existing_run_folder_is_never_written_into(tmp_path: Path, monkeypatch) -> None:
    """A second run under the same name is refused and leaves the first untouched; a default (time-stamped) name
    that is taken gets a numbered sibling; a bad env kwarg fails before any folder is made."""
    _, first = api.train(_small(tmp_path, total_steps=500))
    saved = {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()}
    unknown_env = dataclasses.replace(_small(tmp_path, total_steps=500), env_id="rlopt/NoSuchEnv-v0")
    for config in (_small(tmp_path, total_steps=500), unknown_env):
        with pytest.raises((ConfigError, ValueError)):
            api.train(config)
    assert {path.name: path.read_bytes() for path in (tmp_path / "run").iterdir() if path.is_file()} == saved
    with pytest.raises(ConfigError, match="does not take"):
        api.train(_small(tmp_path / "other", env_kwargs={"nope": 1}))
    assert not (tmp_path / "other").exists()

    monkeypatch.setattr("rlopt.session.run_name", lambda *args: "same-second")
    folders = [api.train(_small(tmp_path, total_steps=500, run_name=None))[1]["run_dir"] for _ in range(2)]
    assert [Path(folder).name for folder in folders] == ["same-second", "same-second-2"]


def test_resume_extends_the_budget_on_record_and_refuses_a_smaller_one(tmp_path: Path) -> None:
    _, first = api.train(_small(tmp_path, total_steps=500))
    with pytest.raises(ConfigError, match="above that"):
        api.resume(tmp_path / "run", total_steps=first["env_steps"])
    _, second = api.resume(tmp_path / "run", total_steps=first["env_steps"] + 500)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["config"]["total_steps"] == first["env_steps"] + 500  # a later plain --resume aims there too
    assert second["env_steps"] >= first["env_steps"] + 500


def test_dynamic_sampling_and_variants_run(tmp_path: Path) -> None:
    config = _small(
        tmp_path,
        dynamic_sampling=True,
        loss_type="dr_grpo",
        scale_rewards="none",
        kl_coef=0.05,
        ref_reset_every=2,
        clip_coef_high=0.28,
        advantage="step",
        lr_schedule="linear",
    )
    _, summary = api.train(config)
    scalars = _scalars(tmp_path / "run")
    assert "train/dropped_groups" in scalars
    assert any(value > 0 for _, value in scalars["train/kl_ref"]), "the KL term is active"
    assert summary["env_steps"] >= 3000


def test_eval_media_off_logs_no_frames(tmp_path: Path) -> None:
    api.train(_small(tmp_path, total_steps=500, eval_media=False))
    accumulator = EventAccumulator(str(tmp_path / "run"))
    accumulator.Reload()
    assert not accumulator.Tags()["images"] and "eval/success_rate" in accumulator.Tags()["scalars"]


def test_pickled_checkpoint_is_refused(tmp_path: Path) -> None:
    api.train(_small(tmp_path, total_steps=500))
    checkpoint = next((tmp_path / "run" / "checkpoints").glob("step_*"))
    marker = tmp_path / "executed"
    payload = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()
    (checkpoint / "model.safetensors").write_bytes(b"\x80\x02" + payload)
    with pytest.raises(CheckpointError, match="pickle"):
        api.load_policy(checkpoint)
    assert not marker.exists()
    (checkpoint / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        api.load_policy(checkpoint)
    (checkpoint / "model.safetensors").write_bytes(b"\x80\x0c\x00\x00\x00\x00\x00\x00{")  # claims 3,200 bytes
    with pytest.raises(CheckpointError, match="cut short"):
        api.load_policy(checkpoint)


def test_edited_checkpoint_state_is_refused_by_name(tmp_path: Path, capsys) -> None:
    """A state.json that is valid JSON but not a checkpoint's state (edited, or from another tool) gives a clear
    error in eval, --init and --resume, never a KeyError or TypeError traceback; a latest.json that points out of
    its run folder is not followed."""
    import shutil

    from rlopt.cli import main

    api.train(_small(tmp_path / "src", total_steps=500))
    source = tmp_path / "src" / "run"
    step = next((source / "checkpoints").glob("step_*")).name

    def broken(name: str, edit) -> Path:
        copy = tmp_path / name
        shutil.copytree(source, copy)
        path = copy / "checkpoints" / step / "state.json"
        state = json.loads(path.read_text())
        path.write_text(json.dumps(edit(state)))
        return copy

    no_spec = broken("no_spec", lambda state: {k: v for k, v in state.items() if k != "policy_spec"})
    a_list = broken("a_list", lambda state: [1, 2])
    bad_step = broken("bad_step", lambda state: {**state, "step": "abc"})
    bad_rng = broken("bad_rng", lambda state: {**state, "numpy_rng": {"bit_generator": "PCG64", "state": "x"}})
    for folder, expected in ((no_spec, "policy_spec"), (a_list, "holds a list"), (bad_step, "step should be")):
        assert main(["eval", str(folder), "--episodes", "2"]) == 2
        assert expected in capsys.readouterr().err
        with pytest.raises(CheckpointError, match=expected):
            api.train(_small(tmp_path / "init", init=str(folder), run_name=folder.name))
    assert main(["train", "--resume", str(bad_rng), "--total-steps", "5000", "--no-progress"]) == 2
    assert "cannot be resumed" in capsys.readouterr().err
    assert json.loads((bad_rng / "config.json").read_text())["config"]["total_steps"] == 500  # left as it was

    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(source, elsewhere)
    (elsewhere / "checkpoints" / "latest.json").write_text(json.dumps({"name": f"../../src/run/checkpoints/{step}"}))
    with pytest.raises(CheckpointError, match="does not name a checkpoint"):
        api.load_policy(elsewhere)


def test_wrong_value_types_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="learning_rate='abc' must be a number"):
        _small(tmp_path, learning_rate="abc")
    with pytest.raises(ConfigError, match="total_steps='1000' must be an integer"):
        _small(tmp_path, total_steps="1000")
    with pytest.raises(ConfigError, match="run_name='../x' must be a plain folder name"):
        _small(tmp_path, run_name="../x")
    config = _small(tmp_path, total_steps=1e4, seed=np.int64(3))
    assert config.total_steps == 10_000 and type(config.seed) is int
    with pytest.raises(ConfigError, match="episodes=0"):
        api.evaluate(tmp_path / "nothing", episodes=0)
    with pytest.raises(ConfigError, match="env_kwargs must be a dict"):
        api.evaluate(tmp_path / "nothing", env_kwargs='{"level": 1}')
    with pytest.raises(ConfigError, match="env_id=None"):
        api.make_config("grpo", None)
    with pytest.raises(ConfigError, match="not sb3_ppo"):
        api.train(api.make_config("sb3_ppo", "CartPole-v1"), resume=True)
    _, summary = api.train(_small(tmp_path, total_steps=300))
    with pytest.raises(ConfigError, match="total_steps='9000' must be an integer"):
        api.resume(summary["run_dir"], total_steps="9000")
    assert api.evaluate(summary["run_dir"], episodes=np.int64(2))["episodes"] == 2
    with pytest.raises(ConfigError, match=r"brings its own network, so hidden_sizes=\(8,\)"):
        api.train(_small(tmp_path, init=summary["run_dir"], hidden_sizes=(8,), run_name="init"))
    assert not (tmp_path / "init").exists()


def test_a_safetensors_header_whose_length_starts_with_0x80_loads(tmp_path: Path) -> None:
    """A header of 3,200 (0x0c80) bytes makes the file's first byte 0x80, a pickle's first opcode: such a checkpoint
    (rlopt PPO's math transformer from an SFT start had one) must load, not be refused as a pickle."""
    from safetensors.torch import load_file, save_file

    from rlopt.checkpoint import _check_safetensors

    path = tmp_path / "weights.safetensors"
    for pad in range(200):  # tensor names lengthen the JSON header until its length's low byte is 0x80
        tensors = {f"w{'x' * pad}_{index}": torch.zeros(2) for index in range(40)}
        save_file(tensors, str(path))
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length with a low byte of 0x80 was produced")
    _check_safetensors(path)
    assert set(load_file(str(path))) == set(tensors)


def test_step_advantages_learn_on_the_arm(tmp_path: Path) -> None:
    """The arm preset's per-step group baseline: the final distance-based reward improves clearly on the first
    evaluation within 60k env steps (measured: -9.3 at the start, -7.4 at 60k)."""
    config = api.make_config(
        "grpo",
        "rlopt/ArmReach-v0",
        logdir=str(tmp_path),
        run_name="run",
        progress=False,
        total_steps=60_000,
        eval_every=20_000,
        eval_episodes=32,
        seed=0,
    )
    assert config.advantage == "step"
    api.train(config)
    scalars = _scalars(tmp_path / "run")
    assert "train/frac_step_zero_std" in scalars
    rewards = [value for _, value in scalars["eval/mean_reward"]]
    assert rewards[-1] > rewards[0] + 1.0, rewards


def test_distinct_observations_leaves_large_batches_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    observations = np.zeros((4, 1, 8), dtype=np.uint8)  # 4 equal rows of 8 bytes
    index = (np.arange(4), np.zeros(4, dtype=int))
    assert distinct_observations(observations, index) is not None
    monkeypatch.setattr("rlopt.rollout.DISTINCT_SEARCH_MAX_BYTES", 31)
    assert distinct_observations(observations, index) is None


def test_the_progress_bar_ends_at_the_steps_trained_past_the_budget(tmp_path: Path, capsys) -> None:
    """A last batch past the budget grows the bar's total: it ends at N/N, where tqdm alone would drop the total it
    passed and end as a bare count ("523step")."""
    warning = "one GRPO batch is 4 x 4 whole episodes of up to 100 steps, up to 1,600 env steps, more than total_steps"
    with pytest.warns(UserWarning, match=warning):  # said at the start
        grpo.train(_small(tmp_path, total_steps=50, progress=True))
    trained = json.loads((tmp_path / "run" / "summary.json").read_text())["env_steps"]
    assert trained > 50  # one batch of 4 x 4 episodes is more than 50 steps
    bar = capsys.readouterr().err.replace("\r", "\n")
    assert f"{trained}/{trained}" in bar and f"{trained}step" not in bar


def test_no_budget_warning_when_a_batch_fits(tmp_path: Path) -> None:
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grpo.train(_small(tmp_path, total_steps=1600))  # 4 x 4 episodes of at most 100 steps: exactly the budget
    assert not [warning for warning in caught if "one GRPO batch" in str(warning.message)]

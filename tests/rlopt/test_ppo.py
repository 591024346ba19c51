"""rlopt's own PPO: learning on CartPole and the empty grid, value head, truncation bootstrapping, checkpoints, and
the whole-episode path of sequence policies (the math token transformer)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import TransformerPolicy
from agents.transformer import token_lengths
from envs.math_reasoning import EOS
from rlopt import api, ppo
from rlopt.config import ConfigError
from rlopt.ppo import PPOConfig, _gae
from rlopt.rollout import StepRollout

MATH = "rlopt/MathReasoning-v0"
#: a tiny transformer PPO on level 1 of the math env (a few seconds per run)
TINY_MATH = dict(
    architecture="transformer",
    num_layers=1,
    num_heads=2,
    model_dim=32,
    env_kwargs={"level": 1},
    num_envs=8,
    num_steps=16,
    num_minibatches=2,
    update_epochs=2,
    progress=False,
    eval_episodes=4,
    device="cpu",
)


def test_ppo_learns_cartpole(tmp_path: Path) -> None:
    # 60k steps, not 40k: at 40k the outcome sat on a cliff (seed 0 gave 307 with two threads, and a float-rounding
    # change, fused Adam, sent seeds 0 and 3 to 150 and 105); at 60k seeds 0-3 gave 467-500 with one thread, 500
    # with two, and 500 with fused Adam
    config = api.make_config(
        "ppo", "CartPole-v1", total_steps=60_000, logdir=str(tmp_path), run_name="cp", progress=False, eval_episodes=8
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
        eval_every=256,
        eval_on_start=True,
        shared_trunk=True,
    )
    policy, first = api.train(config)
    assert first["env_steps"] == 512
    _, second = api.resume(tmp_path / "r", total_steps=1024)
    assert second["env_steps"] == 1024
    # evaluated before the first update, then every 256 steps; once at 512 although a periodic evaluation and the
    # final one fell there, and not again at step 0 when resumed
    assert [step for step, _ in _scalars(tmp_path / "r", "eval/mean_reward")] == [0, 256, 512, 768, 1024]
    assert torch.isfinite(torch.cat([p.flatten() for p in policy.parameters()])).all()


# --- whole episodes: the transformer ------------------------------------------------------------------------------


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [(event.step, event.value) for event in accumulator.Scalars(tag)]


def test_transformer_ppo_trains_on_whole_episodes_and_resumes(tmp_path: Path, monkeypatch) -> None:
    def step_path(*args, **kwargs):
        raise AssertionError("the transformer must not take the per-step PPO path")

    monkeypatch.setattr(ppo, "_update", step_path)
    monkeypatch.setattr(ppo.StepCollector, "collect", step_path)
    updates = []
    update = ppo._update_episodes
    monkeypatch.setattr(ppo, "_update_episodes", lambda *args: updates.append(args[3].num_episodes) or update(*args))
    config = api.make_config("ppo", MATH, total_steps=256, logdir=str(tmp_path), run_name="t", **TINY_MATH)
    policy, first = api.train(config)
    assert isinstance(policy, TransformerPolicy) and policy.has_value
    # each rollout: rounds of num_envs = 8 whole episodes until at least 8 x 16 = 128 env steps
    assert updates and all(count % 8 == 0 for count in updates)
    assert first["finished"] and first["env_steps"] >= 256
    for tag in (
        "rollout/ep_rew_mean",
        "rollout/success_rate",
        "train/value_loss",
        "train/approx_kl",
        "train/clip_fraction",
        "train/explained_variance",
        "rewards/accuracy",
        "time/fps",
    ):
        assert np.isfinite(_scalars(tmp_path / "t", tag)[-1][1]), tag
    _, second = api.resume(tmp_path / "t", total_steps=first["env_steps"] + 128)
    assert second["env_steps"] >= first["env_steps"] + 128 and len(updates) > 2


#: four fixed problems for the transformer PPO learning test (answers a short supervised start does not know)
FOUR_PROBLEMS = [("23+45", 68), ("71-36", 35), ("58+19", 77), ("90-47", 43)]


def test_transformer_ppo_learns_answers_from_a_supervised_start(tmp_path: Path) -> None:
    # A 300-step supervised start on level 1 writes well-formed answers but gets these four problems wrong (greedy
    # accuracy 0.0 when measured); PPO with the math preset (value head on the same transformer) then trains on the
    # four and must answer most of them. Measured at 20k steps, seeds 0-2: 0.00 -> 1.00, 0.00 -> 0.75,
    # 0.125 -> 0.875; the first preset (lr 5e-4, entropy bonus 0.01) stayed at 0.00 here.
    from rlopt.sft import SFTConfig, train_sft

    problems = tmp_path / "four.jsonl"
    problems.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in FOUR_PROBLEMS))
    sft = SFTConfig(total_steps=300, learning_rate=3e-3, logdir=str(tmp_path), run_name="sft", progress=False)
    train_sft(sft)
    on_four = {"problem_file": str(problems)}
    before = api.evaluate(tmp_path / "sft", MATH, episodes=32, env_kwargs=on_four)
    config = api.make_config(
        "ppo",
        MATH,
        init=str(tmp_path / "sft"),
        env_kwargs=on_four,
        total_steps=20_000,
        eval_episodes=32,
        logdir=str(tmp_path),
        run_name="ppo",
        progress=False,
    )
    _, summary = api.train(config)
    assert before["eval/success_rate"] <= 0.25, before
    assert summary["eval/success_rate"] >= 0.6, (before, summary)


class _FullBufferTruncates(gym.vector.VectorWrapper):
    """Reports the math env's full-buffer endings as truncations (the env itself calls them terminal), so that
    the test below reaches PPO's bootstrapped branch, as an env with a time limit would."""

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(actions)
        cut = terminated & (np.asarray(actions) != EOS) & (np.asarray(actions) != 0)
        return observation, reward, terminated & ~cut, truncated | cut, info


def test_episode_batch_matches_the_step_wise_policy() -> None:
    """The rollout's values and log-probabilities, and the update's whole-episode scores, equal the per-step
    ``value`` / ``evaluate_actions`` of every observation the episodes went through."""
    config = api.make_config("ppo", MATH, **{**TINY_MATH, "num_steps": 1})
    env = ppo._TerminationRecorder(
        _FullBufferTruncates(ppo.make_vector_env(MATH, config.num_envs, ppo.AutoresetMode.DISABLED, {"level": 1}))
    )
    policy, _ = ppo.build_policy(config, env.single_observation_space, env.single_action_space, value_head=True)
    with torch.no_grad():
        policy.value_head.weight.mul_(50.0)  # values far from 0
    session = type("Session", (), {"numpy_rng": np.random.default_rng(0)})()
    torch.manual_seed(0)
    batch = ppo._collect_episodes(config, session, env, policy, 64, torch.device("cpu"))
    env.close()
    rollout = batch.rollout
    lengths = batch.mask.sum(dim=1)
    last_actions = batch.actions[torch.arange(8), lengths - 1]
    # terminated by <eos> (or a PAD, which ends a malformed episode); else cut by the full buffer (a random policy
    # rarely writes <eos>, so both kinds occur)
    assert batch.num_episodes == 8 and 0 < int(batch.terminated.sum()) < 8
    assert torch.equal(batch.terminated, (last_actions == EOS) | (last_actions == 0))
    cut = torch.nonzero(~batch.terminated).squeeze(1)
    assert (token_lengths(batch.first_observations[cut]) + lengths[cut] == batch.first_observations.shape[1]).all()
    finals = batch.first_observations.clone()
    for episode in range(8):
        start = int(token_lengths(finals[episode : episode + 1])[0])
        finals[episode, start : start + int(lengths[episode])] = batch.actions[episode, : int(lengths[episode])]
    with torch.no_grad():  # the value a cut episode is bootstrapped from (one ended by PAD has no observation)
        valued = torch.nonzero(last_actions != 0).squeeze(1)
        assert set(cut.tolist()) <= set(valued.tolist())
        torch.testing.assert_close(batch.final_values[valued], policy.value(finals[valued]), atol=1e-5, rtol=0)
    with torch.no_grad():
        scored = policy.evaluate_episodes(batch.first_observations, batch.actions, batch.mask, with_values=True)
    steps, episodes = np.nonzero(rollout.mask.T)
    observations = torch.as_tensor(rollout.observations[steps, episodes])
    with torch.no_grad():
        single = policy.evaluate_actions(observations, torch.as_tensor(rollout.actions[steps, episodes]))
    torch.testing.assert_close(batch.values[episodes, steps], single["value"], atol=1e-5, rtol=0)
    torch.testing.assert_close(scored["log_prob"][episodes, steps], single["log_prob"], atol=1e-5, rtol=0)
    torch.testing.assert_close(batch.log_probs[episodes, steps], single["log_prob"], atol=1e-5, rtol=0)
    torch.testing.assert_close(scored["entropy"][episodes, steps], single["entropy"], atol=1e-5, rtol=0)
    assert batch.values.abs().max() > 1e-2
    # observations are the prompt plus the tokens generated so far
    assert (
        token_lengths(observations) == token_lengths(batch.first_observations)[episodes] + torch.as_tensor(steps)
    ).all()


def test_episode_gae_bootstraps_cut_episodes_but_not_terminated_ones() -> None:
    config = PPOConfig(gamma=0.5, gae_lambda=0.5, num_envs=1, num_steps=3, num_minibatches=1)
    # episode 0 terminates after 2 steps; episode 1 is cut after 3 steps with V(final observation) = 4
    rewards = torch.tensor([[1.0, 2.0, 7.0], [1.0, 0.0, 1.0]])
    values = torch.tensor([[1.0, 1.0, 9.0], [2.0, 1.0, 2.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    advantages, returns = ppo._episode_gae(
        config, rewards, values, torch.tensor([5.0, 4.0]), mask, torch.tensor([True, False])
    )
    # episode 0: delta_1 = 2 - 1 = 1 (no future); delta_0 = 1 + 0.5 * 1 - 1 = 0.5; A_0 = 0.5 + 0.25 * 1 = 0.75
    # episode 1: delta_2 = 1 + 0.5 * 4 - 2 = 1; delta_1 = 0 + 0.5 * 2 - 1 = 0; delta_0 = 1 + 0.5 * 1 - 2 = -0.5
    #            A_2 = 1, A_1 = 0 + 0.25 * 1 = 0.25, A_0 = -0.5 + 0.25 * 0.25 = -0.4375
    torch.testing.assert_close(advantages, torch.tensor([[0.75, 1.0, 0.0], [-0.4375, 0.25, 1.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.75, 2.0, 0.0], [1.5625, 1.25, 3.0]]))


class _RandomArmPolicy:
    """Seeded random torques and a zero value: enough for the collector."""

    def __init__(self, links: int) -> None:
        self.links, self.generator = links, torch.Generator().manual_seed(0)

    def act(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        count = observation.shape[0]
        return torch.rand(count, self.links, generator=self.generator) * 2 - 1, torch.zeros(count)

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        return torch.zeros(observation.shape[0])


@pytest.mark.parametrize("vectorization_mode", ["vector_entry_point", "sync"])
def test_episode_reward_terms_include_the_last_step(vectorization_mode: str) -> None:
    """The arm's reward is the sum of its two terms at every step, so each episode's term sums must add up to its
    return, the step that ended it included. That step's terms are in final_info: on an autoreset step the top-level
    info is the new episode's (Gymnasium's SyncVectorEnv leaves them out there altogether)."""
    from gymnasium.vector import AutoresetMode

    from rlopt.rollout import StepCollector

    if vectorization_mode == "sync":
        options = {"vector_kwargs": {"autoreset_mode": AutoresetMode.SAME_STEP}}
    else:
        options = {"autoreset_mode": AutoresetMode.SAME_STEP}
    env = gym.make_vec("rlopt/ArmReach-v0", num_envs=2, vectorization_mode=vectorization_mode, **options)
    collector = StepCollector(env, torch.device("cpu"), seed=0)
    rollout = collector.collect(_RandomArmPolicy(2), 120)
    assert len(rollout.episode_returns) == 4  # 50-step episodes end at steps 50 and 100 in both envs
    totals = np.add(rollout.reward_terms["distance"], rollout.reward_terms["control"])
    np.testing.assert_allclose(totals, rollout.episode_returns, rtol=1e-6)

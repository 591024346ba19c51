"""Proximal Policy Optimization with a learned critic, on the same collector, logging and checkpoints as GRPO.

Reference: Schulman et al., "Proximal Policy Optimization Algorithms", arXiv:1707.06347, with GAE (Schulman et
al., arXiv:1506.02438) and the implementation details catalogued by Huang et al., "The 37 Implementation Details
of Proximal Policy Optimization" (ICLR blog track, 2022).

Where this departs from the paper:
1. Episodes cut by a time limit are bootstrapped with V(final observation); terminations are not
   (Pardo et al., "Time Limits in Reinforcement Learning", arXiv:1712.00378).
2. Advantages are normalised per minibatch, the value loss may be clipped (PPO2), and an epoch loop stops early
   when the approximate KL exceeds ``target_kl`` (as in stable-baselines3).
3. Actor and critic are separate networks by default; ``shared_trunk`` puts them on one feature trunk.
4. Sequence policies (the token transformer, which has ``evaluate_episodes``) train on whole episodes: rollouts are
   complete episodes decoded with the KV cache (:func:`rlopt.rollout.collect_groups`, one start seed each), the
   value of every step comes from one forward over the whole episode, and each minibatch of episodes is scored by
   one forward (plus one for a separate critic). The loss is the same per-step PPO loss, averaged over the
   minibatch's steps; this only removes the cost of re-running a full sequence for every single step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents import obs_to_tensor
from rlopt import functional as F
from rlopt.config import ConfigError, PolicyOptions, RunConfig, check_choice, check_range, option
from rlopt.logger import mean_or_nan
from rlopt.rollout import (
    GroupedRollout,
    StepCollector,
    StepRollout,
    collect_groups,
    concatenate_groups,
    index_observations,
)
from rlopt.session import TrainingSession, build_policy, use_precision
from rlopt.vector import episode_step_limit, make_vector_env

#: Start seeds of training episodes are drawn below this bound (evaluation seeds lie above it, as for GRPO).
TRAIN_SEED_BOUND = 2**30


@dataclass
class PPOConfig(PolicyOptions, RunConfig):
    """Every PPO hyperparameter; each becomes a ``rlopt train --algo ppo`` option."""

    num_envs: int = option(16, "Parallel environments.")
    num_steps: int = option(
        128,
        "Steps per environment per rollout (batch = num_envs x num_steps). Sequence policies (architecture "
        "transformer) collect whole episodes instead, num_envs at a time from fresh start seeds, until the rollout "
        "holds at least num_envs x num_steps env steps; minibatches then split it by episode.",
    )
    learning_rate: float = option(3e-4, "Adam learning rate.")
    lr_schedule: str = option("constant", "Learning-rate schedule over the run.", ("constant", "linear"))
    update_epochs: int = option(4, "Passes over each rollout.")
    num_minibatches: int = option(4, "Minibatches per epoch.")
    gamma: float = option(0.99, "Discount factor.")
    gae_lambda: float = option(0.95, "GAE lambda.")
    clip_coef: float = option(0.2, "Surrogate clipping epsilon.")
    clip_vloss: bool = option(True, "Clip the value loss around the old values (PPO2).")
    norm_adv: bool = option(True, "Normalise advantages per minibatch.")
    ent_coef: float = option(0.0, "Entropy bonus coefficient.")
    vf_coef: float = option(0.5, "Value loss coefficient.")
    max_grad_norm: float = option(0.5, "Gradient-norm clipping threshold.")
    target_kl: float | None = option(None, "Stop the epoch loop when approx KL exceeds this (None = never).")
    shared_trunk: bool = option(False, "Actor and critic share one feature trunk.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("num_envs", self.num_envs, 1)
        check_range("num_steps", self.num_steps, 1)
        check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "linear"))
        check_range("update_epochs", self.update_epochs, 1)
        check_range("num_minibatches", self.num_minibatches, 1)
        if self.num_minibatches > self.batch_size:
            raise ConfigError(f"num_minibatches={self.num_minibatches} exceeds the batch of {self.batch_size} steps")
        check_range("gamma", self.gamma, 0.0, 1.0)
        check_range("gae_lambda", self.gae_lambda, 0.0, 1.0)
        check_range("clip_coef", self.clip_coef, 0.0, 1.0, low_open=True, high_open=True)
        check_range("ent_coef", self.ent_coef, 0.0)
        check_range("vf_coef", self.vf_coef, 0.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        if self.target_kl is not None:
            check_range("target_kl", self.target_kl, 0.0, low_open=True)

    @property
    def batch_size(self) -> int:
        """Steps per rollout: num_envs x num_steps."""
        return self.num_envs * self.num_steps


def train(config: PPOConfig, resume: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train an actor-critic with PPO. Returns ``(policy, summary)``; see :class:`PPOConfig`."""
    return TrainingSession(config, "ppo", resume=resume).run(_train, config)


def _train(config: PPOConfig, session: TrainingSession) -> tuple[torch.nn.Module, dict[str, Any]]:
    # --- setup ---
    device = session.device
    env = make_vector_env(config.env_id, config.num_envs, AutoresetMode.SAME_STEP, config.env_kwargs)
    policy, spec = build_policy(
        config, env.single_observation_space, env.single_action_space, value_head=True, shared_trunk=config.shared_trunk
    )
    policy = use_precision(policy.to(device), config.precision)
    optimizer = torch.optim.Adam(policy.parameters(), lr=config.learning_rate, eps=1e-5)
    if session.resume:
        session.restore(policy, optimizer)
    if is_episodic(policy):
        env.close()  # whole episodes need autoreset DISABLED (an --init checkpoint decides the architecture)
        return _train_episodes(config, session, policy, optimizer, spec)
    # a resumed run restarts its envs from fresh seeds: mid-episode env state is not part of a checkpoint
    collector = StepCollector(env, device, seed=int(session.numpy_rng.integers(0, 2**30)))
    hyperparameters = config.to_dict()
    session.start(policy, hyperparameters)
    window = _EpisodeWindow()

    try:
        while not session.done:
            session.schedule_learning_rate(optimizer, config.learning_rate, config.lr_schedule)
            # --- rollout ---
            rollout = collector.collect(policy, config.num_steps)

            # --- advantages ---
            advantages, returns = _gae(config, rollout)

            # --- update epochs ---
            train_metrics = _update(
                config, policy, optimizer, rollout, advantages, returns, env.single_observation_space, device
            )

            # --- log ---
            window.add(rollout.episode_returns, rollout.episode_lengths, rollout.episode_success)
            _log_iteration(session, optimizer, window, config.batch_size, rollout.reward_terms, train_metrics)
            session.maybe_evaluate(policy)

            # --- checkpoint ---
            session.maybe_checkpoint(policy, optimizer, {}, spec)
        summary = session.finish(policy, optimizer, spec, hyperparameters)
    finally:
        env.close()
    return policy, summary


class _EpisodeWindow:
    """Returns, lengths and success of the last 100 finished episodes (SB3's ``rollout/*`` window)."""

    SIZE = 100

    def __init__(self) -> None:
        self.returns: list[float] = []
        self.lengths: list[float] = []
        self.success: list[float] = []

    def add(self, returns: list[float], lengths: list[int], success: list[float]) -> None:
        self.returns = (self.returns + list(returns))[-self.SIZE :]
        self.lengths = (self.lengths + list(lengths))[-self.SIZE :]
        self.success = (self.success + list(success))[-self.SIZE :]


def _log_iteration(
    session: TrainingSession,
    optimizer: torch.optim.Optimizer,
    window: _EpisodeWindow,
    env_steps: int,
    reward_terms: dict[str, list[float]],
    train_metrics: dict[str, float],
) -> None:
    """Advance the run by ``env_steps`` and log one iteration's rollout, reward-term and train metrics (both paths)."""
    session.advance(env_steps, {"ret": mean_or_nan(window.returns)})
    metrics = {
        "rollout/ep_rew_mean": mean_or_nan(window.returns),
        "rollout/ep_len_mean": mean_or_nan(window.lengths),
        "rollout/success_rate": mean_or_nan(window.success),
        "time/fps": session.env_steps / session.elapsed,
        "train/learning_rate": optimizer.param_groups[0]["lr"],
    }
    for term, values in reward_terms.items():
        metrics[f"rewards/{term}"] = mean_or_nan(values)
    session.log({**metrics, **train_metrics})


def _gae(config: PPOConfig, rollout: StepRollout) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the (T, N) rollout: bootstrap from V(final obs) at truncations, never at terminations."""
    values = torch.as_tensor(rollout.values)
    next_values = torch.cat([values[1:], torch.as_tensor(rollout.next_value)[None]], dim=0)
    truncated = torch.as_tensor(rollout.truncated & ~rollout.terminated)
    # after an episode ended, values[t+1] belongs to the next episode: replace it by V(final observation)
    next_values = torch.where(truncated, torch.as_tensor(rollout.final_values), next_values)
    return F.gae(
        torch.as_tensor(rollout.rewards),
        values,
        next_values,
        torch.as_tensor(rollout.terminated),
        torch.as_tensor(rollout.truncated),
        config.gamma,
        config.gae_lambda,
    )


def _update(
    config: PPOConfig,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    rollout: StepRollout,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    observation_space: Any,
    device: torch.device,
) -> dict[str, float]:
    num_steps, num_envs = rollout.rewards.shape
    batch = num_steps * num_envs
    # flatten (T, N) -> B
    b_steps, b_envs = np.divmod(np.arange(batch), num_envs)
    b_old_log_probs = torch.as_tensor(rollout.log_probs.reshape(batch), device=device)
    b_values = torch.as_tensor(rollout.values.reshape(batch), device=device)
    b_advantages = advantages.reshape(batch).to(device)
    b_returns = returns.reshape(batch).to(device)
    totals: dict[str, list[float]] = {}
    stop = False
    for _ in range(config.update_epochs):
        order = torch.randperm(batch)
        for mb_indices in torch.tensor_split(order, config.num_minibatches):
            mb = mb_indices.numpy()
            mb_observations = obs_to_tensor(
                index_observations(rollout.observations, (b_steps[mb], b_envs[mb])), observation_space, device
            )
            mb_actions = torch.as_tensor(rollout.actions[b_steps[mb], b_envs[mb]], device=device)
            evaluation = policy.evaluate_actions(mb_observations, mb_actions)
            stop = _minibatch_step(
                config,
                policy,
                optimizer,
                evaluation,
                evaluation["log_prob"],
                b_old_log_probs[mb_indices],
                b_advantages[mb_indices],
                evaluation["value"],
                b_values[mb_indices],
                b_returns[mb_indices],
                evaluation["entropy"],
                totals,
            )
            if stop:
                break
        if stop:
            break
    metrics = {key: float(np.mean(values)) for key, values in totals.items()}
    metrics["train/explained_variance"] = F.explained_variance(b_values.cpu(), b_returns.cpu())
    if hasattr(policy, "log_std"):
        metrics["train/std"] = float(policy.log_std.detach().exp().mean())
    return metrics


def _minibatch_step(
    config: PPOConfig,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    evaluation: dict[str, torch.Tensor],
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    value: torch.Tensor,
    old_value: torch.Tensor,
    returns: torch.Tensor,
    entropy: torch.Tensor,
    totals: dict[str, list[float]],
) -> bool:
    """One PPO gradient step on a minibatch given as flat (B,) tensors of its valid steps, shared by the step and the
    whole-episode paths; appends its train/* (and moe/*) values to ``totals``. Returns True when ``target_kl`` asks
    to stop the update early."""
    if config.norm_adv and len(advantages) > 1:
        advantages = F.normalize(advantages)
    per_step, clip_metrics = F.clipped_surrogate(log_prob, old_log_prob, advantages, config.clip_coef)
    policy_loss = per_step.mean()
    value_loss = F.value_loss(value, old_value, returns, config.clip_coef if config.clip_vloss else None).mean()
    mean_entropy = entropy.mean()
    aux_loss = evaluation.get("aux_loss", torch.zeros((), device=log_prob.device))
    loss = policy_loss - config.ent_coef * mean_entropy + config.vf_coef * value_loss + config.aux_loss_coef * aux_loss
    if not torch.isfinite(loss):
        raise FloatingPointError("PPO loss became non-finite; lower learning_rate or check the env's rewards")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
    optimizer.step()
    approx_kl = clip_metrics["approx_kl"].mean().item()
    record = {
        "train/policy_gradient_loss": policy_loss.item(),
        "train/value_loss": value_loss.item(),
        "train/entropy_loss": -mean_entropy.item(),
        "train/approx_kl": approx_kl,
        "train/clip_fraction": clip_metrics["clipped"].float().mean().item(),
        "train/loss": loss.item(),
    }
    if "expert_load" in evaluation:
        record["moe/aux_loss"] = float(aux_loss)
        for index, load in enumerate(evaluation["expert_load"].detach().cpu().tolist()):
            record[f"moe/expert_load_{index}"] = load
    for key, item in record.items():
        totals.setdefault(key, []).append(item)
    return config.target_kl is not None and approx_kl > 1.5 * config.target_kl


# --- whole episodes (sequence policies) --------------------------------------------------------------------------


def is_episodic(policy: Any) -> bool:
    """Whether PPO trains ``policy`` on whole episodes: sequence policies that score an episode in one forward."""
    return hasattr(policy, "evaluate_episodes")


class _TerminationRecorder(gym.vector.VectorWrapper):
    """Keeps each step's ``terminated`` flags of a vector env: :func:`collect_groups` keeps only which steps
    happened, and PPO must tell a termination (no future) from a cut by a length limit (bootstrapped)."""

    def __init__(self, env: gym.vector.VectorEnv) -> None:
        super().__init__(env)
        self.terminated: list[np.ndarray] = []

    def reset(self, *, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        self.terminated = []
        return self.env.reset(seed=seed, options=options)

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(actions)
        self.terminated.append(np.array(terminated, dtype=bool))
        return observation, reward, terminated, truncated, info

    def last_step_terminated(self, lengths: np.ndarray) -> np.ndarray:
        """``(N,)`` whether each episode of the last rollout (``lengths`` steps) ended by termination; False for
        one truncated by the env or still running at the collector's cap."""
        if not self.terminated:
            return np.zeros(len(lengths), dtype=bool)
        flags = np.stack(self.terminated)  # (T, N)
        return flags[np.maximum(lengths, 1) - 1, np.arange(len(lengths))] & (lengths > 0)


@dataclass
class EpisodeBatch:
    """A PPO rollout of whole episodes, ``N`` episodes of up to ``T`` steps, tensors on the training device.

    Attributes:
        rollout: the collected episodes (observations ``(T, N, L)``, actions ``(T, N)``, ...).
        first_observations: ``(N, L)`` each episode's first observation (the prompt).
        actions: ``(N, T)`` long; mask: ``(N, T)`` True at steps that happened.
        log_probs: ``(N, T)`` behaviour log-probabilities (from the rollout).
        values: ``(N, T)`` ``V(s_t)``; final_values: ``(N,)`` V of the observation after the last step.
        terminated: ``(N,)`` the episode ended by termination (else it was cut and is bootstrapped).
    """

    rollout: GroupedRollout
    first_observations: torch.Tensor
    actions: torch.Tensor
    mask: torch.Tensor
    log_probs: torch.Tensor
    values: torch.Tensor
    final_values: torch.Tensor
    terminated: torch.Tensor

    @property
    def num_episodes(self) -> int:
        return int(self.mask.shape[0])


def _train_episodes(
    config: PPOConfig, session: TrainingSession, policy: Any, optimizer: torch.optim.Optimizer, spec: Any
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The PPO loop for sequence policies (see the module docstring, item 4); logs, checkpoints and summary are
    the step path's."""
    device = session.device
    env = _TerminationRecorder(
        make_vector_env(config.env_id, config.num_envs, AutoresetMode.DISABLED, config.env_kwargs)
    )
    max_steps = episode_step_limit(config.env_id, config.env_kwargs)
    hyperparameters = config.to_dict()
    session.start(policy, hyperparameters)
    window = _EpisodeWindow()

    try:
        while not session.done:
            session.schedule_learning_rate(optimizer, config.learning_rate, config.lr_schedule)
            # --- rollout ---
            batch = _collect_episodes(config, session, env, policy, max_steps, device)
            rollout = batch.rollout

            # --- advantages ---
            advantages, returns = _episode_gae(
                config,
                torch.as_tensor(rollout.rewards, device=device),
                batch.values,
                batch.final_values,
                batch.mask,
                batch.terminated,
            )

            # --- update epochs ---
            train_metrics = _update_episodes(config, policy, optimizer, batch, advantages, returns, device)

            # --- log ---
            window.add(rollout.returns.tolist(), rollout.lengths.tolist(), rollout.success.tolist())
            terms = {term: values.tolist() for term, values in rollout.reward_terms.items()}
            _log_iteration(session, optimizer, window, rollout.env_steps, terms, train_metrics)
            session.maybe_evaluate(policy)

            # --- checkpoint ---
            session.maybe_checkpoint(policy, optimizer, {}, spec)
        summary = session.finish(policy, optimizer, spec, hyperparameters)
    finally:
        env.close()
    return policy, summary


def _collect_episodes(
    config: PPOConfig,
    session: TrainingSession,
    env: _TerminationRecorder,
    policy: Any,
    max_steps: int,
    device: torch.device,
) -> EpisodeBatch:
    """Whole episodes, ``num_envs`` at a time (each from its own start seed, decoded with the policy's KV cache),
    until they hold ``batch_size`` env steps; then every step's value from one no-grad forward per episode."""
    parts: list[GroupedRollout] = []
    terminated: list[np.ndarray] = []
    steps = 0
    while steps < config.batch_size:
        seeds = session.numpy_rng.integers(0, TRAIN_SEED_BOUND, size=config.num_envs)
        part = collect_groups(env, policy, seeds, 1, max_steps, device)
        parts.append(part)
        terminated.append(env.last_step_terminated(part.lengths))
        steps += part.env_steps
    rollout = concatenate_groups(parts)
    first = obs_to_tensor(
        index_observations(rollout.observations, 0), env.single_observation_space, device, check_codes=False
    )
    actions = torch.as_tensor(rollout.actions.T, device=device).long()
    mask = torch.as_tensor(rollout.mask, device=device)
    with torch.no_grad():
        evaluation = policy.evaluate_episodes(first, actions, mask, with_values=True)
    return EpisodeBatch(
        rollout=rollout,
        first_observations=first,
        actions=actions,
        mask=mask,
        log_probs=torch.as_tensor(rollout.log_probs, device=device),
        values=evaluation["value"],
        final_values=evaluation["final_value"],
        terminated=torch.as_tensor(np.concatenate(terminated), device=device),
    )


def _episode_gae(
    config: PPOConfig,
    rewards: torch.Tensor,
    values: torch.Tensor,
    final_values: torch.Tensor,
    mask: torch.Tensor,
    terminated: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE along each of ``N`` episodes ``(N, T)``, with the step path's semantics: an episode's last step has no
    future if it terminated, and is bootstrapped from ``V(final observation)`` if it was cut (truncated by the env,
    or still running at the collector's cap). Advantages and returns are 0 at masked steps.

    Args:
        rewards, values: ``(N, T)`` (ignored at masked steps); final_values: ``(N,)`` V of the observation after
            each episode's last step; mask: ``(N, T)`` bool, a prefix per row; terminated: ``(N,)`` bool.
    """
    num_episodes = mask.shape[0]
    last = (mask.sum(dim=1) - 1).clamp(min=0)  # (N,) index of each episode's last step
    episodes = torch.arange(num_episodes, device=mask.device)
    ending = torch.zeros_like(mask)
    ending[episodes, last] = True
    # time-major for F.gae; a masked step counts as terminated, so nothing flows into or out of it
    next_values = torch.cat([values[:, 1:], values.new_zeros((num_episodes, 1))], dim=1)
    next_values[episodes, last] = torch.where(terminated, 0.0, final_values).to(values.dtype)
    ended_by_termination = (ending & terminated[:, None]) | ~mask
    truncated = ending & ~terminated[:, None]
    advantages, returns = F.gae(
        torch.where(mask, rewards, 0.0).float().T,
        torch.where(mask, values, 0.0).float().T,
        next_values.float().T,
        ended_by_termination.T,
        truncated.T,
        config.gamma,
        config.gae_lambda,
    )
    advantages, returns = advantages.T, returns.T
    return torch.where(mask, advantages, 0.0), torch.where(mask, returns, 0.0)


def _update_episodes(
    config: PPOConfig,
    policy: Any,
    optimizer: torch.optim.Optimizer,
    batch: EpisodeBatch,
    advantages: torch.Tensor,
    returns: torch.Tensor,
    device: torch.device,
) -> dict[str, float]:
    """The step path's epochs (same losses, normalisation, clipping, early stop), over minibatches of whole episodes:
    one forward per minibatch gives every step's log-probability, entropy and value; losses average over its steps."""
    totals: dict[str, list[float]] = {}
    stop = False
    for _ in range(config.update_epochs):
        order = torch.randperm(batch.num_episodes)
        for members in torch.tensor_split(order, config.num_minibatches):
            if len(members) == 0:
                continue
            members = members.to(device)
            mb_mask = batch.mask[members]
            width = int(mb_mask.sum(dim=1).max())  # the minibatch's longest episode
            mb_mask = mb_mask[:, :width]
            evaluation = policy.evaluate_episodes(
                batch.first_observations[members], batch.actions[members, :width], mb_mask, with_values=True
            )
            stop = _minibatch_step(
                config,
                policy,
                optimizer,
                evaluation,
                evaluation["log_prob"][mb_mask],
                batch.log_probs[members, :width][mb_mask],
                advantages[members, :width][mb_mask],
                evaluation["value"][mb_mask],
                batch.values[members, :width][mb_mask],
                returns[members, :width][mb_mask],
                evaluation["entropy"][mb_mask],
                totals,
            )
            if stop:
                break
        if stop:
            break
    metrics = {key: float(np.mean(values)) for key, values in totals.items()}
    metrics["train/explained_variance"] = F.explained_variance(
        batch.values[batch.mask].cpu(), returns[batch.mask].cpu()
    )
    return metrics

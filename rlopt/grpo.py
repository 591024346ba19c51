"""Critic-free Group Relative Policy Optimization (GRPO) for any Gymnasium environment.

Reference: Shao et al., "DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models",
arXiv:2402.03300 (section 4.1, Algorithm 1), with the variants of DAPO (Yu et al., arXiv:2503.14476) and
Dr. GRPO (Liu et al., arXiv:2503.20783).

Where this departs from the paper:
1. A "prompt" is an environment start state: ``P`` seeds per iteration, each reset ``G`` times (same seed, same
   start), every member run to the end of its episode. Language-model prompts are the math env's special case.
2. Outcome advantages use the undiscounted episode return; ``scale_rewards`` chooses the group std (paper),
   the batch std, or none (Dr. GRPO).
3. The reference policy for the KL term is refreshed every ``ref_reset_every`` iterations (the paper's
   iterative GRPO resets it per outer iteration); ``kl_coef`` defaults to 0 as in DAPO and Dr. GRPO.
4. Losses are aggregated per ``loss_type``: "grpo" (per-episode mean, then mean over episodes, as the paper),
   "dapo" (mean over every step of the batch) or "dr_grpo" (sum divided by a constant: batch size times the
   episode step limit).
5. Dynamic sampling (DAPO) filters groups whose raw success signal is all equal (or whose returns are, for envs
   without a success signal) and refills with new seeds, at most ``max_resample`` extra rollouts per iteration.
6. An optional difficulty curriculum (not in the paper; :mod:`rlopt.curriculum`) moves the env's ``level`` by the
   success rate of recent training episodes, all sampled ones (before dynamic sampling filters them), so that
   groups keep a mix of successes and failures and carry gradient.
7. Process advantages on the math env, whose reward is paid on the last token, read one reward per reasoning step
   from the finished completion (:mod:`rlopt.process_rewards`): the paper's process reward model is replaced by
   the env's exact step checker.
"""

from __future__ import annotations

import copy
import sys
import warnings
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode

from agents import obs_to_tensor
from rlopt import functional as F
from rlopt.config import ConfigError, PolicyOptions, RunConfig, check_choice, check_range, option
from rlopt.curriculum import Curriculum, curriculum_env_kwargs
from rlopt.logger import mean_or_nan
from rlopt.process_rewards import math_process_weight, math_step_rewards
from rlopt.rollout import (
    GroupedRollout,
    collect_groups,
    concatenate_groups,
    distinct_observations,
    index_observations,
)
from rlopt.session import TrainingSession, build_policy, make_adam, use_precision
from rlopt.vector import episode_step_limit, make_vector_env

#: Start seeds for training are drawn below this bound (evaluation seeds lie above it).
TRAIN_SEED_BOUND = 2**30


@dataclass
class GRPOConfig(PolicyOptions, RunConfig):
    """Every GRPO hyperparameter; each becomes a ``rlopt train --algo grpo`` option."""

    group_size: int = option(8, "G: rollouts per start state; advantages are relative within each group.")
    num_prompts: int = option(16, "P: start states (seeds) per iteration; the batch is P x G episodes.")
    learning_rate: float = option(3e-4, "Adam learning rate.")
    lr_schedule: str = option("constant", "Learning-rate schedule over the run.", ("constant", "linear"))
    update_epochs: int = option(4, "Passes over each batch of rollouts.")
    num_minibatches: int = option(4, "Minibatches per epoch (split by episode).")
    max_grad_norm: float = option(0.5, "Gradient-norm clipping threshold.")
    clip_coef: float = option(0.2, "Surrogate clipping epsilon (lower side, and upper side unless clip_coef_high).")
    clip_coef_high: float | None = option(None, "Upper clip epsilon (DAPO clip-higher, e.g. 0.28); None = clip_coef.")
    kl_coef: float = option(0.0, "Weight of the KL penalty to the reference policy (0 disables it).")
    kl_estimator: str = option("k3", "KL estimator: k3 (unbiased, non-negative) or k1 (log ratio).", ("k1", "k3"))
    ref_reset_every: int = option(0, "Reset the reference policy to the current one every K iterations (0 = never).")
    ent_coef: float = option(0.0, "Entropy bonus coefficient.")
    loss_type: str = option(
        "grpo",
        "Loss aggregation: grpo, dapo (token mean) or dr_grpo (constant normaliser).",
        ("grpo", "dapo", "dr_grpo"),
    )
    scale_rewards: str = option(
        "group", "Divide advantages by the group std, the batch std, or not at all.", ("group", "batch", "none")
    )
    advantage_eps: float = option(1e-6, "Epsilon added to the std when scaling advantages.")
    advantage: str = option(
        "outcome",
        "outcome: episode return per group; process: one reward per reasoning step, normalised over the group "
        "(DeepSeekMath; on the math env each sound step's share of the process reward, so it needs reward=cot); "
        "step: each step's reward-to-go against the group's mean reward-to-go at that step (for dense rewards).",
        ("outcome", "process", "step"),
    )
    dynamic_sampling: bool = option(False, "DAPO dynamic sampling: drop groups with no reward variation and refill.")
    skip_zero_advantage: bool = option(
        False,
        "Leave episodes whose advantages are all 0 (groups with no reward variation) out of the update's forward and "
        "backward, for the same gradient at a fraction of the cost when many groups are dead: their loss terms are 0 "
        "and the loss keeps the whole minibatch's normaliser. Needs ent_coef=0, kl_coef=0 and num_experts=0 (terms "
        "every episode feeds). train/* metrics then cover the episodes that were kept.",
    )
    max_resample: int = option(4, "Dynamic sampling: at most this many extra rollouts per iteration to refill.")
    max_episode_steps: int = option(0, "Cap on episode length in a rollout; 0 = the env's registered time limit.")
    curriculum: bool = option(
        False,
        "Difficulty curriculum for envs that take level= (rlopt/MathReasoning-*): start at env_kwargs level "
        "(default 1), go up a level when the success rate of the last curriculum_window training episodes reaches "
        "curriculum_promote_at, down when it falls to curriculum_demote_at. max_length is fixed for every level (the "
        "longest level's default unless env_kwargs sets it) so the policy sees one observation length. Evaluation "
        "stays at the start level, a fixed yardstick (logged as eval/level).",
    )
    curriculum_window: int = option(256, "Curriculum: training episodes at the current level that a decision uses.")
    curriculum_promote_at: float = option(0.7, "Curriculum: window success rate at which the level rises.")
    curriculum_demote_at: float = option(0.1, "Curriculum: window success rate at which the level falls.")
    curriculum_min_level: int = option(1, "Curriculum: the lowest level it may fall to.")
    curriculum_max_level: int = option(6, "Curriculum: the highest level it may rise to (the math env has 1-6).")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("group_size", self.group_size, 1)
        check_range("num_prompts", self.num_prompts, 1)
        if self.group_size < 2 and self.scale_rewards == "group":
            raise ConfigError(
                "group_size=1 cannot be normalised within its group (the std of one sample is undefined); "
                "use group_size >= 2, or scale_rewards='batch' or 'none'"
            )
        if self.group_size < 2 and self.advantage in ("outcome", "step"):
            raise ConfigError("group_size=1 gives every episode zero group-relative advantage; use group_size >= 2")
        if self.dynamic_sampling and self.max_resample < 1:
            raise ConfigError("dynamic_sampling needs max_resample >= 1 (extra rollouts to refill dropped groups)")
        if self.skip_zero_advantage and (self.ent_coef > 0 or self.kl_coef > 0 or self.num_experts > 0):
            raise ConfigError(
                "skip_zero_advantage leaves zero-advantage episodes out, which keeps the gradient only when no other "
                f"term reads them: set ent_coef=0, kl_coef=0 and num_experts=0 (got {self.ent_coef}, {self.kl_coef}, "
                f"{self.num_experts}), or turn skip_zero_advantage off"
            )
        check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_choice("lr_schedule", self.lr_schedule, ("constant", "linear"))
        check_range("update_epochs", self.update_epochs, 1)
        check_range("num_minibatches", self.num_minibatches, 1)
        if self.num_minibatches > self.num_prompts * self.group_size:
            raise ConfigError(
                f"num_minibatches={self.num_minibatches} exceeds the {self.num_prompts * self.group_size} episodes "
                "per iteration; lower num_minibatches or raise num_prompts"
            )
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        check_range("clip_coef", self.clip_coef, 0.0, 1.0, low_open=True, high_open=True)
        if self.clip_coef_high is not None:
            check_range("clip_coef_high", self.clip_coef_high, 0.0, low_open=True)
        check_range("kl_coef", self.kl_coef, 0.0)
        check_choice("kl_estimator", self.kl_estimator, ("k1", "k3"))
        check_range("ref_reset_every", self.ref_reset_every, 0)
        check_range("ent_coef", self.ent_coef, 0.0)
        check_choice("loss_type", self.loss_type, ("grpo", "dapo", "dr_grpo"))
        check_choice("scale_rewards", self.scale_rewards, ("group", "batch", "none"))
        check_range("advantage_eps", self.advantage_eps, 0.0)
        check_choice("advantage", self.advantage, ("outcome", "process", "step"))
        check_range("max_episode_steps", self.max_episode_steps, 0)
        self._check_process_advantage()
        self._check_curriculum()

    def _check_process_advantage(self) -> None:
        """Process advantages normalise by the group's std of step rewards (the paper's only choice), and on the
        math env they need the process reward (:mod:`rlopt.process_rewards`)."""
        if self.advantage != "process":
            return
        if self.scale_rewards != "group":
            raise ConfigError(
                f"scale_rewards={self.scale_rewards!r} does not apply to advantage='process', which always divides "
                "by the group's std of step rewards (DeepSeekMath); use advantage='step' for per-step advantages "
                "with batch or no scaling"
            )
        if _is_math(self.env_id):
            from rlopt.process_rewards import math_process_weight

            try:
                weight = math_process_weight(self.env_kwargs)
            except (ValueError, TypeError):
                return  # a bad reward or weights kwarg: the env says what is wrong when it is built
            if weight <= 0:
                raise ConfigError(
                    "advantage='process' on the math env needs a process reward to give each reasoning step its "
                    'own reward: add --env-kwargs \'{"reward": "cot"}\' (or a weights entry for process), or use '
                    "advantage='outcome'"
                )

    def _check_curriculum(self) -> None:
        """Validate the curriculum options and, when it is on, fix ``level`` and ``max_length`` in ``env_kwargs``
        (a derived value, so ``config.json`` and checkpoints rebuild the same observation space)."""
        check_range("curriculum_window", self.curriculum_window, 1)
        check_range("curriculum_promote_at", self.curriculum_promote_at, 0.0, 1.0)
        check_range("curriculum_demote_at", self.curriculum_demote_at, 0.0, 1.0)
        if self.curriculum_demote_at >= self.curriculum_promote_at:
            raise ConfigError(
                f"curriculum_demote_at={self.curriculum_demote_at} must be below curriculum_promote_at="
                f"{self.curriculum_promote_at} (the level falls at the first and rises at the second)"
            )
        if not self.curriculum:
            changed = [
                f"{item.name}={getattr(self, item.name)!r}"
                for item in fields(self)
                if item.name.startswith("curriculum_") and getattr(self, item.name) != item.default
            ]
            if changed:
                raise ConfigError(f"{', '.join(changed)} set the curriculum, which is off: add --curriculum")
            return
        self.env_kwargs, observation_size = curriculum_env_kwargs(
            self.env_id, self.env_kwargs, self.curriculum_min_level, self.curriculum_max_level
        )
        if self.architecture == "transformer" and not self.init and 0 < self.context_length < observation_size:
            raise ConfigError(
                f"context_length={self.context_length} cannot hold the curriculum's observations of "
                f"{observation_size} tokens (max_length is fixed for levels {self.curriculum_min_level}-"
                f"{self.curriculum_max_level}); set context_length >= {observation_size} or 0, or lower "
                "curriculum_max_level"
            )

    @property
    def batch_episodes(self) -> int:
        """Episodes per iteration: P x G."""
        return self.num_prompts * self.group_size


def train(config: GRPOConfig, resume: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Train a critic-free policy with GRPO. Returns ``(policy, summary)``; see :class:`GRPOConfig`."""
    return TrainingSession(config, "grpo", resume=resume).run(_train, config)


def _train(config: GRPOConfig, session: TrainingSession) -> tuple[torch.nn.Module, dict[str, Any]]:
    # --- setup ---
    device = session.device
    env = make_vector_env(config.env_id, config.batch_episodes, AutoresetMode.DISABLED, config.env_kwargs)
    max_steps = config.max_episode_steps or episode_step_limit(config.env_id, config.env_kwargs)
    budget_note = budget_warning(config, max_steps)
    if budget_note is not None:  # said at the start rather than left to the final step count
        warnings.warn(budget_note, stacklevel=1)
    policy, spec = _build_policy(config, env)
    policy = use_precision(policy.to(device), config.precision)
    optimizer = make_adam(policy.parameters(), config.learning_rate)
    restored = session.restore(policy, optimizer) if session.resume else {}
    curriculum = _make_curriculum(config, restored)
    if curriculum is not None and curriculum.level != config.env_kwargs["level"]:
        env = _level_env(config, env, curriculum.level)  # resumed at the level the run had reached
    reference = copy.deepcopy(policy).requires_grad_(False) if config.kl_coef > 0 else None
    hyperparameters = config.to_dict()
    session.start(policy, hyperparameters)

    try:
        while not session.done:
            # --- rollout ---
            session.schedule_learning_rate(optimizer, config.learning_rate, config.lr_schedule)
            rollout, sampled_steps, dropped, sampled_success = _grouped_rollout(
                config, session, env, policy, max_steps, device
            )

            # --- advantages ---
            advantages, advantage_metrics = _advantages(config, rollout)

            # --- update epochs ---
            if reference is not None and config.ref_reset_every and session.iteration % config.ref_reset_every == 0:
                reference.load_state_dict(policy.state_dict())
            train_metrics = _update(
                config,
                policy,
                reference,
                optimizer,
                rollout,
                advantages,
                max_steps,
                env.single_observation_space,
                device,
            )

            # --- curriculum ---
            curriculum_metrics: dict[str, float] = {}
            if curriculum is not None:
                played = curriculum.level
                if curriculum.record(sampled_success) != played:
                    env = _level_env(config, env, curriculum.level)
                    _announce(
                        session,
                        f"curriculum: level {played} -> {curriculum.level} at {session.env_steps + sampled_steps} "
                        f"env steps (success rate {curriculum.last_accuracy:.2f} over the last "
                        f"{config.curriculum_window} episodes)",
                    )
                curriculum_metrics = curriculum.metrics()

            # --- log ---
            postfix = {"ret": float(rollout.returns.mean())}
            if curriculum is not None:
                postfix["level"] = curriculum.level
            session.advance(sampled_steps, postfix)
            session.log(_rollout_metrics(rollout, session.elapsed, session.env_steps))
            session.log(
                {
                    **advantage_metrics,
                    **train_metrics,
                    **curriculum_metrics,
                    "train/dropped_groups": dropped,
                    "train/learning_rate": optimizer.param_groups[0]["lr"],
                }
            )
            if session.maybe_evaluate(policy) is not None:
                _log_eval_level(config, session)

            # --- checkpoint ---
            session.maybe_checkpoint(policy, optimizer, _extra_state(curriculum), spec)
        _log_eval_level(config, session)  # for the final evaluation that finish() runs at this step
        summary = session.finish(policy, optimizer, spec, hyperparameters, _extra_state(curriculum))
    finally:
        env.close()
    return policy, summary


#: the start of :func:`budget_warning`'s text (rlopt compare's workers leave it to the comparison, which says it once)
BUDGET_WARNING = "one GRPO batch is"


def budget_warning(config: GRPOConfig, max_steps: int) -> str | None:
    """GRPO trains on whole batches of P x G episodes, so a budget smaller than one batch can take is passed, by
    far where episodes run to their limit (Pendulum-v1: 128 episodes of 200 steps are 25,600 env steps, for any
    total_steps up to that). The warning for that, or None."""
    most = config.batch_episodes * max_steps
    if most <= config.total_steps:
        return None
    return (
        f"{BUDGET_WARNING} {config.num_prompts} x {config.group_size} whole episodes of up to {max_steps} steps, up to "
        f"{most:,} env steps, more than total_steps={config.total_steps:,}: the run trains whole batches, so it can "
        "end well past its budget; raise total_steps or lower num_prompts"
    )


def _grouped_rollout(
    config: GRPOConfig, session: TrainingSession, env: Any, policy: Any, max_steps: int, device: torch.device
) -> tuple[GroupedRollout, int, int, np.ndarray]:
    """One batch of P groups; with dynamic sampling, groups without signal are replaced by fresh ones.

    Returns:
        ``(rollout, env steps sampled, groups dropped, success of every sampled episode)``. The last covers the
        dropped groups too: the curriculum must judge the level on all of them, since dynamic sampling keeps
        exactly the groups that are neither all solved nor all failed.
    """
    sampled_success: list[np.ndarray] = []

    def sample() -> GroupedRollout:
        seeds = session.numpy_rng.integers(0, TRAIN_SEED_BOUND, size=config.num_prompts)
        collected = collect_groups(env, policy, seeds, config.group_size, max_steps, device)
        sampled_success.append(collected.success)
        return collected

    rollout = sample()
    steps = rollout.env_steps
    if not config.dynamic_sampling:
        return rollout, steps, 0, rollout.success
    kept: list[GroupedRollout] = []
    kept_groups = dropped = 0
    for attempt in range(config.max_resample + 1):
        if attempt:
            rollout = sample()
            steps += rollout.env_steps
        keep = F.dynamic_sampling_mask(torch.as_tensor(_filter_signal(rollout))).numpy()
        dropped += int((~keep).sum())
        if keep.any():
            kept.append(rollout.select_groups(keep))
            kept_groups += int(keep.sum())
        if kept_groups >= config.num_prompts:
            break
    all_success = np.concatenate(sampled_success)
    if not kept:  # nothing had signal: train on the last batch (its advantages are all zero, so it is a no-op)
        return rollout, steps, dropped, all_success
    joined = concatenate_groups(kept)
    if joined.num_groups > config.num_prompts:
        joined = joined.select_groups(np.arange(joined.num_groups) < config.num_prompts)
    return joined, steps, dropped, all_success


# --- curriculum helpers ---


def _build_policy(config: GRPOConfig, env: Any) -> tuple[Any, Any]:
    """The policy for ``env``'s spaces; with a curriculum, a policy (or ``--init`` checkpoint) that cannot take the
    fixed-length observations fails here with what to change, not deep in a weight copy."""
    try:
        return build_policy(config, env.single_observation_space, env.single_action_space, value_head=False)
    except (RuntimeError, ValueError) as error:
        if not config.curriculum:
            raise
        length = config.env_kwargs.get("max_length")
        raise ConfigError(
            f"the policy cannot take the curriculum's observations {env.single_observation_space.shape} (max_length="
            f"{length} for levels {config.curriculum_min_level}-{config.curriculum_max_level}): "
            f"{str(error).rstrip('.')}. With --init, "
            f"train that checkpoint with context_length >= {length} (e.g. rlopt sft --context-length {length}); "
            "otherwise raise context_length, or lower curriculum_max_level"
        ) from error


def _make_curriculum(config: GRPOConfig, restored: dict[str, Any]) -> Curriculum | None:
    """The run's curriculum (None when off): from the checkpoint's extra state when resuming, else fresh."""
    if not config.curriculum:
        return None
    if "curriculum" in restored:
        return Curriculum.from_state_dict(restored["curriculum"])
    return Curriculum(
        level=int(config.env_kwargs["level"]),
        min_level=config.curriculum_min_level,
        max_level=config.curriculum_max_level,
        window=config.curriculum_window,
        promote_at=config.curriculum_promote_at,
        demote_at=config.curriculum_demote_at,
    )


def _level_env(config: GRPOConfig, env: Any, level: int) -> Any:
    """A fresh training env at ``level`` in place of ``env`` (closed); max_length is fixed, so spaces match."""
    rebuilt = make_vector_env(
        config.env_id, config.batch_episodes, AutoresetMode.DISABLED, {**config.env_kwargs, "level": level}
    )
    if rebuilt.single_observation_space != env.single_observation_space:
        rebuilt.close()
        raise RuntimeError(
            f"level {level} of {config.env_id} gives observations {rebuilt.single_observation_space}, not "
            f"{env.single_observation_space}; the curriculum needs env_kwargs max_length fixed across levels"
        )
    env.close()
    return rebuilt


def _announce(session: TrainingSession, message: str) -> None:
    """A line above the progress bar (silent without one, as in `rlopt compare`'s parallel runs)."""
    if session.progress is not None:
        session.progress.write(message, file=sys.stderr)


def _log_eval_level(config: GRPOConfig, session: TrainingSession) -> None:
    """With a curriculum, evaluation runs at the start level (a fixed yardstick); log which one it was."""
    if config.curriculum:
        session.log({"eval/level": config.env_kwargs["level"]})


def _extra_state(curriculum: Curriculum | None) -> dict[str, Any]:
    """The JSON state a checkpoint carries besides weights: the curriculum's level, window and changes."""
    return {} if curriculum is None else {"curriculum": curriculum.state_dict()}


def _filter_signal(rollout: GroupedRollout) -> np.ndarray:
    """(P, G) raw signal for dynamic sampling: success where the env reports it (DAPO filters on accuracy, not on
    shaped reward), else the episode return."""
    success = rollout.success.reshape(rollout.num_groups, rollout.group_size)
    if np.isfinite(success).all():
        return success
    return rollout.returns.reshape(rollout.num_groups, rollout.group_size)


def _is_math(env_id: str) -> bool:
    return env_id.rpartition(":")[2].startswith("rlopt/MathReasoning")


def _first_observations(rollout: GroupedRollout) -> np.ndarray:
    """``(N, ...)`` each episode's first observation (the math env's prompt)."""
    return np.asarray(rollout.observations[0])


def _advantages(config: GRPOConfig, rollout: GroupedRollout) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-step advantages ``(N, L)`` (0 where masked) and metrics."""
    num_groups, group_size = rollout.num_groups, rollout.group_size
    mask = torch.as_tensor(rollout.mask)
    returns = torch.as_tensor(rollout.returns, dtype=torch.float32).reshape(num_groups, group_size)
    episode_advantages, metrics = F.group_advantages(returns, config.scale_rewards, config.advantage_eps)
    extra: dict[str, float] = {}
    if config.advantage == "outcome":
        per_step = F.broadcast_group(episode_advantages, mask)
    else:
        step_rewards = torch.as_tensor(rollout.rewards, dtype=torch.float32).reshape(num_groups, group_size, -1)
        group_mask = mask.reshape(num_groups, group_size, -1)
        if config.advantage == "process" and _is_math(config.env_id):
            # one reward per reasoning step, not per token: the env pays the episode's reward on its last token
            rewards, events = math_step_rewards(
                _first_observations(rollout),
                rollout.actions,
                rollout.lengths,
                rollout.rewards,
                rollout.reward_terms["process"],
                math_process_weight(config.env_kwargs),
            )
            shape = (num_groups, group_size, -1)
            grouped = F.process_advantages(
                torch.as_tensor(rewards, dtype=torch.float32).reshape(shape),
                group_mask,
                config.advantage_eps,
                reward_mask=torch.as_tensor(events).reshape(shape),
            )
        elif config.advantage == "process":
            grouped = F.process_advantages(step_rewards, group_mask, config.advantage_eps)
        else:
            grouped, step_metrics = F.step_advantages(
                step_rewards, group_mask, config.scale_rewards, config.advantage_eps
            )
            extra["train/frac_step_zero_std"] = step_metrics["frac_step_zero_std"]
        per_step = grouped.reshape(num_groups * group_size, -1)
    logged = {
        **extra,
        "train/reward_std": metrics["reward_std"],
        "train/frac_reward_zero_std": metrics["frac_reward_zero_std"],
        "train/reward_mean": metrics["reward_mean"],
    }
    return per_step, logged


def _update(
    config: GRPOConfig,
    policy: Any,
    reference: Any,
    optimizer: torch.optim.Optimizer,
    rollout: GroupedRollout,
    advantages: torch.Tensor,
    max_steps: int,
    observation_space: Any,
    device: torch.device,
) -> dict[str, float]:
    """Clipped-surrogate epochs over minibatches of episodes; returns the mean of each train/* metric."""
    num_episodes, length = rollout.mask.shape
    mask = torch.as_tensor(rollout.mask, device=device)
    old_log_probs = torch.as_tensor(rollout.log_probs, device=device)
    advantages = advantages.to(device)
    totals: dict[str, list[float]] = {}
    generator = torch.Generator().manual_seed(int(rollout.seeds[0]) if len(rollout.seeds) else 0)
    shared = _shared_rows(policy, reference, rollout, observation_space, device)
    for _ in range(config.update_epochs):
        order = torch.randperm(num_episodes, generator=generator)
        for members in torch.tensor_split(order, config.num_minibatches):
            if len(members) == 0:
                continue
            loss_scale = None
            if config.skip_zero_advantage:
                members, loss_scale, skipped = _live_members(members, mask, advantages, config.loss_type, max_steps)
                totals.setdefault("train/frac_zero_advantage_skipped", []).append(skipped)
                if loss_scale is None:
                    # the whole minibatch's gradient is exactly 0: step the optimizer on zeros, as the full update would
                    _zero_gradient_step(policy, optimizer)
                    continue
            mb_mask = mask[members]
            steps, episodes = torch.nonzero(mb_mask.T, as_tuple=True)  # valid (t, n) pairs of this minibatch
            if len(steps) == 0:
                continue
            members_np, steps_np, episodes_np = members.numpy(), steps.cpu().numpy(), episodes.cpu().numpy()

            def to_grid(
                values: torch.Tensor,
                members: torch.Tensor = members,
                episodes: torch.Tensor = episodes,
                steps: torch.Tensor = steps,
            ) -> torch.Tensor:
                grid = torch.zeros(len(members), length, device=device, dtype=values.dtype)
                grid[episodes, steps] = values
                return grid

            if hasattr(policy, "evaluate_episodes"):
                # sequence policies (the token transformer) score whole episodes in one masked forward, from the
                # first observation (the prompt) and the actions (the generated tokens)
                mb_first = obs_to_tensor(
                    index_observations(rollout.observations, (0, members_np)), observation_space, device
                )
                mb_sequences = torch.as_tensor(rollout.actions[:, members_np].T, device=device)
                evaluation = policy.evaluate_episodes(mb_first, mb_sequences, mb_mask)
                log_prob = torch.where(mb_mask, evaluation["log_prob"], 0.0)
                entropy = torch.where(mb_mask, evaluation["entropy"], 0.0)
                mb_observations, mb_actions = mb_first, mb_sequences
            else:
                mb_actions = torch.as_tensor(rollout.actions[steps_np, members_np[episodes_np]], device=device)
                if shared is not None:
                    # each distinct observation of the minibatch is scored once (see distinct_observations)
                    used, inverse = np.unique(shared.ids[steps_np, members_np[episodes_np]], return_inverse=True)
                    mb_observations = index_observations(shared.observations, torch.as_tensor(used, device=device))
                    rows = {"rows": torch.as_tensor(inverse.reshape(-1), device=device)}
                else:
                    mb_observations = obs_to_tensor(
                        index_observations(rollout.observations, (steps_np, members_np[episodes_np])),
                        observation_space,
                        device,
                    )
                    rows = {}
                evaluation = policy.evaluate_actions(mb_observations, mb_actions, **rows)
                log_prob = to_grid(evaluation["log_prob"])
                entropy = to_grid(evaluation["entropy"])
            per_step, clip_metrics = F.clipped_surrogate(
                log_prob, old_log_probs[members], advantages[members], config.clip_coef, config.clip_coef_high
            )
            loss_terms = per_step
            kl_value = torch.zeros((), device=device)
            if reference is not None:
                with torch.no_grad():
                    if hasattr(reference, "evaluate_episodes"):
                        ref_log_prob = reference.evaluate_episodes(mb_observations, mb_actions, mb_mask)["log_prob"]
                    else:
                        ref_log_prob = to_grid(
                            reference.evaluate_actions(mb_observations, mb_actions, **rows)["log_prob"]
                        )
                kl = F.kl_penalty(log_prob, ref_log_prob, config.kl_estimator)
                loss_terms = loss_terms + config.kl_coef * kl
                kl_value = F.masked_mean(kl.detach(), mb_mask)
            policy_loss = F.aggregate_loss(loss_terms, mb_mask, config.loss_type, max_length=max_steps)
            if loss_scale is not None:  # the whole minibatch's normaliser (see skip_zero_advantage)
                policy_loss = policy_loss * loss_scale
            entropy_mean = F.aggregate_loss(entropy, mb_mask, config.loss_type, max_length=max_steps)
            aux_loss = evaluation.get("aux_loss", torch.zeros((), device=device))
            loss = policy_loss - config.ent_coef * entropy_mean + config.aux_loss_coef * aux_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    "GRPO loss became non-finite; lower learning_rate, check the env's rewards for NaN, "
                    "or raise advantage_eps"
                )

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)

            optimizer.step()
            record = {
                "train/policy_gradient_loss": F.masked_mean(per_step.detach(), mb_mask).item(),
                "train/entropy_loss": -F.masked_mean(entropy.detach(), mb_mask).item(),
                "train/approx_kl": F.masked_mean(clip_metrics["approx_kl"], mb_mask).item(),
                "train/clip_fraction": F.masked_mean(clip_metrics["clipped"], mb_mask).item(),
                "train/clip_ratio_low": F.masked_mean(clip_metrics["clipped_low"], mb_mask).item(),
                "train/clip_ratio_high": F.masked_mean(clip_metrics["clipped_high"], mb_mask).item(),
                "train/kl_ref": kl_value.item(),
                "train/loss": loss.item(),
                "train/grad_norm": float(grad_norm),
            }
            if "expert_load" in evaluation:
                record["moe/aux_loss"] = float(aux_loss)
                for index, load in enumerate(evaluation["expert_load"].detach().cpu().tolist()):
                    record[f"moe/expert_load_{index}"] = load
            for key, value in record.items():
                totals.setdefault(key, []).append(value)
    return {key: float(np.mean(values)) for key, values in totals.items()}


def _live_members(
    members: torch.Tensor, mask: torch.Tensor, advantages: torch.Tensor, loss_type: str, max_steps: int
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """``(episodes of the minibatch with a nonzero advantage, loss scale, share left out)``; the scale is None when
    no episode is left. Scaling their loss by ``loss_normaliser(theirs) / loss_normaliser(minibatch)`` gives the
    whole minibatch's loss, whose left-out terms are all 0 (see ``skip_zero_advantage``)."""
    full_mask = mask[members]
    live = ((advantages[members] != 0) & full_mask).any(dim=1).cpu()
    skipped = 1.0 - float(live.float().mean())
    if not bool(live.any()):
        return members[live], None, skipped
    kept = members[live]
    scale = F.loss_normaliser(mask[kept], loss_type, max_steps) / F.loss_normaliser(full_mask, loss_type, max_steps)
    return kept, scale, skipped


def _zero_gradient_step(policy: Any, optimizer: torch.optim.Optimizer) -> None:
    """An optimizer step on an all-zero gradient: what a minibatch of zero-advantage episodes amounts to. Adam still
    moves the weights by its momentum, so skipping the step would change the run."""
    for parameter in policy.parameters():
        if parameter.requires_grad:
            parameter.grad = torch.zeros_like(parameter)
    optimizer.step()


@dataclass
class _SharedRows:
    """The batch's distinct observations, encoded once per update (see :func:`distinct_observations`)."""

    ids: np.ndarray  # (L, N): which distinct observation each valid step holds (-1 at masked steps)
    observations: Any  # (U, ...) policy tensors, or a dict of them


def _shared_rows(
    policy: Any, reference: Any, rollout: GroupedRollout, observation_space: Any, device: torch.device
) -> _SharedRows | None:
    """Distinct observations of this batch if the policy can score them once each and they repeat enough."""
    if not getattr(policy, "accepts_shared_rows", False):
        return None
    if reference is not None and not getattr(reference, "accepts_shared_rows", False):
        return None
    steps, members = np.nonzero(rollout.mask.T)
    found = distinct_observations(rollout.observations, (steps, members))
    if found is None:
        return None
    ids, first = found
    grid = np.full(rollout.mask.T.shape, -1, dtype=np.int64)
    grid[steps, members] = ids
    observations = obs_to_tensor(
        index_observations(rollout.observations, (steps[first], members[first])), observation_space, device
    )
    return _SharedRows(grid, observations)


def _rollout_metrics(rollout: GroupedRollout, elapsed: float, env_steps: int) -> dict[str, float]:
    metrics = {
        "rollout/ep_rew_mean": float(rollout.returns.mean()),
        "rollout/ep_len_mean": float(rollout.lengths.mean()),
        "rollout/success_rate": mean_or_nan(rollout.success),
        "time/fps": env_steps / elapsed if elapsed > 0 else float("nan"),
    }
    for term, sums in rollout.reward_terms.items():
        metrics[f"rewards/{term}"] = float(sums.mean())
    return metrics

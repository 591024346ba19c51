"""Policy distillation: a trained teacher (any rlopt checkpoint, of any size) teaches a smaller student.

The student plays the environment, the teacher scores every state the student visited, and the student is trained
to match the teacher's action distribution there: the KL divergence between the two, per state. Collecting on the
student's own states is on-policy distillation (Agarwal et al., "On-Policy Distillation of Language Models: Learning
from Self-Generated Mistakes", ICLR 2024, the generalized knowledge distillation of its title); letting the teacher
choose a share of the actions (``teacher_mix``, DAgger's beta of Ross, Gordon and Bagnell, AISTATS 2011) moves the
data towards the teacher's states, where a weak student would rarely get on its own. No reward is used for
learning, so distillation is critic-free like GRPO; the env's rewards are only logged and evaluated.

``divergence="forward"`` minimises KL(teacher || student), which spreads the student over every action the teacher
gives weight to; ``"reverse"`` minimises KL(student || teacher), which lets the student settle on the teacher's main
mode (the GKD paper compares both).

The run folder, TensorBoard tags (``eval/*``, ``rollout/*``, ``train/learning_rate``, plus ``distill/kl`` and
``distill/agreement``, the share of visited states where the student's most likely action is the teacher's),
checkpoints and ``summary.json`` are those of every rlopt trainer, so ``rlopt eval`` scores a student and ``rlopt
train --init`` fine-tunes it. ``summary.json`` also holds the teacher's own evaluation on the same held-out seeds.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from gymnasium.vector import AutoresetMode
from torch.distributions import Categorical, Distribution, kl_divergence

from agents.encoders import obs_to_tensor
from rlopt.cli import add_config_arguments
from rlopt.config import ConfigError, PolicyOptions, RunConfig, check_choice, check_range, option
from rlopt.rollout import stack_observations, to_env_actions
from rlopt.runs import SUMMARY_FILE, read_json, write_json_atomic
from rlopt.session import TrainingSession, build_policy, make_adam, policy_from_checkpoint, use_precision
from rlopt.vector import make_vector_env

__all__ = ["DistillConfig", "add_distill_arguments", "distill_config", "distill_main", "train_distill"]

ALGO = "distill"


@dataclass
class DistillConfig(PolicyOptions, RunConfig):
    """Every distillation hyperparameter; each becomes an ``rlopt distill`` option. The student's network is set
    by the policy options (``hidden_sizes``, or ``num_layers``/``model_dim``/... for a transformer)."""

    teacher: str = option("", "The teacher: an rlopt run folder or checkpoint (GRPO, PPO, SFT or distill). Required.")
    num_envs: int = option(16, "Parallel environments the student plays in.")
    rollout_steps: int = option(64, "Steps per environment between updates (a batch: num_envs x rollout_steps).")
    teacher_mix: float = option(
        0.0,
        "Share of collection steps at which the teacher, not the student, chooses the action (DAgger's beta); 0 "
        "trains on the student's own states only (on-policy distillation).",
    )
    divergence: str = option(
        "forward",
        "forward: KL(teacher || student), covering every action the teacher weighs; reverse: KL(student || teacher), "
        "the teacher's main mode.",
        ("forward", "reverse"),
    )
    learning_rate: float = option(1e-3, "Adam learning rate.")
    update_epochs: int = option(4, "Passes over each batch.")
    num_minibatches: int = option(4, "Minibatches per pass.")
    max_grad_norm: float = option(0.5, "Gradient-norm clipping threshold.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.teacher:
            raise ConfigError(
                "teacher is required: an rlopt run folder or checkpoint to learn from (rlopt distill --teacher "
                "RUN_DIR, or in rlopt compare --override distill.teacher=RUN_DIR)"
            )
        check_range("num_envs", self.num_envs, 1)
        check_range("rollout_steps", self.rollout_steps, 1)
        check_range("teacher_mix", self.teacher_mix, 0.0, 1.0)
        check_choice("divergence", self.divergence, ("forward", "reverse"))
        check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_range("update_epochs", self.update_epochs, 1)
        check_range("num_minibatches", self.num_minibatches, 1)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        if self.num_minibatches > self.num_envs * self.rollout_steps:
            raise ConfigError(
                f"num_minibatches={self.num_minibatches} exceeds the batch of num_envs x rollout_steps = "
                f"{self.num_envs * self.rollout_steps} states; lower it"
            )


def teacher_state(teacher: str) -> dict[str, Any]:
    """The teacher checkpoint's state.json (env, config, policy spec), read without its weights.

    Raises:
        CheckpointError: ``teacher`` is not an rlopt checkpoint, or its state.json is corrupt.
    """
    from rlopt.checkpoint import STATE_FILE, CheckpointError, check_state, resolve_checkpoint

    if str(teacher).endswith(".json") and Path(teacher).name != STATE_FILE:
        raise CheckpointError(f"--teacher {teacher}: pass the teacher's run folder (or a checkpoint folder in it)")
    if (Path(teacher) / "checkpoints" / "model.zip").is_file() or Path(teacher).name == "model.zip":
        raise CheckpointError(
            f"--teacher {teacher} is a stable-baselines3 run: a teacher must be a run of rlopt's own trainers "
            "(grpo, ppo, sft or distill)"
        )
    path = resolve_checkpoint(teacher) / STATE_FILE
    try:
        state = read_json(path)
    except (FileNotFoundError, ValueError) as error:
        raise CheckpointError(str(error)) from None
    check_state(state, path)
    return state


def distill_config(teacher: str, **values: Any) -> DistillConfig:
    """A :class:`DistillConfig` for ``teacher`` whose env (``env_id``, ``env_kwargs``) defaults to the teacher's."""
    state = teacher_state(teacher)
    values.setdefault("env_id", state["env_id"])
    if values["env_id"] == state["env_id"]:
        recorded = state.get("config")
        kwargs = recorded.get("env_kwargs") if isinstance(recorded, dict) else None
        values.setdefault("env_kwargs", dict(kwargs) if isinstance(kwargs, dict) else {})
    return DistillConfig(teacher=teacher, **values)


def _distribution(policy: Any, observation: Any) -> tuple[Distribution, torch.Tensor | None]:
    """The policy's action distribution, batch shape ``(B,)`` (an MLP or grid policy's head, a transformer's next
    token at temperature 1: the distribution itself, not the sampling settings), and a Mixture-of-Experts trunk's
    load-balancing loss (None for a dense one)."""
    if hasattr(policy, "forward_dist"):
        distribution, _, aux = policy.forward_dist(observation)
        return distribution, aux.get("aux_loss")
    return Categorical(logits=policy.logits(observation)), None


def _divergence(teacher: Distribution, student: Distribution, kind: str) -> torch.Tensor:
    """Per-state KL, ``(B,)``; summed over action dimensions where the distributions do not (a plain Normal)."""
    kl = kl_divergence(teacher, student) if kind == "forward" else kl_divergence(student, teacher)
    return kl.reshape(kl.shape[0], -1).sum(dim=1)


def _agreement(teacher: Distribution, student: Distribution) -> float:
    """Share of states where the student's most likely action is the teacher's (discrete actions), else NaN."""
    if not isinstance(teacher, Categorical):
        return float("nan")
    return float((teacher.probs.argmax(dim=-1) == student.probs.argmax(dim=-1)).float().mean())


def train_distill(config: DistillConfig, resume: bool = False) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Distil ``config.teacher`` into a new student. Returns ``(student, summary)``."""
    if resume:
        raise ConfigError("a distillation run cannot be resumed; start a new one (its student can be --init'ed)")
    return TrainingSession(config, ALGO).run(_train, config)


train = train_distill  # the name rlopt.api.train calls each algorithm's trainer by


def _train(config: DistillConfig, session: TrainingSession) -> tuple[torch.nn.Module, dict[str, Any]]:
    device = session.device
    env = make_vector_env(config.env_id, config.num_envs, AutoresetMode.SAME_STEP, config.env_kwargs)
    try:
        observation_space, action_space = env.single_observation_space, env.single_action_space
        teacher, _ = policy_from_checkpoint(config.teacher, observation_space, action_space, device=device)
        teacher.eval().requires_grad_(False)
        student, spec = build_policy(config, observation_space, action_space, value_head=False)
        student = use_precision(student.to(device), config.precision)
        optimizer = make_adam(student.parameters(), config.learning_rate)
        hyperparameters = config.to_dict()
        began = time.perf_counter()
        teacher_result = session.evaluator.evaluate(teacher)
        session.elapsed_before -= time.perf_counter() - began  # the student's wall clock leaves the teacher's test
        session.start(student, hyperparameters)
        observation, _ = env.reset(seed=config.seed)
        running_return = np.zeros(config.num_envs)
        running_length = np.zeros(config.num_envs, dtype=np.int64)
        while not session.done:
            batch, returns, lengths, successes = [], [], [], []
            for _ in range(config.rollout_steps):
                with torch.no_grad():
                    tensor = obs_to_tensor(observation, observation_space, device, check_codes=False)
                    action = student.act(tensor)[0]
                    if config.teacher_mix > 0:
                        chosen = torch.as_tensor(session.numpy_rng.random(config.num_envs) < config.teacher_mix)
                        if bool(chosen.any()):
                            guided = teacher.act(tensor)[0]
                            shape = (-1,) + (1,) * (action.dim() - 1)
                            action = torch.where(chosen.to(action.device).reshape(shape), guided, action)
                batch.append(observation)
                observation, reward, terminated, truncated, info = env.step(to_env_actions(action, action_space))
                running_return += reward
                running_length += 1
                ended = terminated | truncated
                if ended.any():
                    final_info = info.get("final_info", {})
                    success = np.asarray(final_info.get("is_success", np.full(config.num_envs, np.nan)), float)
                    present = np.asarray(final_info.get("_is_success", np.zeros(config.num_envs, bool)), bool)
                    for index in np.flatnonzero(ended):
                        returns.append(float(running_return[index]))
                        lengths.append(int(running_length[index]))
                        successes.append(float(success[index]) if present[index] else float("nan"))
                    running_return[ended], running_length[ended] = 0.0, 0
            states = _flatten_batch(stack_observations(batch))  # (T, N, ...) -> (T * N, ...)
            metrics = _update(config, teacher, student, optimizer, states, observation_space, device, session)
            session.advance(config.rollout_steps * config.num_envs, {"kl": metrics["distill/kl"]})
            record = {**metrics, "train/learning_rate": optimizer.param_groups[0]["lr"]}
            if returns:
                record["rollout/ep_rew_mean"] = float(np.mean(returns))
                record["rollout/ep_len_mean"] = float(np.mean(lengths))
                if not np.all(np.isnan(successes)):
                    record["rollout/success_rate"] = float(np.nanmean(successes))
            record["time/fps"] = session.env_steps / max(session.elapsed, 1e-9)
            session.log(record)
            session.maybe_evaluate(student)
            session.maybe_checkpoint(student, optimizer, {}, spec)
        summary = session.finish(student, optimizer, spec, hyperparameters)
    finally:
        env.close()
    summary.update(
        {
            "teacher": config.teacher,
            "teacher/eval/mean_reward": teacher_result.mean_reward,
            "teacher/eval/success_rate": _number(teacher_result.success_rate),
            "teacher/num_parameters": sum(parameter.numel() for parameter in teacher.parameters()),
            "distill/kl": metrics["distill/kl"],
        }
    )
    write_json_atomic(session.run_dir / SUMMARY_FILE, summary)
    return student, summary


def _number(value: float) -> float | None:
    return None if value != value else value


def _flatten_batch(states: Any) -> Any:
    """``(T, N, ...)`` arrays (or a dict of them) as ``(T * N, ...)``."""
    if isinstance(states, dict):
        return {key: _flatten_batch(value) for key, value in states.items()}
    array = np.asarray(states)
    return array.reshape(array.shape[0] * array.shape[1], *array.shape[2:])


def _update(
    config: DistillConfig,
    teacher: Any,
    student: Any,
    optimizer: torch.optim.Optimizer,
    states: Any,
    observation_space: Any,
    device: torch.device,
    session: TrainingSession,
) -> dict[str, float]:
    """Epochs of minibatch steps on the KL between teacher and student over the visited states."""
    observations = obs_to_tensor(states, observation_space, device, check_codes=False)
    count = next(iter(observations.values())).shape[0] if isinstance(observations, dict) else observations.shape[0]
    with torch.no_grad():
        targets = _distribution(teacher, observations)[0]  # the teacher is scored once per batch
    generator = torch.Generator().manual_seed(int(session.numpy_rng.integers(2**31)))
    losses: list[float] = []
    totals: list[float] = []  # the optimised loss, with a MoE student's balancing term
    agreements: list[float] = []
    aux_losses: list[float] = []
    for _ in range(config.update_epochs):
        for index in torch.tensor_split(torch.randperm(count, generator=generator), config.num_minibatches):
            if len(index) == 0:
                continue
            index = index.to(device)
            batch = (
                {key: value[index] for key, value in observations.items()}
                if isinstance(observations, dict)
                else observations[index]
            )
            student_distribution, aux_loss = _distribution(student, batch)
            teacher_distribution = _select(targets, index)
            kl = _divergence(teacher_distribution, student_distribution, config.divergence).mean()
            loss = kl
            if aux_loss is not None and config.num_experts:  # a MoE student keeps its experts balanced, as in GRPO
                loss = kl + config.aux_loss_coef * aux_loss
                aux_losses.append(float(aux_loss.detach()))
            if not torch.isfinite(loss):
                raise FloatingPointError("the distillation loss became non-finite; lower learning_rate")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(student.parameters(), config.max_grad_norm)
            optimizer.step()
            losses.append(float(kl.detach()))
            totals.append(float(loss.detach()))
            agreements.append(_agreement(teacher_distribution, student_distribution))
    metrics = {
        "distill/kl": float(np.mean(losses)),
        "distill/agreement": float(np.mean(agreements)),
        # one point per update phase, like every trainer's: the report counts updates to a threshold by it
        "train/loss": float(np.mean(totals)),
    }
    if aux_losses:
        metrics["moe/aux_loss"] = float(np.mean(aux_losses))
    return metrics


def _select(distribution: Distribution, index: torch.Tensor) -> Distribution:
    """The rows ``index`` of a distribution with batch shape ``(B,)`` (torch distributions cannot be indexed)."""
    if isinstance(distribution, Categorical):
        return Categorical(logits=distribution.logits[index])
    return _Rows(distribution, index)


class _Rows:
    """Rows of a non-categorical batch distribution, for kl_divergence: rebuilt from its parameters."""

    def __new__(cls, distribution: Distribution, index: torch.Tensor) -> Distribution:  # type: ignore[misc]
        from torch.distributions import Independent, Normal

        if isinstance(distribution, Independent) and isinstance(distribution.base_dist, Normal):
            base = distribution.base_dist
            return Independent(Normal(base.loc[index], base.scale[index]), distribution.reinterpreted_batch_ndims)
        if isinstance(distribution, Normal):
            return Normal(distribution.loc[index], distribution.scale[index])
        raise ConfigError(f"distillation supports categorical and Gaussian policies, not {type(distribution).__name__}")


# --- command line ---------------------------------------------------------------------------------------------------


def add_distill_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rlopt distill``: ``--env`` and one ``--option`` per :class:`DistillConfig` field."""
    parser.add_argument(
        "--env",
        dest="env_id",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="Environment id (default: the teacher's, with its env kwargs).",
    )
    add_config_arguments(parser, DistillConfig, skip=("env_id",))


def distill_main(args: argparse.Namespace) -> int:
    """Run ``rlopt distill`` from parsed arguments; prints the student's and the teacher's scores."""
    values = {key: value for key, value in vars(args).items() if value is not None}
    teacher = values.pop("teacher", "")
    if not teacher:
        raise ConfigError("--teacher is required: an rlopt run folder or checkpoint to learn from")
    _, summary = train_distill(distill_config(teacher, **values))
    success = summary["eval/success_rate"]
    teacher_success = summary["teacher/eval/success_rate"]
    print(
        f"distill on {summary['env_id']} (seed {summary['seed']}): student eval/mean_reward "
        f"{summary['eval/mean_reward']:.3f}"
        + ("" if success is None else f", success {success:.3f}")
        + f" with {summary['num_parameters']} parameters; teacher {summary['teacher/eval/mean_reward']:.3f}"
        + ("" if teacher_success is None else f", success {teacher_success:.3f}")
        + f" with {summary['teacher/num_parameters']}; final KL {summary['distill/kl']:.4f}, "
        f"{summary['env_steps']} env steps in {summary['wall_clock_seconds']:.1f} s"
    )
    print(f"run folder: {summary['run_dir']}")
    return 0

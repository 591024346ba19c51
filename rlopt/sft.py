"""Supervised cold start: teach a token transformer the reference solver's gold chains of thought before RL.

Reference: DeepSeek-AI, "DeepSeek-R1: Incentivizing Reasoning Capability in LLMs via Reinforcement Learning",
arXiv:2501.12948 (section 2.3.1, "cold start": a small set of long chain-of-thought examples fine-tunes the model
before GRPO, for readable output and a faster start).

Where this departs from the paper:
1. The examples are not curated model outputs but the environment's gold completions (one operation per step, in
   the R1 template ``<think>...</think><answer>...<eos>``), drawn fresh every step from the seeded generator with
   training seeds (below ``2**30``; evaluation uses the held-out seeds above it).
2. The model is trained from scratch (there is no pretrained base), with token-mean cross-entropy on the
   completion tokens only (the prompt is context, not a target), AdamW, linear warmup and cosine decay.
3. Steps on the TensorBoard x-axis are optimizer steps (``total_steps`` counts them), not environment steps.

The run folder is a normal rlopt run (``config.json``, TensorBoard events with ``sft/*`` and ``eval/*`` scalars and
sample completions, ``checkpoints/``, ``summary.json``); its checkpoint rebuilds with
:func:`rlopt.session.policy_from_checkpoint`, so ``rlopt train --algo grpo --init RUN_DIR`` continues with GRPO.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from gymnasium.vector import AutoresetMode

from agents import PolicySpec, make_policy
from envs.math_reasoning import gold_completions
from rlopt.cli import add_config_arguments
from rlopt.config import ConfigError, RunConfig, TransformerOptions, check_choice, check_range, option
from rlopt.math_eval import MATH_ENV_ID, math_metrics, samples_markdown, scalar_metrics
from rlopt.runs import SUMMARY_FILE, write_json_atomic
from rlopt.session import TrainingSession, use_precision
from rlopt.vector import make_vector_env

__all__ = ["SFTConfig", "add_sft_arguments", "gold_batch", "sft_main", "train_sft"]

#: training problems are drawn from seeds below this bound (evaluation seeds lie above it, see rlopt.evaluation)
TRAIN_SEED_BOUND = 2**30


@dataclass
class SFTConfig(TransformerOptions, RunConfig):
    """Every supervised cold-start hyperparameter; each becomes an ``rlopt sft`` option."""

    env_id: str = option(MATH_ENV_ID, "Gymnasium id of a math reasoning environment (it provides gold completions).")
    total_steps: int = option(2000, "Optimizer steps, each on batch_size fresh gold completions (the x-axis here).")
    eval_every: int = option(0, "Evaluate every this many optimizer steps; 0 picks about ten evaluations per run.")
    checkpoint_every: int = option(0, "Save a checkpoint every this many optimizer steps; 0 saves at each evaluation.")
    level: int = option(1, "Difficulty level (1-6) of the generated training and evaluation problems.")
    eval_on_start: bool = option(
        True, "Also evaluate before the first step: eval/initial_accuracy in summary.json, the curves' first point."
    )
    problem_file: str | None = option(
        None,
        "A JSONL file of {question, answer} records to train and evaluate on "
        "instead of generated problems (level is then not used).",
    )
    batch_size: int = option(64, "Gold completions per optimizer step.")
    learning_rate: float = option(1e-3, "Peak AdamW learning rate.")
    lr_schedule: str = option(
        "cosine", "After warmup: cosine decay to 10% of the peak, or constant.", ("cosine", "constant")
    )
    warmup_steps: int = option(100, "Steps of linear learning-rate warmup from 0.")
    weight_decay: float = option(0.01, "AdamW weight decay (on matrices only, not on biases, norms or embeddings).")
    max_grad_norm: float = option(1.0, "Gradient-norm clipping threshold.")
    pass_k: int = option(4, "k of pass@k in the final evaluation (2k samples per problem); 0 skips it.")

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range("level", self.level, 1)
        check_range("batch_size", self.batch_size, 1)
        check_range("learning_rate", self.learning_rate, 0.0, low_open=True)
        check_choice("lr_schedule", self.lr_schedule, ("cosine", "constant"))
        check_range("warmup_steps", self.warmup_steps, 0)
        check_range("weight_decay", self.weight_decay, 0.0)
        check_range("max_grad_norm", self.max_grad_norm, 0.0, low_open=True)
        check_range("pass_k", self.pass_k, 0)
        # the problem source is part of the env's arguments (it sets the observation length), so it is stored
        # there: a checkpoint then rebuilds its env, and its policy, from config["env_kwargs"] alone
        key, value = ("problem_file", self.problem_file) if self.problem_file else ("level", self.level)
        other = "level" if self.problem_file else "problem_file"
        if self.env_kwargs.get(key, value) != value or other in self.env_kwargs:
            raise ConfigError(
                f"env_kwargs {self.env_kwargs} disagree with {key}={value!r}; choose the problems with "
                "--level or --problem-file only, not in env_kwargs"
            )
        self.env_kwargs = {**self.env_kwargs, key: value}
        try:
            self.policy_spec(observation_length=1)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def replace(self, **changes: Any) -> SFTConfig:
        """A copy with some fields changed; a new level or problem file replaces the one in ``env_kwargs``."""
        if {"level", "problem_file"} & changes.keys() and "env_kwargs" not in changes:
            changes["env_kwargs"] = {
                key: value for key, value in self.env_kwargs.items() if key not in ("level", "problem_file")
            }
        return dataclasses.replace(self, **changes)

    def policy_spec(self, observation_length: int) -> PolicySpec:
        """The transformer's spec, with ``context_length`` resolved (0 -> ``observation_length``) so a checkpoint
        rebuilds with the same position table whatever env length it is loaded for."""
        return PolicySpec(
            architecture="transformer",
            num_layers=self.num_layers,
            num_heads=self.num_heads,
            model_dim=self.model_dim,
            context_length=self.context_length or observation_length,
            temperature=self.temperature,
            top_p=self.top_p,
            num_experts=self.num_experts,
            top_k=self.top_k,
        )


def gold_batch(env: Any, seeds: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reset a math vector env of ``B`` envs to ``seeds`` ``(B,)`` and return its problems as teacher-forcing data.

    Returns:
        ``(prompts (B, L), gold tokens (B, T), mask (B, T))``: each env's first observation, its gold completion
        (``T`` = the longest), and True at the gold tokens.
    """
    observation, _ = env.reset(seed=[int(seed) for seed in seeds])
    _, gold, gold_length = gold_completions(env)
    steps = int(gold_length.max())
    mask = np.arange(steps) < gold_length[:, None]
    return (
        torch.as_tensor(observation, device=device),
        torch.as_tensor(gold[:, :steps], device=device),
        torch.as_tensor(mask, device=device),
    )


def _learning_rate(config: SFTConfig, step: int) -> float:
    if step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.learning_rate
    progress = (step - config.warmup_steps) / max(1, config.total_steps - config.warmup_steps)
    return config.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0))))


def _optimizer(policy: torch.nn.Module, config: SFTConfig) -> torch.optim.Optimizer:
    # decay only matrices of linear layers (GPT-2 / minGPT practice); embeddings, norms and biases are left alone
    decay, no_decay = [], []
    for name, parameter in policy.named_parameters():
        is_matrix = parameter.dim() >= 2 and "embedding" not in name
        (decay if is_matrix else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.learning_rate, betas=(0.9, 0.95))


def train_sft(config: SFTConfig) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Supervised cold start on gold completions. Returns ``(policy, summary)``; see :class:`SFTConfig`.

    Raises:
        ConfigError: if ``config.env_id`` is not a math reasoning environment (checked before a run folder exists).
    """
    _check_env(config)
    return TrainingSession(config, "sft").run(_train, config)


def _check_env(config: SFTConfig) -> None:
    try:
        env = make_vector_env(config.env_id, 1, AutoresetMode.DISABLED, config.env_kwargs)
    except (TypeError, ConfigError) as error:  # an env that takes no level / problem_file argument is no math env
        raise ConfigError(
            f"env_id={config.env_id!r} cannot be made with {config.env_kwargs} ({error}); SFT needs a math reasoning "
            f"env such as {MATH_ENV_ID}"
        ) from None
    try:
        gold_completions(env)
    except TypeError:
        raise ConfigError(
            f"env_id={config.env_id!r} has no gold completions; SFT needs a math reasoning env such as {MATH_ENV_ID}"
        ) from None
    finally:
        env.close()


def _evaluate(
    config: SFTConfig, session: TrainingSession, policy: torch.nn.Module, k: int, scores: bool = True
) -> dict[str, Any]:
    """Math metrics of ``policy`` on the held-out problems, logged at the session's step; ``scores=False`` leaves
    out eval/success_rate and eval/mean_reward (the final evaluation of :meth:`TrainingSession.finish` logs them)."""
    level = None if config.problem_file else config.level
    metrics = math_metrics(
        policy,
        level,
        config.eval_episodes,
        k,
        config.seed,
        session.device,
        env_id=config.env_id,
        env_kwargs=config.env_kwargs,
    )
    values = scalar_metrics(metrics)
    if scores:
        values.update({"eval/success_rate": metrics["accuracy"], "eval/mean_reward": metrics["mean_reward"]})
    session.log(values)
    assert session.logger is not None
    session.logger.text("eval/samples", samples_markdown(metrics), session.env_steps)
    return metrics


def _train(config: SFTConfig, session: TrainingSession) -> tuple[torch.nn.Module, dict[str, Any]]:
    # --- setup ---
    device = session.device
    env = make_vector_env(config.env_id, config.batch_size, AutoresetMode.DISABLED, config.env_kwargs)
    spec = config.policy_spec(env.single_observation_space.shape[0])
    policy = make_policy(spec, env.single_observation_space, env.single_action_space).to(device)
    policy = use_precision(policy, config.precision)
    optimizer = _optimizer(policy, config)
    hyperparameters = config.to_dict()
    session.start(policy, hyperparameters, evaluate=False)  # SFT's own evaluation (math metrics) follows
    initial_accuracy = _evaluate(config, session, policy, 0)["accuracy"] if config.eval_on_start else None
    last_eval = 0
    tokens_seen = 0
    loss_value = float("nan")

    try:
        while not session.done:
            # --- batch ---
            started = time.perf_counter()
            learning_rate = _learning_rate(config, session.env_steps)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate
            seeds = session.numpy_rng.integers(0, TRAIN_SEED_BOUND, size=config.batch_size)
            prompts, gold, mask = gold_batch(env, seeds, device)

            # --- update ---
            logits, targets, out = policy.episode_logits(prompts, gold, mask)
            loss = F.cross_entropy(logits[mask], targets[mask])
            total = loss + config.aux_loss_coef * out.aux_loss if policy.is_moe else loss
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), config.max_grad_norm)
            optimizer.step()

            # --- log ---
            tokens = int(mask.sum())
            tokens_seen += tokens
            loss_value = loss.item()
            token_accuracy = (logits[mask].argmax(dim=-1) == targets[mask]).float().mean().item()
            session.advance(1, {"loss": loss_value})
            record = {
                "sft/loss": loss_value,
                "sft/token_accuracy": token_accuracy,
                "sft/grad_norm": float(grad_norm),
                "sft/tokens": tokens_seen,
                "train/learning_rate": learning_rate,
                "time/tokens_per_second": tokens / max(time.perf_counter() - started, 1e-9),
            }
            if policy.is_moe:
                record["moe/aux_loss"] = float(out.aux_loss)
            session.log(record)
            if session.env_steps - last_eval >= config.evaluation_interval and not session.done:
                last_eval = session.env_steps
                _evaluate(config, session, policy, 0)

            # --- checkpoint ---
            session.maybe_checkpoint(policy, optimizer, {}, spec)
        final = _evaluate(config, session, policy, config.pass_k, scores=False)  # finish() logs those once
        summary = session.finish(policy, optimizer, spec, hyperparameters)
    finally:
        env.close()
    summary.update(
        {
            "sft/final_loss": loss_value,
            "sft/tokens": tokens_seen,
            "eval/initial_accuracy": initial_accuracy,
            "math": {key: value for key, value in final.items() if key != "samples"},
            "samples": final["samples"],
        }
    )
    summary["eval/accuracy"] = final["accuracy"]
    write_json_atomic(session.run_dir / SUMMARY_FILE, _finite(summary))
    return policy, summary


def _finite(value: Any) -> Any:
    """``value`` with NaN / inf floats replaced by None, recursively (summary.json stays strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


# --- command line ---------------------------------------------------------------------------------------------------


def add_sft_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``rlopt sft``: ``--env`` and one ``--option`` per :class:`SFTConfig` field."""
    parser.add_argument(
        "--env",
        dest="env_id",
        metavar="ID",
        default=argparse.SUPPRESS,
        help=f"A math reasoning environment id (default: {MATH_ENV_ID}).",
    )
    add_config_arguments(parser, SFTConfig, skip=("env_id",))


def _accuracy_text(summary: dict[str, Any]) -> str:
    initial = summary["eval/initial_accuracy"]
    before = "" if initial is None else f"{initial:.3f} -> "
    return f"accuracy {before}{summary['eval/accuracy']:.3f}, "


def sft_main(args: argparse.Namespace) -> int:
    """Run ``rlopt sft`` from parsed arguments; prints the result and the run folder. Returns the exit code."""
    config = SFTConfig.from_dict(vars(args))
    _, summary = train_sft(config)
    math_summary = summary["math"]
    pass_key = f"pass@{math_summary['k']}"
    problems = config.problem_file or f"level {config.level}"
    print(
        f"sft on {summary['env_id']} {problems} (seed {summary['seed']}): "
        + _accuracy_text(summary)
        + (f"{pass_key} {math_summary[pass_key]:.3f}, " if pass_key in math_summary else "")
        + f"format {math_summary['format_rate']:.3f}, final loss {summary['sft/final_loss']:.4f}, "
        f"{summary['env_steps']} steps in {summary['wall_clock_seconds']:.1f} s, "
        f"{summary['num_parameters']} parameters"
    )
    print(f"run folder: {summary['run_dir']}")
    print(
        f"continue with GRPO: rlopt train --algo grpo --env {summary['env_id']} "
        f"--env-kwargs '{json.dumps(config.env_kwargs)}' --init {summary['run_dir']}"
    )
    return 0

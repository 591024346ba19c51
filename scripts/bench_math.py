"""GRPO on the math task: rlopt's trainer vs Hugging Face TRL's ``GRPOTrainer``, side by side in one process.

Both sides train the same thing from random weights: a 2-layer, 4-head, 128-wide causal transformer over the math
vocabulary (24 tokens; no download), on level-1 problems of ``rlopt/MathReasoning-v0`` (two-term addition or
subtraction of numbers 0-99), 32 prompts x 8 samples per step, at most 8 new tokens per completion, no KL term, one
optimizer step per batch of completions. TRL gets a GPT-2 model built from a ``GPT2Config`` (pre-LN, learned
positions, GELU, 4x feed-forward, untied output layer: the architecture of rlopt's ``TransformerPolicy``), a
word-level tokenizer over rlopt's vocabulary, and a reward function that applies rlopt's own verifier
(``envs.math_reasoning.score_completion``) to each completion. Generation stops at ``<eos>`` or PAD on both sides
(the env ends an episode on either).

Timing: ``--warmup`` steps first, then ``--steps`` measured steps; a step is everything between two consecutive
optimizer steps of the real training loop (sampling, reward, advantages, forward/backward, optimizer, logging).
TRL's reward-function time is also reported apart, because ``score_completion`` scores one string at a time in
Python while rlopt's env scores the batch at once.

    python scripts/bench_math.py                         # CPU, 1 torch thread, 3 x (3 warm-up + 10 measured steps)
    python scripts/bench_math.py --device cuda --steps 20
    python scripts/bench_math.py --precision bf16        # bf16 mixed precision on both sides (TRL's default)
    python scripts/bench_math.py --precision bf16 --trl-precision fp32   # each side at its fastest on a CPU
    python scripts/bench_math.py --side rlopt --profile  # cProfile of rlopt's measured steps
    python scripts/bench_math.py --side rlopt --torch-profile --device cuda  # ops and kernels, device-busy time
    python scripts/bench_math.py --side rlopt --phases 15  # also rollout / update forward / backward, 15 times each

TRL is an optional benchmark extra (``pip install -e .[bench-trl]``); without it only rlopt is measured.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

# the TRL half must never reach the Hugging Face Hub: everything is built locally
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

ENV_ID = "rlopt/MathReasoning-v0"
#: seeds of TRL's prompts start here, far from the rlopt run's seeds (the problems are i.i.d. either way)
TRL_PROMPT_SEED_OFFSET = 1_000_000
#: rlopt >= TARGET_RATIO x TRL's completions per second is the goal of the issue on the 2-core CPU
TARGET_RATIO = 3.0


@dataclass(frozen=True)
class BenchSpec:
    """What both sides train: task, batch, model size and optimiser settings."""

    level: int = 1
    num_prompts: int = 32
    group_size: int = 8
    max_new_tokens: int = 8
    num_layers: int = 2
    num_heads: int = 4
    model_dim: int = 128
    learning_rate: float = 1e-3
    max_grad_norm: float = 0.5
    clip_coef: float = 0.2
    seed: int = 0
    #: fp32 on both sides, or bf16 mixed precision on both (rlopt's ``precision="bf16"``, TRL's ``bf16=True``)
    precision: str = "fp32"
    #: TRL's precision when it differs from rlopt's (None: the same), to compare each side at its fastest
    trl_precision: str | None = None

    def __post_init__(self) -> None:
        for name in ("level", "num_prompts", "group_size", "max_new_tokens", "num_layers", "num_heads", "model_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"BenchSpec.{name}={value!r} must be a positive int")
        if self.group_size < 2:
            raise ValueError(f"BenchSpec.group_size={self.group_size} must be >= 2 (GRPO compares within a group)")
        for name in ("precision", "trl_precision"):
            value = getattr(self, name)
            if value not in ("fp32", "bf16") and (name == "precision" or value is not None):
                raise ValueError(f"BenchSpec.{name}={value!r} must be 'fp32' or 'bf16'")
        if self.model_dim % self.num_heads:
            raise ValueError(f"BenchSpec.model_dim={self.model_dim} must be a multiple of num_heads={self.num_heads}")

    @property
    def trl_bf16(self) -> bool:
        """Whether TRL trains with ``bf16=True``."""
        return (self.trl_precision or self.precision) == "bf16"

    @property
    def precision_text(self) -> str:
        """The precision of both sides, for the report's header."""
        if self.trl_precision in (None, self.precision):
            return self.precision
        return f"rlopt {self.precision}, TRL {self.trl_precision}"

    @property
    def completions_per_step(self) -> int:
        """P x G completions sampled (and trained on) per step."""
        return self.num_prompts * self.group_size


@dataclass
class SideResult:
    """Measured steps of one side.

    Attributes:
        name: "rlopt" or "trl".
        device: the torch device the figures are for.
        step_seconds: ``(S,)`` wall-clock seconds of each measured step.
        cpu_seconds: ``(S,)`` CPU seconds this process used in each measured step (all its threads): unlike wall
            time, barely moved by other processes competing for the cores.
        completions: ``(S,)`` completions sampled per measured step.
        tokens: ``(S,)`` tokens generated per measured step (``<eos>`` included).
        num_parameters: trainable parameters of the model.
        reward_seconds: ``(S,)`` seconds spent in the reward function per step (TRL only; empty for rlopt).
        mean_reward: mean reward over the measured steps (a sanity check that both score the same task).
        device_profile: per-step figures of a ``--torch-profile`` run (:func:`torch_profile_summary`), else empty.
    """

    name: str
    device: str
    step_seconds: list[float]
    cpu_seconds: list[float]
    completions: list[int]
    tokens: list[int]
    num_parameters: int
    reward_seconds: list[float] = field(default_factory=list)
    mean_reward: float = float("nan")
    device_profile: dict[str, float] = field(default_factory=dict)

    # Throughputs divide the mean work per step by the MEDIAN step time: on a shared machine a few steps get
    # slowed by other processes, and the median ignores them where the mean would not.

    @property
    def seconds_per_step(self) -> float:
        """Median wall-clock seconds per measured step."""
        return float(np.median(self.step_seconds))

    @property
    def mean_seconds_per_step(self) -> float:
        return float(np.mean(self.step_seconds))

    @property
    def cpu_seconds_per_step(self) -> float:
        """Median CPU seconds per measured step."""
        return float(np.median(self.cpu_seconds))

    @property
    def completions_per_second(self) -> float:
        return float(np.mean(self.completions) / self.seconds_per_step)

    @property
    def completions_per_cpu_second(self) -> float:
        return float(np.mean(self.completions) / self.cpu_seconds_per_step)

    @property
    def tokens_per_second(self) -> float:
        return float(np.mean(self.tokens) / self.seconds_per_step)

    @property
    def completions_per_second_without_reward(self) -> float:
        """Throughput with the reward function's (median) time taken out (NaN when it was not timed)."""
        if not self.reward_seconds:
            return float("nan")
        return float(np.mean(self.completions) / (self.seconds_per_step - float(np.median(self.reward_seconds))))

    def merge(self, other: SideResult) -> SideResult:
        """This result and ``other`` (a repeat of the same side) pooled step by step."""
        if (other.name, other.device) != (self.name, self.device):
            raise ValueError(f"cannot pool {other.name} [{other.device}] into {self.name} [{self.device}]")
        steps = len(self.step_seconds) + len(other.step_seconds)
        mean_reward = (self.mean_reward * len(self.step_seconds) + other.mean_reward * len(other.step_seconds)) / steps
        return SideResult(
            name=self.name,
            device=self.device,
            step_seconds=self.step_seconds + other.step_seconds,
            cpu_seconds=self.cpu_seconds + other.cpu_seconds,
            completions=self.completions + other.completions,
            tokens=self.tokens + other.tokens,
            num_parameters=self.num_parameters,
            reward_seconds=self.reward_seconds + other.reward_seconds,
            mean_reward=mean_reward,
            device_profile=self.device_profile or other.device_profile,
        )

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "seconds_per_step": self.seconds_per_step,
            "mean_seconds_per_step": self.mean_seconds_per_step,
            "cpu_seconds_per_step": self.cpu_seconds_per_step,
            "completions_per_cpu_second": self.completions_per_cpu_second,
            "completions_per_second": self.completions_per_second,
            "tokens_per_second": self.tokens_per_second,
            "completions_per_second_without_reward": self.completions_per_second_without_reward,
        }


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available) -> a torch device."""
    if name not in ("cpu", "cuda", "auto"):
        raise ValueError(f"--device {name!r} is not supported; accepted: cpu, cuda, auto")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for but torch sees no CUDA device here; use --device cpu")
    return torch.device(name)


def _check_steps(warmup: int, steps: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
        raise ValueError(f"warmup={warmup!r} must be an int >= 1 (the first step carries one-off setup costs)")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps={steps!r} must be an int >= 1")


def _stamp(device: torch.device) -> tuple[float, float]:
    """``(wall-clock, process CPU)`` seconds now, after the queued CUDA work (if any) has run."""
    if device.type == "cuda":  # CUDA work is asynchronous: a timestamp only means something once it is done
        torch.cuda.synchronize(device)
    return time.perf_counter(), time.process_time()


def _step_times(stamps: list[tuple[float, float]], warmup: int) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of each step after the warm-up, from the timestamps taken at each step's end."""
    deltas = np.diff(np.asarray(stamps[warmup - 1 :]), axis=0)
    return deltas[:, 0].tolist(), deltas[:, 1].tolist()


#: the matrix products whose FLOPs ``--torch-profile`` adds up
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def torch_profile_summary(profiler: Any, steps: int, device: torch.device, top: int = 25) -> dict[str, float]:
    """Print a ``torch.profiler`` record of ``steps`` measured steps: the top ops by own host (CPU) time and, on CUDA,
    by own device time. Returns per step: ``host_events_per_step``, the profiler's host-side events (torch ops, and on
    CUDA the runtime calls such as kernel launches), ``matmul_gflop_per_step`` and ``matmul_host_ms_per_step`` (the
    matrix products, ``aten::mm``, ``addmm`` and ``bmm``: their FLOPs as the profiler counts them and their own host
    time, so on a CPU their GFLOP/s can be set against the core's peak), and on CUDA ``device_activities_per_step``
    (kernels and copies run) and ``device_busy_ms_per_step`` (the time the device spent in them: next to the wall
    time of a step, this says whether the step waits on the GPU or on the host).
    """
    from torch.autograd import DeviceType

    averages, events = profiler.key_averages(), profiler.events()
    print(f"\n--- torch.profiler of the measured rlopt steps ({steps}), by own host time ---")
    print(averages.table(sort_by="self_cpu_time_total", row_limit=top))
    on_device = [event for event in events if event.device_type != DeviceType.CPU]
    summary = {"host_events_per_step": (len(events) - len(on_device)) / steps}
    if device.type != "cpu":
        print(f"--- by own device time ---\n{averages.table(sort_by='self_device_time_total', row_limit=top)}")
        summary["device_activities_per_step"] = len(on_device) / steps
        summary["device_busy_ms_per_step"] = sum(event.time_range.elapsed_us() for event in on_device) / 1e3 / steps
    print("per step: " + ", ".join(f"{name} {value:.1f}" for name, value in summary.items()))
    products = [entry for entry in averages if entry.key in MATMUL_OPS]
    gflop = summary["matmul_gflop_per_step"] = sum(entry.flops for entry in products) / 1e9 / steps
    host_ms = summary["matmul_host_ms_per_step"] = sum(entry.self_cpu_time_total for entry in products) / 1e3 / steps
    rate = f" ({gflop / host_ms * 1e3:.1f} GFLOP/s)" if host_ms > 0 else ""
    print(f"matrix products per step: {gflop:.3f} GFLOP in {host_ms:.1f} ms of their own host time{rate}")
    return summary


def _print_profile(profiler: cProfile.Profile, top: int = 35) -> None:
    """The top functions of a profile, by cumulative and by own time."""
    for order in ("cumulative", "tottime"):
        stream = io.StringIO()
        pstats.Stats(profiler, stream=stream).sort_stats(order).print_stats(top)
        print(f"\n--- cProfile of the measured rlopt steps, sorted by {order} ---\n{stream.getvalue()}")


# --- rlopt -------------------------------------------------------------------------------------------------------


def rlopt_config(spec: BenchSpec, device: torch.device, logdir: str) -> Any:
    """The GRPO config of the rlopt side: the transformer, P x G episodes, 8-token episodes, one update per batch.

    The env keeps its level-1 buffer (32 tokens, the transformer's context); ``max_episode_steps`` caps every
    episode at ``max_new_tokens`` generated tokens (an env ``max_length`` of prompt + 8 cannot work: prompts vary in
    length and the env only draws problems whose gold completion fits the buffer).
    """
    from rlopt import api

    return api.make_config(
        "grpo",
        ENV_ID,
        env_kwargs={"level": spec.level},
        architecture="transformer",
        num_layers=spec.num_layers,
        num_heads=spec.num_heads,
        model_dim=spec.model_dim,
        num_prompts=spec.num_prompts,
        group_size=spec.group_size,
        max_episode_steps=spec.max_new_tokens,
        update_epochs=1,
        num_minibatches=1,
        kl_coef=0.0,
        # the whole update, as TRL does it: at random initialisation every group is dead, and skipping them would
        # leave nothing of the update to measure
        skip_zero_advantage=False,
        learning_rate=spec.learning_rate,
        lr_schedule="constant",  # as the TRL side (the math preset decays its rate)
        max_grad_norm=spec.max_grad_norm,
        clip_coef=spec.clip_coef,
        precision=spec.precision,
        seed=spec.seed,
        device=str(device),
        logdir=logdir,
        run_name="bench_math_rlopt",
        progress=False,
        # no evaluation or checkpoint inside the timed loop (the final ones come after the last timed step)
        eval_every=10**12,
        checkpoint_every=10**12,
        eval_episodes=8,
        total_steps=10**12,
    )


def bench_rlopt(
    spec: BenchSpec,
    warmup: int,
    steps: int,
    device: torch.device,
    profile: bool = False,
    torch_profile: bool = False,
) -> SideResult:
    """Run rlopt's own GRPO training loop (``rlopt.grpo.train``) for ``warmup + steps`` iterations and time them.

    The loop is the real one; a :class:`~rlopt.session.TrainingSession` subclass only records a timestamp at the end
    of each iteration and stops the run after the last one. ``profile`` records the measured steps with cProfile,
    ``torch_profile`` with ``torch.profiler`` (ops and, on CUDA, kernels; :func:`torch_profile_summary`); either
    slows the steps it records.
    """
    from unittest import mock

    from rlopt import grpo
    from rlopt.session import TrainingSession

    _check_steps(warmup, steps)
    stamps: list[tuple[float, float]] = []
    sampled: list[int] = []
    returns: list[float] = []
    total = warmup + steps
    profiler = cProfile.Profile() if profile else None
    recorder = None
    if torch_profile:
        activities = [torch.profiler.ProfilerActivity.CPU]
        if device.type == "cuda":
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        recorder = torch.profiler.profile(activities=activities, with_flops=True)

    class TimedSession(TrainingSession):
        """Stops after ``total`` iterations; timestamps each iteration's end."""

        def advance(self, steps: int, postfix: dict[str, float] | None = None) -> None:
            super().advance(steps, postfix)
            stamps.append(_stamp(device))
            sampled.append(int(steps))
            returns.append(float((postfix or {}).get("ret", float("nan"))))
            if profiler is not None and self.iteration == warmup:  # profile the measured iterations only
                profiler.enable()
            if profiler is not None and self.iteration == total:
                profiler.disable()
            if recorder is not None and self.iteration == warmup:
                recorder.start()
            if recorder is not None and self.iteration == total:
                recorder.stop()

        @property
        def done(self) -> bool:
            return self.iteration >= total

    with tempfile.TemporaryDirectory() as logdir:
        config = rlopt_config(spec, device, logdir)
        with mock.patch.object(grpo, "TrainingSession", TimedSession):
            policy, _ = grpo.train(config)
    if len(stamps) != total:
        raise RuntimeError(f"rlopt ran {len(stamps)} iterations, expected {total}")
    if profiler is not None:
        _print_profile(profiler)
    profile_summary = torch_profile_summary(recorder, steps, device) if recorder is not None else None
    wall, cpu = _step_times(stamps, warmup)
    return SideResult(
        name="rlopt",
        device=str(device),
        step_seconds=wall,
        cpu_seconds=cpu,
        completions=[spec.completions_per_step] * steps,
        tokens=sampled[warmup:],
        num_parameters=sum(parameter.numel() for parameter in policy.parameters()),
        mean_reward=float(np.mean(returns[warmup:])),
        device_profile=profile_summary or {},
    )


def bench_phases(spec: BenchSpec, repeats: int, device: torch.device, warmup: int = 2) -> dict[str, list[float]]:
    """rlopt's step taken apart, each phase repeated on one batch: after ``warmup`` ordinary iterations of the real
    loop, the next iteration runs its grouped rollout ``repeats`` times (same start seeds; the last batch is kept),
    then the update's forward (``evaluate_episodes`` over the batch, episodes shuffled as the update does) and
    backward ``repeats`` times (gradients cleared after each), then its real update.

    A change to the rollout or the update is best judged this way, with old and new code alternating: on a noisy
    machine whole steps minutes apart differ by more than most changes.

    Returns:
        ``{"rollout": [...], "update_forward": [...], "update_backward": [...]}``, seconds per repeat.
    """
    from unittest import mock

    from agents.encoders import obs_to_tensor
    from rlopt import grpo
    from rlopt.rollout import index_observations
    from rlopt.session import TrainingSession

    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be an int >= 1")
    times: dict[str, list[float]] = {"rollout": [], "update_forward": [], "update_backward": []}
    real_collect, real_update = grpo.collect_groups, grpo._update
    iterations = {"started": 0}

    def collect(*args: Any, **kwargs: Any) -> Any:
        iterations["started"] += 1
        if iterations["started"] <= warmup:
            return real_collect(*args, **kwargs)
        for _ in range(repeats):
            start = _stamp(device)[0]
            batch = real_collect(*args, **kwargs)
            times["rollout"].append(_stamp(device)[0] - start)
        return batch

    def update(config: Any, policy: Any, reference: Any, optimizer: Any, rollout: Any, *rest: Any) -> Any:
        if iterations["started"] > warmup:
            observation_space, update_device = rest[-2], rest[-1]
            order = torch.randperm(rollout.mask.shape[0], generator=torch.Generator().manual_seed(spec.seed)).numpy()
            first = obs_to_tensor(
                index_observations(rollout.observations, (0, order)), observation_space, update_device
            )
            actions = torch.as_tensor(rollout.actions[:, order].T, device=update_device)
            mask = torch.as_tensor(rollout.mask[order], device=update_device)
            for _ in range(repeats):
                start = _stamp(device)[0]
                scored = policy.evaluate_episodes(first, actions, mask)
                middle = _stamp(device)[0]
                (scored["log_prob"].sum() + scored["entropy"].sum()).backward()
                times["update_forward"].append(middle - start)
                times["update_backward"].append(_stamp(device)[0] - middle)
                optimizer.zero_grad(set_to_none=True)
        return real_update(config, policy, reference, optimizer, rollout, *rest)

    class ShortSession(TrainingSession):
        @property
        def done(self) -> bool:
            return self.iteration > warmup

    with tempfile.TemporaryDirectory() as logdir:
        config = rlopt_config(spec, device, logdir)
        with (
            mock.patch.object(grpo, "TrainingSession", ShortSession),
            mock.patch.object(grpo, "collect_groups", collect),
            mock.patch.object(grpo, "_update", update),
        ):
            grpo.train(config)
    return times


def format_phases(times: dict[str, list[float]]) -> str:
    medians = {name: 1e3 * float(np.median(values)) for name, values in times.items()}
    return (
        f"rlopt phases on one batch (median of {len(times['rollout'])}): rollout {medians['rollout']:.1f} ms, "
        f"update forward {medians['update_forward']:.1f} ms + backward {medians['update_backward']:.1f} ms"
    )


# --- TRL ---------------------------------------------------------------------------------------------------------


def trl_available() -> str | None:
    """None when trl, transformers, datasets and tokenizers import; else a message saying how to install them."""
    missing = []
    for module in ("trl", "transformers", "datasets", "tokenizers"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if not missing:
        return None
    return (
        f"TRL half skipped: {', '.join(missing)} not installed. Install the benchmark extra with "
        "`pip install -e .[bench-trl]` (trl, transformers, datasets) to compare against TRL's GRPOTrainer."
    )


def math_tokenizer() -> Any:
    """A Hugging Face fast tokenizer whose ids are exactly rlopt's math vocabulary (built locally, no download).

    Single characters are split one by one; ``<think>``, ``</think>`` and ``<answer>`` are whole (non-special, so
    decoding keeps them) tokens; ``<pad>`` (0) and ``<eos>`` (23) are the special padding and end tokens.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    from envs.math_reasoning import VOCAB

    backend = Tokenizer(WordLevel({token: index for index, token in enumerate(VOCAB)}, unk_token="<pad>"))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    backend.decoder = decoders.Fuse()
    backend.add_tokens([AddedToken(token, special=False, normalized=False) for token in VOCAB if len(token) > 1])
    backend.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in ("<pad>", "<eos>")])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>")


def math_model(spec: BenchSpec, context_length: int) -> Any:
    """A randomly initialised GPT-2 of the spec's size over the math vocabulary (no dropout, untied output layer)."""
    from transformers import AutoModelForCausalLM, GPT2Config

    from envs.math_reasoning import EOS, PAD, VOCAB_SIZE

    config = GPT2Config(
        vocab_size=VOCAB_SIZE,
        n_positions=context_length,
        n_embd=spec.model_dim,
        n_layer=spec.num_layers,
        n_head=spec.num_heads,
        # exact (erf) GELU as in rlopt's transformer; GPT2Config's default is the tanh approximation ("gelu_new")
        activation_function="gelu",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=EOS,
        pad_token_id=PAD,
    )
    torch.manual_seed(spec.seed)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")
    # the env ends an episode on <eos> and on PAD; TRL stops (and masks) a completion at any of these ids
    model.generation_config.eos_token_id = [EOS, PAD]
    return model


class MathReward:
    """TRL reward function: rlopt's verifier (``score_completion``) on each completion; times itself.

    TRL calls it with the prompt texts and the completion token ids (cut after the first stop token); ids are
    rlopt's vocabulary ids, decoded with PAD kept so that ``score_completion`` cuts the episode where the env would.
    """

    __name__ = "rlopt_score_completion"

    def __init__(self) -> None:
        self.calls: list[tuple[float, int, float]] = []  # (seconds, generated tokens, mean reward) per call

    def __call__(self, prompts: list[str], completion_ids: list[list[int]], **_: Any) -> list[float]:
        from envs.math_reasoning import decode, score_completion

        start = time.perf_counter()
        rewards = [
            score_completion(prompt, decode(ids, skip_pad=False))[0] if len(ids) else 0.0
            for prompt, ids in zip(prompts, completion_ids, strict=True)
        ]
        tokens = sum(len(ids) for ids in completion_ids)
        self.calls.append((time.perf_counter() - start, tokens, float(np.mean(rewards)) if rewards else 0.0))
        return rewards


def bench_trl(spec: BenchSpec, warmup: int, steps: int, device: torch.device) -> SideResult:
    """Train TRL's ``GRPOTrainer`` on the same task and model size for ``warmup + steps`` optimizer steps."""
    import transformers
    from datasets import Dataset
    from transformers import PrinterCallback, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from envs.math_reasoning import DEFAULT_MAX_LENGTH, generate_problems

    _check_steps(warmup, steps)
    transformers.logging.set_verbosity_error()
    total = warmup + steps
    seeds = np.arange(total * spec.num_prompts) + TRL_PROMPT_SEED_OFFSET + spec.seed
    prompts = [problem.question for problem in generate_problems(spec.level, seeds.tolist())]
    dataset = Dataset.from_dict({"prompt": prompts})
    reward = MathReward()
    stamps: list[tuple[float, float]] = []
    calls_at_step: list[int] = []

    class Timestamps(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            stamps.append(_stamp(device))
            calls_at_step.append(len(reward.calls))

    with tempfile.TemporaryDirectory() as output_dir, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers' deprecation notes on argument names
        args = GRPOConfig(
            output_dir=output_dir,
            # one generation batch of P x G completions = one optimizer step over all of them, one forward/backward
            per_device_train_batch_size=spec.completions_per_step,
            gradient_accumulation_steps=1,
            num_generations=spec.group_size,
            num_iterations=1,
            max_completion_length=spec.max_new_tokens,
            beta=0.0,
            epsilon=spec.clip_coef,
            loss_type="grpo",
            scale_rewards="group",
            temperature=1.0,
            top_p=1.0,
            top_k=0,
            learning_rate=spec.learning_rate,
            lr_scheduler_type="constant",
            max_grad_norm=spec.max_grad_norm,
            max_steps=total,
            # the precision of the rlopt side (TRL defaults to bf16), and no activation recomputation, like rlopt
            # (TRL defaults to gradient checkpointing)
            bf16=spec.trl_bf16,
            gradient_checkpointing=False,
            use_cpu=device.type == "cpu",
            seed=spec.seed,
            logging_steps=1,
            report_to="none",
            save_strategy="no",
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = GRPOTrainer(
            model=math_model(spec, DEFAULT_MAX_LENGTH[spec.level]),
            reward_funcs=reward,
            args=args,
            train_dataset=dataset,
            processing_class=math_tokenizer(),
            callbacks=[Timestamps()],
        )
        trainer.remove_callback(PrinterCallback)  # metrics are still computed and logged, just not printed
        trainer.train()
    if len(stamps) != total:
        raise RuntimeError(f"TRL ran {len(stamps)} optimizer steps, expected {total}")
    # the reward function runs once per generation batch, i.e. once per step here
    per_step = [reward.calls[calls_at_step[index] - 1] for index in range(warmup, total)]
    wall, cpu = _step_times(stamps, warmup)
    return SideResult(
        name="trl",
        device=str(trainer.accelerator.device),
        step_seconds=wall,
        cpu_seconds=cpu,
        completions=[spec.completions_per_step] * steps,
        tokens=[tokens for _, tokens, _ in per_step],
        num_parameters=sum(parameter.numel() for parameter in trainer.model.parameters()),
        reward_seconds=[seconds for seconds, _, _ in per_step],
        mean_reward=float(np.mean([value for _, _, value in per_step])),
    )


# --- report ------------------------------------------------------------------------------------------------------


def format_result(result: SideResult) -> str:
    line = (
        f"{result.name:<6} [{result.device}] {result.seconds_per_step:7.3f} s/step (median of "
        f"{len(result.step_seconds)}; mean {result.mean_seconds_per_step:.3f}), "
        f"{result.completions_per_second:7.1f} completions/s, {result.tokens_per_second:7.1f} generated tokens/s, "
        f"{np.mean(result.tokens):6.1f} tokens/step, {result.cpu_seconds_per_step:.3f} CPU s/step, "
        f"mean reward {result.mean_reward:.3f}, {result.num_parameters:,} parameters"
    )
    if result.reward_seconds:
        line += (
            f"\n       reward function {np.median(result.reward_seconds):.3f} s/step; without it "
            f"{result.completions_per_second_without_reward:8.1f} completions/s"
        )
    return line


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10, help="Measured steps per side (default: 10).")
    parser.add_argument("--warmup", type=int, default=3, help="Warm-up steps per side, not measured (default: 3).")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto (default: cpu).")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU), same for both (default: 1).")
    parser.add_argument("--side", choices=("both", "rlopt", "trl"), default="both", help="Which side(s) to run.")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Runs per side, alternating sides; the figures pool their steps (default: 3). Single runs on a shared "
        "2-core machine gave 1.97x to 3.00x within an hour.",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of both runs (default: 0).")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="fp32 on both sides (default), or bf16 mixed precision on both: rlopt's --precision bf16 and TRL's "
        "bf16=True (TRL's default). Fast only where the hardware has fast bf16 (AVX512-BF16 or AMX; Ampere or newer).",
    )
    parser.add_argument(
        "--trl-precision",
        choices=("fp32", "bf16"),
        help="TRL's precision, when it should differ from --precision: each side at its fastest setting (on the "
        "2-core AMD EPYC: rlopt bf16, TRL fp32, which is slower in bf16 there).",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="cProfile rlopt's measured steps (first repeat; slows them) and print the top functions.",
    )
    parser.add_argument(
        "--torch-profile",
        action="store_true",
        help="torch.profiler of rlopt's measured steps (first repeat; slows them): the top ops by host time and, "
        "on CUDA, by device time, with kernels launched and device-busy milliseconds per step.",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=0,
        metavar="N",
        help="After the side-by-side runs, also time rlopt's rollout and its update's forward and backward apart, "
        "each N times on one batch (default: 0, off); judge a change to either by alternating old and new code.",
    )
    parser.add_argument(
        "--row-slots",
        type=int,
        metavar="N",
        help="rlopt's update: a GRPO group's episodes share attention rows of at most N generated slots "
        "(agents.transformer.GROUP_ROW_MAX_SLOTS; default: the library's). To compare row layouts, e.g. with "
        "--side rlopt --phases 15 and N = 32 then 64.",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="On CUDA, rlopt replays a CUDA graph for each decoding step instead of launching its kernels one by "
        "one (TransformerPolicy.cuda_graphs, opt-in; not yet measured on a GPU).",
    )
    parser.add_argument("--json", help="Also write the results to this JSON file.")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads {args.threads} must be >= 1")
    if args.phases < 0:
        parser.error(f"--phases {args.phases} must be >= 0")
    if args.row_slots is not None and args.row_slots < 0:
        parser.error(f"--row-slots {args.row_slots} must be >= 0 (0: one episode per row)")
    if args.steps < 1 or args.warmup < 1 or args.repeats < 1:
        parser.error(f"--steps {args.steps}, --warmup {args.warmup} and --repeats {args.repeats} must all be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    from agents import transformer

    library_row_slots, library_graphs = transformer.GROUP_ROW_MAX_SLOTS, transformer.TransformerPolicy.cuda_graphs
    if args.row_slots is not None:
        transformer.GROUP_ROW_MAX_SLOTS = args.row_slots
    if args.cuda_graphs:
        transformer.TransformerPolicy.cuda_graphs = True
    try:
        return _run(args, argv)
    finally:
        transformer.GROUP_ROW_MAX_SLOTS = library_row_slots
        transformer.TransformerPolicy.cuda_graphs = library_graphs


def _run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    from agents.transformer import GROUP_ROW_MAX_SLOTS, TransformerPolicy
    from rlopt.runs import machine_description

    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise SystemExit(f"--json {args.json}: its folder does not exist (create it first; nothing was measured)")
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except ValueError as error:
        raise SystemExit(str(error)) from None
    spec = BenchSpec(seed=args.seed, precision=args.precision, trl_precision=args.trl_precision)
    command = shlex.join(["python", "scripts/bench_math.py", *(sys.argv[1:] if argv is None else argv)])
    versions = {"torch": torch.__version__}
    missing = trl_available() if args.side != "rlopt" else None
    if args.side != "rlopt" and missing is None:
        import transformers
        import trl

        versions.update(trl=trl.__version__, transformers=transformers.__version__)
    print(f"GRPO on {ENV_ID} level {spec.level}: rlopt vs TRL GRPOTrainer")
    print(f"machine: {machine_description()}")
    gpu = f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""
    gpu_run = device.type == "cuda"
    graphs = f"; rlopt decodes {'with' if TransformerPolicy.cuda_graphs else 'without'} CUDA graphs" if gpu_run else ""
    print(f"device: {device}{gpu}, torch threads: {torch.get_num_threads()}, versions: {versions}")
    print(f"command: {command}")
    print(
        f"{spec.num_prompts} prompts x {spec.group_size} samples/step, <= {spec.max_new_tokens} new tokens, "
        f"{spec.num_layers} layers x {spec.num_heads} heads x {spec.model_dim} wide, {spec.precision_text}, beta=0, "
        "one update per step; "
        f"{args.warmup} warm-up + {args.steps} measured steps per side; rlopt's update attends in rows of <= "
        f"{GROUP_ROW_MAX_SLOTS} slots{graphs}\n"
    )
    sides = [side for side in ("rlopt", "trl") if args.side in ("both", side)]
    if "trl" in sides and missing is not None:
        if sides == ["trl"]:  # nothing would be measured
            raise SystemExit(missing.replace("TRL half skipped", "--side trl cannot run"))
        print(missing)
        sides.remove("trl")
    results: dict[str, SideResult] = {}
    # repeats alternate the sides, so a stretch of load from other processes hits both rather than one
    for repeat in range(args.repeats):
        for side in sides:
            if side == "rlopt":
                # profile the first repeat only: one profile says where the time goes
                result = bench_rlopt(
                    spec,
                    args.warmup,
                    args.steps,
                    device,
                    profile=args.profile and repeat == 0,
                    torch_profile=args.torch_profile and repeat == 0,
                )
            else:
                result = bench_trl(spec, args.warmup, args.steps, device)
            if args.repeats > 1:
                print(f"  repeat {repeat + 1}/{args.repeats}: {format_result(result).splitlines()[0]}")
            results[side] = results[side].merge(result) if side in results else result
    if args.repeats > 1:
        print()
    for result in results.values():
        print(format_result(result))
    report: dict[str, Any] = {
        "command": command,
        "machine": machine_description(),
        "device": str(device) + gpu,
        "torch_threads": torch.get_num_threads(),
        "versions": versions,
        "spec": asdict(spec),
        "row_slots": GROUP_ROW_MAX_SLOTS,
        "cuda_graphs": TransformerPolicy.cuda_graphs and gpu_run,
        "results": {name: result.summary() for name, result in results.items()},
    }
    if "rlopt" in results and "trl" in results:
        ratio = results["rlopt"].completions_per_second / results["trl"].completions_per_second
        ratio_without = results["rlopt"].completions_per_second / results["trl"].completions_per_second_without_reward
        ratio_cpu = results["rlopt"].completions_per_cpu_second / results["trl"].completions_per_cpu_second
        verdict = "meets" if ratio >= TARGET_RATIO else "is below"
        print(
            f"\nrlopt / TRL completions per second: {ratio:.2f}x ({verdict} the {TARGET_RATIO:g}x target); "
            f"{ratio_without:.2f}x against TRL without its reward-function time; {ratio_cpu:.2f}x per CPU second"
        )
        report.update(ratio=ratio, ratio_without_reward=ratio_without, ratio_per_cpu_second=ratio_cpu)
    if args.phases:
        phases = bench_phases(spec, args.phases, device)
        print(format_phases(phases))
        report["phases"] = {name: float(np.median(values)) for name, values in phases.items()}
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()

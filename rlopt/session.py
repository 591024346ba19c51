"""What every training flow does around its algorithm: the run folder, logging, evaluation, checkpoints,
progress output, resuming and the final summary. GRPO and PPO each own their rollout and update; this owns the rest.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from agents import ActorCritic, PolicySpec, make_policy
from rlopt.checkpoint import (
    CheckpointError,
    checkpoint_step,
    load_checkpoint,
    restore_optimizer,
    restore_torch_rng,
    save_checkpoint,
)
from rlopt.config import ConfigError, RunConfig
from rlopt.evaluation import EvalResult, Evaluator
from rlopt.logger import RunLogger
from rlopt.runs import (
    CONFIG_FILE,
    SUMMARY_FILE,
    create_run_folder,
    peak_rss_mb,
    read_json,
    remove_if_only_config,
    run_name,
    versions,
    write_json_atomic,
)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is checked and passed to torch."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} was asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"device={name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: rlopt is built and tested on CPU and CUDA
        raise ConfigError(f"device={name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


def make_adam(parameters: Any, learning_rate: float, eps: float = 1e-5) -> torch.optim.Adam:
    """Adam for a trainer's policy, fused into one kernel per step where torch has one (CPU and CUDA floats).

    The per-parameter loop of the default implementation costs about 180 us per step for a 14k-parameter MLP on
    one CPU thread against 60 us fused; GRPO takes hundreds of small steps per 100k env steps. The update rule is
    the same (the sums run in another order). rlopt's PPO keeps torch's default Adam: it gains nothing measurable,
    and its learning tests and README figures were taken with the default.
    """
    parameters = list(parameters)
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in parameters) and bool(parameters)
    return torch.optim.Adam(parameters, lr=learning_rate, eps=eps, fused=fused or None)


def seed_everything(seed: int) -> np.random.Generator:
    """Seed torch and return the numpy generator that draws the run's start seeds."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def policy_from_checkpoint(
    path: str | Path, observation_space: Any = None, action_space: Any = None, device: torch.device | str = "cpu"
) -> tuple[ActorCritic, dict[str, Any]]:
    """Rebuild a policy from a checkpoint (spaces default to those of the checkpoint's env)."""
    import gymnasium as gym

    state, model_state, _ = load_checkpoint(path)
    if observation_space is None or action_space is None:
        env = gym.make(state["env_id"], **state.get("config", {}).get("env_kwargs", {}))
        observation_space, action_space = env.observation_space, env.action_space
        env.close()
    try:
        policy = make_policy(PolicySpec.from_dict(state["policy_spec"]), observation_space, action_space)
        policy.load_state_dict(model_state)
    except (TypeError, ValueError, RuntimeError) as error:  # load_state_dict reports mismatched shapes as RuntimeError
        raise ConfigError(
            f"the checkpoint {path} was trained on {state['env_id']} and does not fit observations {observation_space} "
            f"and actions {action_space}; evaluate or continue it on an env like the one it was trained on "
            f"({str(error).splitlines()[0]})"
        ) from None
    return policy.to(device), state


def build_policy(
    config: Any, observation_space: Any, action_space: Any, value_head: bool, shared_trunk: bool = False
) -> tuple[ActorCritic, PolicySpec]:
    """The policy a trainer starts from: built from the config's options, or, with ``config.init``, from that
    checkpoint (its architecture wins; a critic is added or dropped as the algorithm needs)."""
    if not config.init:
        spec = config.policy_spec(value_head=value_head, shared_trunk=shared_trunk)
        try:
            return make_policy(spec, observation_space, action_space), spec
        except TypeError as error:  # an architecture that cannot read this env's observations, say which
            raise ConfigError(str(error)) from None
    initial, state = policy_from_checkpoint(config.init, observation_space, action_space)
    spec = dataclasses.replace(
        PolicySpec.from_dict(state["policy_spec"]), value_head=value_head, shared_trunk=shared_trunk and value_head
    )
    _check_init_architecture(config, spec)
    if spec.architecture == "transformer":
        spec = dataclasses.replace(spec, temperature=config.temperature, top_p=config.top_p)
    policy = make_policy(spec, observation_space, action_space)
    # strict=False: a PPO critic in the checkpoint is dropped for GRPO, and a new critic starts fresh for PPO
    missing, unexpected = policy.load_state_dict(initial.state_dict(), strict=False)
    actor_missing = [name for name in missing if "value" not in name and "critic" not in name]
    if actor_missing:
        raise ConfigError(f"--init {config.init} does not fit this policy: missing weights {actor_missing[:5]}")
    del unexpected
    return policy, spec


def _check_init_architecture(config: Any, spec: PolicySpec) -> None:
    """Refuse network options that an ``--init`` checkpoint overrides, where they are set (not their defaults) to
    something else than the checkpoint's network: they would be ignored, and config.json would record them."""
    defaults = {item.name: item.default for item in dataclasses.fields(config)}
    names = ["num_layers", "num_heads", "model_dim"] if spec.architecture == "transformer" else ["hidden_sizes"]
    conflicts = [
        f"{name}={getattr(config, name)!r} (the checkpoint's: {getattr(spec, name)!r})"
        for name in names
        if getattr(config, name) != defaults[name] and _tuple_if_list(getattr(config, name)) != getattr(spec, name)
    ]
    if config.architecture not in ("auto", spec.architecture):
        conflicts.insert(0, f"architecture={config.architecture!r} (the checkpoint's: {spec.architecture!r})")
    if conflicts:
        raise ConfigError(
            f"--init {config.init} brings its own network, so {', '.join(conflicts)} would be ignored; drop "
            f"{'it' if len(conflicts) == 1 else 'them'}, or train without --init"
        )


def _tuple_if_list(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def use_precision(policy: Any, precision: str) -> Any:
    """``policy`` (already on its device) set to compute in ``precision``, a config's ``precision`` field.

    Raises:
        ConfigError: bf16 for a policy that is not a token transformer (the MLP and grid networks are fp32 only:
            they are too small for bf16 matrix products to pay), or on a device without bf16 support.
    """
    if not hasattr(policy, "set_precision"):
        if precision == "fp32":
            return policy
        raise ConfigError(
            f"precision={precision!r} applies to the token transformer only (architecture=transformer, or an --init "
            f"checkpoint of one); this run's {type(policy).__name__} computes in fp32: use precision=fp32"
        )
    if precision == "bf16" and next(policy.parameters()).device.type == "cpu" and cpu_lacks_fast_bf16():
        warnings.warn(
            "precision=bf16 on a CPU without AVX512-BF16 or AMX: bf16 products are emulated there and the run will "
            "be slower than fp32 (measured: 2.4x on an Intel Xeon without them); use precision=fp32 on this CPU",
            stacklevel=2,
        )
    try:
        return policy.set_precision(precision)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def cpu_lacks_fast_bf16() -> bool:
    """True where /proc/cpuinfo (Linux) lists neither avx512_bf16 nor amx_bf16; False where it cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "")
    except OSError:
        return False
    return bool(flags) and not ({"avx512_bf16", "amx_bf16"} & set(flags.split()))


#: k of the pass@k that the final evaluation of a GRPO, PPO or distillation run on the math env reports (from 2k
#: sampled completions per held-out problem)
MATH_PASS_K = 4


class TrainingSession:
    """Run folder, logger, evaluator, checkpoints and progress bar of one training run."""

    def __init__(self, config: RunConfig, algo: str, resume: bool = False) -> None:
        self.config = config
        self.algo = algo
        self.device = resolve_device(config.device)
        self.numpy_rng = seed_everything(config.seed)
        name = config.run_name or run_name(config.env_id, algo, config.seed)
        self.run_dir = Path(config.logdir) / name
        self.env_steps = 0
        self.iteration = 0
        self.start_time = time.perf_counter()
        self.elapsed_before = 0.0
        self.last_eval_step = 0
        self.last_checkpoint_step = 0
        self.last_eval_result: EvalResult | None = None  # of the evaluation at last_eval_step, in this process
        self.resume = resume
        self.logger: RunLogger | None = None
        # built before the run folder: a bad env id or env kwargs leaves nothing behind
        self.evaluator = Evaluator(config.env_id, config.eval_episodes, config.env_kwargs, device=self.device)
        self.progress: tqdm | None = None
        if not resume:
            self.run_dir = create_run_folder(config.logdir, name, numbered=config.run_name is None)
            write_json_atomic(
                self.run_dir / CONFIG_FILE,
                {
                    "algo": algo,
                    "env_id": config.env_id,
                    "seed": config.seed,
                    "config": config.to_dict(),
                    "versions": versions(),
                },
            )

    # --- resuming ---

    def restore(self, policy: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Load the latest checkpoint of this run into ``policy`` and ``optimizer``; returns its extra state."""
        state, model_state, tensors = load_checkpoint(self.run_dir)
        try:
            policy.load_state_dict(model_state)
            restore_optimizer(optimizer, state, tensors)
            restore_torch_rng(tensors)
            self.numpy_rng.bit_generator.state = state["numpy_rng"]
            self.env_steps = int(state["step"])
            self.iteration = int(state["iteration"])
            self.elapsed_before = float(state.get("elapsed_seconds", 0.0))
        except (KeyError, TypeError, ValueError, RuntimeError) as error:  # an edited or damaged state.json
            name = error.args[0] if isinstance(error, KeyError) and error.args else None
            detail = f"it lacks {name!r}" if name is not None else str(error).splitlines()[0]
            raise CheckpointError(
                f"the latest checkpoint in {self.run_dir} cannot be resumed ({detail}); it may have been edited or "
                "damaged: restore it, or start a new run (--init can still take its weights if they load)"
            ) from None
        self.last_eval_step = self.last_checkpoint_step = self.env_steps
        return state.get("extra", {})

    def start(self, policy: torch.nn.Module, hyperparameters: dict[str, Any], evaluate: bool = True) -> None:
        """Open the logger (dropping events logged after the checkpoint when resuming) and the progress bar, and
        evaluate at env step 0 where the config asks for it (``eval_on_start``; not again when resuming; not with
        ``evaluate=False``, for a trainer that runs its own evaluation there)."""
        # a resumed run drops the events logged after its checkpoint: those at steps above it (TensorBoard purges
        # from purge_step on; the checkpoint's own step was logged, evaluation included, before it was saved)
        self.logger = RunLogger(self.run_dir, purge_step=self.env_steps + 1 if self.resume else None)
        if self.resume:
            # the checkpoint was read: a new total_steps becomes the run's budget, for a later plain --resume too
            # (the versions recorded stay those the run started with)
            record = read_json(self.run_dir / CONFIG_FILE)
            write_json_atomic(self.run_dir / CONFIG_FILE, {**record, "config": self.config.to_dict()})
        else:
            self.logger.hyperparameters(
                {**hyperparameters, "algo": self.algo, "num_parameters": count_parameters(policy)},
                {"eval/mean_reward": 0.0, "eval/success_rate": 0.0},
            )
        if evaluate and self.config.eval_on_start and not self.resume:
            self.maybe_evaluate(policy, force=True)
        if self.config.progress:
            self.progress = tqdm(
                total=self.config.total_steps,
                initial=self.env_steps,
                unit="step",
                desc=f"{self.algo} {self.config.env_id}",
                dynamic_ncols=True,
                leave=False,
            )

    # --- per iteration ---

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    @property
    def done(self) -> bool:
        return self.env_steps >= self.config.total_steps

    def advance(self, steps: int, postfix: dict[str, float] | None = None) -> None:
        self.env_steps += int(steps)
        self.iteration += 1
        if self.progress is not None:
            if self.env_steps > (self.progress.total or 0):
                # a last batch past the budget: grow the bar's total (tqdm drops a total it has passed, and the bar
                # would end as a bare count such as "3824step")
                self.progress.total = self.env_steps
            self.progress.update(int(steps))
            if postfix:
                self.progress.set_postfix({key: f"{value:.3g}" for key, value in postfix.items()}, refresh=False)

    def schedule_learning_rate(self, optimizer: torch.optim.Optimizer, base: float, schedule: str) -> None:
        """Set the learning rate for the coming update: constant, or linear decay to 0 over ``total_steps``."""
        if schedule == "linear":
            fraction = max(1.0 - self.env_steps / self.config.total_steps, 0.0)
            for group in optimizer.param_groups:
                group["lr"] = base * fraction

    def log(self, values: dict[str, Any]) -> None:
        assert self.logger is not None, "call start() first"
        self.logger.scalars(values, self.env_steps)

    def maybe_evaluate(self, policy: torch.nn.Module, force: bool = False) -> EvalResult | None:
        if not force and self.env_steps - self.last_eval_step < self.config.evaluation_interval:
            return None
        self.last_eval_step = self.env_steps
        result = self.evaluator.evaluate(policy)
        self.last_eval_result = result
        self.log(result.metrics())
        if self._is_math():
            self._log_math_metrics(policy, 0)
        media = self.evaluator.showcase(policy) if self.config.eval_media else None
        if media is not None and self.logger is not None:
            kind, content = media
            if kind == "image":
                self.logger.image("eval/final_frame", content, self.env_steps)
            else:
                self.logger.text("eval/completion", f"```\n{content}\n```", self.env_steps)
        return result

    def _is_math(self) -> bool:
        """A run on the math env by a trainer without its own math evaluation (SFT has one)."""
        return self.algo != "sft" and self.config.env_id.rpartition(":")[2].startswith("rlopt/MathReasoning")

    def _log_math_metrics(self, policy: torch.nn.Module, k: int) -> dict[str, Any]:
        """Log the math metrics of :func:`rlopt.math_eval.math_metrics` on the evaluation's held-out problems: with
        ``k == 0`` the greedy ones (accuracy, format rate, step accuracy, chain lengths of correct and wrong answers,
        reward-hacking rate) and the sample completions as text; with ``k > 0`` only pass@k and the sampled rates
        (the greedy ones were logged at this step by the evaluation)."""
        from rlopt.math_eval import math_metrics, samples_markdown, scalar_metrics

        metrics = math_metrics(
            policy,
            None,
            self.config.eval_episodes,
            k,
            self.config.seed,
            self.device,
            env_id=self.config.env_id,
            env_kwargs=self.config.env_kwargs,
        )
        values = scalar_metrics(metrics)
        values.pop("eval/mean_reward", None)  # the evaluation's own, already logged at this step
        if k:
            values = {key: value for key, value in values.items() if key.startswith(("eval/pass@", "eval/sample_"))}
        elif self.logger is not None:
            self.logger.text("eval/samples", samples_markdown(metrics), self.env_steps)
        self.log(values)
        return metrics

    def maybe_checkpoint(
        self,
        policy: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        extra: dict[str, Any],
        spec: PolicySpec,
        force: bool = False,
    ) -> Path | None:
        interval = self.config.checkpoint_every or self.config.evaluation_interval
        if not force and self.env_steps - self.last_checkpoint_step < interval:
            return None
        self.last_checkpoint_step = self.env_steps
        return save_checkpoint(
            self.run_dir,
            self.env_steps,
            policy,
            optimizer,
            {
                "algo": self.algo,
                "env_id": self.config.env_id,
                "config": self.config.to_dict(),
                "policy_spec": spec.to_dict(),
                "iteration": self.iteration,
                "elapsed_seconds": self.elapsed,
                "numpy_rng": self.numpy_rng.bit_generator.state,
                "obs_normalization": None,
                "extra": extra,
            },
        )

    # --- the end ---

    def finish(
        self,
        policy: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        spec: PolicySpec,
        hyperparameters: dict[str, Any],
        extra: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Final evaluation, last checkpoint (with the trainer's ``extra`` JSON state, as in
        :meth:`maybe_checkpoint`, so a resumed run continues from it), ``summary.json``; returns the summary."""
        result = self.last_eval_result if self.last_eval_step == self.env_steps else None
        if result is None:  # not evaluated at this step yet (a periodic evaluation may just have been)
            result = self.maybe_evaluate(policy, force=True)
        assert result is not None
        self.maybe_checkpoint(policy, optimizer, extra or {}, spec, force=True)
        elapsed = self.elapsed
        summary = {
            "finished": True,
            "algo": self.algo,
            "env_id": self.config.env_id,
            "seed": self.config.seed,
            "env_steps": self.env_steps,
            "wall_clock_seconds": elapsed,
            "steps_per_second": self.env_steps / elapsed if elapsed > 0 else float("nan"),
            "num_parameters": count_parameters(policy),
            "peak_rss_mb": peak_rss_mb(),
            "eval/mean_reward": result.mean_reward,
            "eval/success_rate": _json_number(result.success_rate),
            "eval/mean_ep_length": result.mean_length,
            "eval/episodes": len(result.returns),
            "hyperparameters": hyperparameters,
            "baseline": "rlopt",
            "device": str(self.device),
            "run_dir": str(self.run_dir),
        }
        if self._is_math():  # the final evaluation adds pass@k (sampled completions) to the greedy metrics
            math_summary = self._log_math_metrics(policy, MATH_PASS_K)
            summary["math"] = {
                key: _json_number(value) if isinstance(value, float) else value
                for key, value in math_summary.items()
                if key != "samples"
            }
        write_json_atomic(self.run_dir / SUMMARY_FILE, summary)
        self.close()
        return summary

    def run(self, body: Any, config: Any) -> Any:
        """``body(config, self)``, the trainer's loop, then close the session; if it raises, the run folder goes
        too when nothing but config.json was written (:meth:`discard_if_unused`)."""
        try:
            return body(config, self)
        except FloatingPointError as error:  # a diverged run: say what is kept (its logs show where it diverged)
            self.discard_if_unused()
            kept = f"; {self.run_dir} keeps what was logged" if self.run_dir.exists() else ""
            saved = checkpoint_step(self.run_dir) if self.run_dir.exists() else None
            if saved is not None:
                kept += f" and its checkpoint at step {saved}"
            if saved is None and self.run_dir.exists():
                kept += " (no checkpoint was saved: delete the folder to reuse its name)"
            raise FloatingPointError(f"{error} (after env step {self.env_steps}{kept})") from None
        except BaseException:
            self.discard_if_unused()
            raise
        finally:
            self.close()

    def discard_if_unused(self) -> None:
        """Remove the run folder when the run stopped before writing anything but the config.json this session put
        there (a bad ``--init``, an env that cannot be built), so a failed start leaves no empty run behind. A
        resumed run's folder, and any folder holding more, is left alone."""
        if not self.resume:
            remove_if_only_config(self.run_dir)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        self.evaluator.close()


def count_parameters(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def load_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a run folder, with an error saying what a run folder is when it is not one."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise ConfigError(
            f"{run_dir} is not an rlopt run folder (no {CONFIG_FILE}); pass the folder that "
            "`rlopt train` created, e.g. runs/<env>__<algo>__<seed>__<time>"
        )
    return read_json(path)

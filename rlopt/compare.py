"""``rlopt compare``: train algorithms x environments x seeds in worker processes, then write the report;
``rlopt report``: write the report again from the runs on disk, e.g. with another success threshold.

Every (env, algo, seed) job trains in its own spawned process (one job per process, so each run's peak memory is
its own) and writes ``OUT/tb/<env>__<algo>__<seed>/``. A job that raises leaves its traceback in that folder's
``error.txt`` while the other jobs go on. Every job's config is built and validated before anything starts, so a bad
``--override`` fails the command at once. Running the same command again keeps the finished runs, resumes
interrupted ones from their latest checkpoint and trains the rest from scratch, so an interrupted comparison goes
on where it stopped; runs on disk that were trained with other settings are refused, never mixed in or deleted
(:func:`plan_jobs`). See :mod:`rlopt.report` for what the report holds.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import re
import shutil
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from rlopt import runs
from rlopt.checkpoint import checkpoint_step
from rlopt.config import ConfigError, check_range, option
from rlopt.report import ERROR_FILE, EVAL_REWARD, SCORES, format_table, load_runs, write_report

ALGOS = ("grpo", "ppo", "sb3_ppo", "distill")
#: what a comparison runs unless --algos says otherwise (distill needs a teacher: --override distill.teacher=RUN_DIR)
DEFAULT_ALGOS = ("grpo", "ppo", "sb3_ppo")
# A compared entry is an algorithm or a named variant of one, ALGO@NAME (e.g. grpo@cot), trained by ALGO with the
# variant's own --override values; the name keeps its runs, curves and rows apart from the plain algorithm's.
VARIANT_SEPARATOR = "@"
_VARIANT_NAME = re.compile(r"[A-Za-z0-9_-]+")
TB_DIR = "tb"
# Settings each job gets from the comparison itself, which per-algo overrides may not change (progress: workers draw
# no progress bars, their output would interleave).
OWNED_BY_COMPARE = ("env_id", "seed", "total_steps", "logdir", "run_name", "progress")
# Config fields that may differ between a run on disk and this comparison's config for it: where the run folder is
# (logdir, run_name: a comparison folder that was moved or renamed), whether a progress bar is drawn, and which
# device trains it (auto, cpu, cuda: a re-run on another machine). None of them changes what is compared; every other
# field does (a learning rate, a budget, an env kwarg, eval_media, whose rendered episodes are part of the evaluation).
IGNORED_SETTINGS = ("logdir", "run_name", "progress", "device")
# Algorithms whose interrupted runs continue from their checkpoint (rlopt.api.train(config, resume=True)); an
# interrupted stable-baselines3 run cannot, and is trained again.
RESUMABLE = ("grpo", "ppo")

TrainFn = Callable[..., dict]
ConfigFn = Callable[..., dict]


def base_algo(label: str) -> str:
    """The algorithm that trains a compared entry: ``grpo@cot`` -> ``grpo``, ``ppo`` -> ``ppo``."""
    return label.partition(VARIANT_SEPARATOR)[0]


def _check_algo_label(label: str) -> None:
    algo, separator, name = label.partition(VARIANT_SEPARATOR)
    if algo not in ALGOS:
        raise ConfigError(
            f"algo {label!r} is not accepted; choose from {', '.join(ALGOS)}, or name a variant ALGO@NAME such as "
            "grpo@cot"
        )
    if separator and not _VARIANT_NAME.fullmatch(name):
        raise ConfigError(f"variant {label!r}: the name after '@' must be letters, digits, '_' or '-', e.g. grpo@cot")


def overrides_for_seed(values: dict[str, Any], seed: int) -> dict[str, Any]:
    """One job's overrides: ``{seed}`` in a text value becomes the job's seed, so that each seed can start from its
    own checkpoint, e.g. ``--override 'grpo.init=runs/sft-{seed}'``."""
    return {
        name: value.replace("{seed}", str(seed)) if isinstance(value, str) else value for name, value in values.items()
    }


def default_jobs() -> int:
    """Worker processes by default: two where the machine has two cores or more."""
    return max(1, min(2, os.cpu_count() or 1))


@dataclass
class CompareConfig:
    """What to compare and where to write it."""

    envs: list[str] = option([], "Gymnasium ids to train on (module:id imports the module first).")
    algos: list[str] = option(
        list(DEFAULT_ALGOS),
        "Algorithms to compare, from grpo, ppo (rlopt's own), sb3_ppo and distill (a student of the teacher that "
        "--override distill.teacher=RUN_DIR names, per seed with {seed}); ALGO@NAME adds a named variant of ALGO "
        "whose settings come from --override ALGO@NAME.FIELD=VALUE.",
    )
    seeds: int = option(3, "Seeds per (env, algo): seeds 0 .. N-1.")
    total_steps: int = option(100_000, "Environment steps per run.")
    env_steps: dict = option({}, "Per-env step budgets that override total_steps, e.g. {'CartPole-v1': 50000}.")
    out: str = option("runs/compare", "Comparison folder: tb/ (one run folder per job), report.md, plots/.")
    jobs: int = option(default_jobs(), "Worker processes training at the same time.")
    torch_threads: int = option(
        0,
        "Torch threads per worker; 0 = one. rlopt's policies are small, and threads that outnumber the free cores "
        "(other jobs running) slowed a run 12x on the README machine; raise it for a large model with few jobs.",
    )
    overrides: dict = option({}, "Config overrides per algorithm, e.g. {'sb3_ppo': {'n_envs': 4}}.")
    success_threshold: float = option(
        0.9, "Success rate that counts as solved in the steps/seconds-to-success columns."
    )
    success_gain: float = option(
        0.0,
        "When above 0, the to-success columns measure each run from its own start instead of success_threshold: the "
        "first evaluation at least this much above the run's step-0 evaluation (train with eval_on_start).",
    )
    reference_algo: str = option("grpo", "Algorithm whose probability of improving on each other one is reported.")
    score: str = option(
        EVAL_REWARD,
        "Final score of a run: eval/mean_reward, or eval/success_rate (use it when the entries train on different "
        "reward definitions, e.g. grpo and grpo@cot).",
        SCORES,
    )

    def __post_init__(self) -> None:
        self.envs = list(self.envs)
        self.algos = list(self.algos)
        if not self.envs:
            raise ConfigError("envs is empty; name at least one Gymnasium id, e.g. --env CartPole-v1")
        for env_id in self.envs:
            _check_env_id(env_id)
        _check_no_duplicates("envs", self.envs)
        if not self.algos:
            raise ConfigError(f"algos is empty; choose from {', '.join(ALGOS)}")
        for algo in self.algos:
            _check_algo_label(algo)
        _check_no_duplicates("algos", self.algos)
        check_range("seeds", self.seeds, 1)
        check_range("total_steps", self.total_steps, 1)
        for env_id, steps in self.env_steps.items():
            if env_id not in self.envs:
                raise ConfigError(f"env_steps names {env_id!r}, which is not among the compared envs {self.envs}")
            check_range(f"env_steps[{env_id!r}]", steps, 1)
        check_range("jobs", self.jobs, 1)
        check_range("torch_threads", self.torch_threads, 0)
        check_range("success_threshold", self.success_threshold, 0, 1)
        check_range("success_gain", self.success_gain, 0, 1)
        if self.score not in SCORES:
            raise ConfigError(f"score={self.score!r} is not accepted; choose from {', '.join(SCORES)}")
        if self.reference_algo not in ALGOS and self.reference_algo not in self.algos:
            raise ConfigError(
                f"reference_algo={self.reference_algo!r} is not accepted; choose from {', '.join(ALGOS)} or one of "
                f"the compared entries {self.algos}"
            )
        if not isinstance(self.overrides, dict):
            raise ConfigError(f"overrides must be a dict {{algo: {{field: value}}}}, got {self.overrides!r}")
        for algo, values in self.overrides.items():
            if algo not in self.algos:
                raise ConfigError(f"overrides name {algo!r}, which is not among the compared algos {self.algos}")
            if not isinstance(values, dict):
                raise ConfigError(f"overrides[{algo!r}] must be a dict of config fields, got {values!r}")
            owned = sorted(set(values) & set(OWNED_BY_COMPARE))
            if owned:
                raise ConfigError(
                    f"overrides[{algo!r}] sets {owned}; compare sets {', '.join(OWNED_BY_COMPARE)} itself"
                )

    def steps_for(self, env_id: str) -> int:
        """The step budget of every run on ``env_id``."""
        return int(self.env_steps.get(env_id, self.total_steps))

    @property
    def tb_dir(self) -> Path:
        return Path(self.out) / TB_DIR


def _check_no_duplicates(name: str, values: list[str]) -> None:
    repeated = sorted({value for value in values if values.count(value) > 1})
    if repeated:
        raise ConfigError(f"{name} lists {repeated} more than once")


def _check_env_id(env_id: str) -> None:
    """Fail before any job starts when an id is unknown (a typo would otherwise fail every job)."""
    import importlib

    import gymnasium as gym

    if not isinstance(env_id, str) or not env_id:
        raise ConfigError(f"environment id {env_id!r} must be a non-empty string such as CartPole-v1")
    module, _, name = env_id.rpartition(":")
    try:
        if module:
            importlib.import_module(module)
        gym.spec(name)
    except (ImportError, gym.error.Error) as error:
        raise ConfigError(f"unknown environment id {env_id!r}: {error}") from None


def run_name_for(env_id: str, algo: str, seed: int) -> str:
    """The deterministic run folder name of one job: ``<env slug>__<algo>__<seed>``."""
    return f"{runs.env_slug(env_id)}__{algo}__{seed}"


@dataclass(frozen=True)
class Job:
    """One (env, entry, seed) run; ``resume``: continue the interrupted run in its folder from its latest checkpoint
    instead of training from scratch."""

    env_id: str
    algo: str
    seed: int
    resume: bool = False

    @property
    def run_name(self) -> str:
        return run_name_for(self.env_id, self.algo, self.seed)


def _default_train_fn() -> TrainFn:
    from rlopt.api import run_training

    return run_training


def job_config(
    algo: str,
    env_id: str,
    seed: int,
    total_steps: int,
    logdir: str,
    run_name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The config, as config.json records it, that :func:`rlopt.api.run_training` (compare's default trainer) trains
    a job with: what the comparison validates before starting and compares with the runs already on disk.

    Raises:
        ConfigError: the overrides do not make a valid config (unknown field, value out of range or of the wrong
            type, bf16 for a policy that is not a token transformer).
    """
    from rlopt import api

    overrides = overrides or {}
    _check_override_types(api.config_class(algo), overrides)
    # the same call as run_training's, so that the config checked here is the one the worker trains with
    config = api.make_config(
        algo,
        env_id,
        seed=seed,
        total_steps=total_steps,
        logdir=logdir,
        run_name=run_name,
        progress=False,
        **overrides,
    )
    _check_precision(config)
    _check_buildable(config)
    return config.to_dict()


_BUILT: set[tuple[str, str]] = set()  # (env id, env kwargs) pairs that _check_buildable has built once
_FITTING_TEACHERS: set[tuple[str, tuple[str, str]]] = set()  # (teacher, env key) pairs found to fit


def _check_buildable(config: Any) -> None:
    """The job's env builds with its env kwargs, and its ``init`` checkpoint and distillation ``teacher`` (if any)
    exist, so that a bad ``--override ALGO.env_kwargs=...``, ``ALGO.init=...`` or ``distill.teacher=...`` stops the
    command before any run starts rather than failing every worker.

    Raises:
        ConfigError: an env kwarg the env does not take or a value it refuses (ValueError), or a missing checkpoint
            (CheckpointError, a ValueError).
    """
    import gymnasium as gym

    from rlopt.checkpoint import resolve_checkpoint
    from rlopt.vector import env_kwargs_checked

    key = (config.env_id, json.dumps(config.env_kwargs, sort_keys=True, default=str))
    if key not in _BUILT:
        with env_kwargs_checked(config.env_id):
            gym.make(config.env_id, **config.env_kwargs).close()
        _BUILT.add(key)
    if getattr(config, "init", None):
        resolve_checkpoint(config.init)
    teacher = getattr(config, "teacher", None)
    if teacher and (teacher, key) not in _FITTING_TEACHERS:
        from rlopt.distill import teacher_state
        from rlopt.session import policy_from_checkpoint

        teacher_state(teacher)  # an rlopt checkpoint with a readable state.json, not an SB3 run
        env = gym.make(config.env_id, **config.env_kwargs)
        try:  # and one that fits this env's spaces (a math teacher cannot teach a grid student)
            policy_from_checkpoint(teacher, env.observation_space, env.action_space)
        finally:
            env.close()
        _FITTING_TEACHERS.add((teacher, key))


def resume_training(
    algo: str,
    env_id: str,
    seed: int,
    total_steps: int,
    logdir: str,
    run_name: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Continue the interrupted run ``logdir/run_name`` from its latest checkpoint; the arguments and the returned
    summary are :func:`rlopt.api.run_training`'s. The run goes on with the config the comparison would train it with
    (:func:`job_config`), which :func:`plan_jobs` found equal to the run's own but for :data:`IGNORED_SETTINGS`, so a
    new device or folder location applies."""
    from rlopt import api

    config = api.make_config(
        algo,
        env_id,
        seed=seed,
        total_steps=total_steps,
        logdir=logdir,
        run_name=run_name,
        progress=False,
        **(overrides or {}),
    )
    _, summary = api.train(config, resume=True)
    return summary


def _check_override_types(config_class: type, overrides: dict[str, Any]) -> None:
    """Text where a field takes a number or a boolean (``learning_rate=abc``: not JSON, so read as text) fails deep
    in a range check with a TypeError that names no field; say which field and what it takes."""
    defaults = {item.name: item.default for item in fields(config_class) if item.default is not MISSING}
    for name, value in overrides.items():
        default = defaults.get(name)
        if not isinstance(value, str) or default is None or isinstance(default, str):
            continue
        if isinstance(default, bool):
            raise ConfigError(f"{name}={value!r} must be true or false")
        if isinstance(default, (int, float)):
            raise ConfigError(f"{name}={value!r} must be a number, e.g. {default}")


def _check_precision(config: Any) -> None:
    """bf16 applies to the token transformer only. The config itself refuses it with architecture=mlp only, because
    architecture=auto may still load a transformer from --init; the trainer finds out when it builds the policy, in
    each worker. Decide it here instead, from the architecture or the --init checkpoint's recorded policy."""
    precision = getattr(config, "precision", "fp32")
    if precision == "fp32" or config.architecture == "transformer":
        return
    if config.init:
        architecture = _checkpoint_architecture(config.init)
        if architecture is None or architecture == "transformer":  # unreadable: the worker says what is wrong with it
            return
        built = f"the init checkpoint {config.init} holds a {architecture} policy"
    else:
        built = f"architecture={config.architecture!r} builds an MLP or grid network, never the transformer"
    raise ConfigError(
        f"precision={precision!r} applies to the token transformer only, and {built}; use precision=fp32, or "
        "architecture=transformer on a token env"
    )


def _checkpoint_architecture(path: str) -> str | None:
    from rlopt.checkpoint import STATE_FILE, resolve_checkpoint

    try:
        return str(runs.read_json(resolve_checkpoint(path) / STATE_FILE)["policy_spec"]["architecture"])
    except (OSError, ValueError, KeyError, TypeError):  # CheckpointError is a ValueError
        return None


def _write_error(run_dir: Path, text: str) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ERROR_FILE).write_text(text, encoding="utf-8")


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else text


def _run_job(
    train_fn: TrainFn | None,
    job: Job,
    total_steps: int,
    logdir: str,
    overrides: dict[str, Any],
    torch_threads: int,
    resume_fn: TrainFn | None = None,
) -> dict[str, Any]:
    """Worker-process body: train one job (with ``resume_fn`` where ``job.resume``: continue it from its checkpoint);
    any exception becomes ``error.txt`` and a ``failed`` outcome."""
    start = time.perf_counter()
    run_dir = Path(logdir) / job.run_name
    # Parallel jobs share the cores; torch's default (one thread per core in each job) makes them fight. The
    # variables reach torch when the trainer imports it; a torch already imported is told directly.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(torch_threads)
    from rlopt.grpo import BUDGET_WARNING

    warnings.filterwarnings("ignore", message=BUDGET_WARNING)  # _budget_warnings said it once, before the runs
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(torch_threads)
    try:
        if job.resume:
            if resume_fn is None:
                raise RuntimeError(f"{job.run_name} is planned to resume, but no resume function was passed")
            train = resume_fn
        else:
            train = train_fn if train_fn is not None else _default_train_fn()
        summary = train(
            algo=base_algo(job.algo),
            env_id=job.env_id,
            seed=job.seed,
            total_steps=total_steps,
            logdir=logdir,
            run_name=job.run_name,
            overrides=overrides,
        )
    except Exception:  # noqa: BLE001 (every failure is recorded and reported, the other jobs go on)
        text = traceback.format_exc()
        _write_error(run_dir, text)
        return {"status": "failed", "error": _last_line(text), "seconds": time.perf_counter() - start}
    if not runs.is_finished(run_dir):
        message = f"{job.algo} training returned without writing a finished {runs.SUMMARY_FILE} in {run_dir}"
        _write_error(run_dir, message)
        return {"status": "failed", "error": message, "seconds": time.perf_counter() - start}
    reward = summary.get("eval/mean_reward") if isinstance(summary, dict) else None
    return {"status": "finished", "eval/mean_reward": reward, "seconds": time.perf_counter() - start}


def _json_like(value: Any) -> Any:
    """``value`` as config.json holds it (tuples become lists), so a config built now compares with a recorded one."""
    return json.loads(json.dumps(value, default=str))


def _setting_text(value: Any) -> str:
    return json.dumps(value, default=str)


def _override_text(label: str, name: str, value: Any) -> str:
    return f"--override {label}.{name}={value if isinstance(value, str) else _setting_text(value)}"


def _job_arguments(config: CompareConfig, job: Job) -> dict[str, Any]:
    """The keyword arguments the job's worker passes to the train (or resume) function."""
    return {
        "algo": base_algo(job.algo),
        "env_id": job.env_id,
        "seed": job.seed,
        "total_steps": config.steps_for(job.env_id),
        "logdir": str(config.tb_dir),
        "run_name": job.run_name,
        "overrides": overrides_for_seed(config.overrides.get(job.algo, {}), job.seed),
    }


def _invalid_overrides(config: CompareConfig, job: Job, config_fn: ConfigFn, error: Exception) -> str:
    """What to change when ``job``'s config cannot be built: the overrides that fail on their own, else all of the
    entry's overrides (a combination, e.g. batch_size above n_steps * n_envs), else the error alone."""

    def reason(problem: Exception) -> str:
        hint = " (a value of the wrong type for this field)" if isinstance(problem, TypeError) else ""
        return f"{problem}{hint}"

    given = config.overrides.get(job.algo, {})
    arguments = _job_arguments(config, job)
    culprits = []
    for name, value in given.items():
        try:
            config_fn(**{**arguments, "overrides": overrides_for_seed({name: value}, job.seed)})
        except Exception as problem:  # noqa: BLE001 (a probe for the message: whatever fails names the override)
            culprits.append(f"{_override_text(job.algo, name, value)}: {reason(problem)}")
    where = f"{job.algo} on {job.env_id}"
    if culprits:
        return "\n".join(f"  {where}: {culprit}" for culprit in culprits)
    if given:
        together = " ".join(_override_text(job.algo, name, value) for name, value in given.items())
        return f"  {where}: {together} together: {reason(error)}"
    return f"  {where}: {reason(error)}"


def _job_settings(config: CompareConfig, jobs: list[Job], config_fn: ConfigFn) -> dict[Job, dict[str, Any]]:
    """The config each job would train with (JSON-like), built before anything starts, so that an override no
    config accepts fails the command once instead of failing every worker.

    Raises:
        ConfigError: one message listing each (entry, env) whose config cannot be built, with the override to fix.
    """
    settings: dict[Job, dict[str, Any]] = {}
    problems: dict[tuple[str, str], str] = {}
    for job in jobs:
        if (job.algo, job.env_id) in problems:  # one message per entry and env, not per seed
            continue
        try:
            settings[job] = _json_like(config_fn(**_job_arguments(config, job)))
        except (ValueError, TypeError) as error:  # ConfigError is a ValueError
            problems[(job.algo, job.env_id)] = _invalid_overrides(config, job, config_fn, error)
    if problems:
        raise ConfigError(
            "these settings make no valid config; nothing was started, fix or remove them:\n"
            + "\n".join(problems.values())
        )
    return settings


def _differences(run_dir: Path, algo: str, expected: dict[str, Any]) -> list[str]:
    """The settings in which the run in ``run_dir`` differs from ``expected`` (the config this comparison would
    train it with), each as ``field: VALUE in the run, VALUE now``; :data:`IGNORED_SETTINGS` are not compared."""
    try:
        record = runs.read_json(run_dir / runs.CONFIG_FILE)
        recorded = record["config"]
        if not isinstance(recorded, dict):
            raise TypeError
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return [f"its {runs.CONFIG_FILE} is missing or unreadable, so its settings are unknown"]
    found = []
    if record.get("algo") not in (None, algo):
        found.append(f"algo: {record['algo']} in the run, {algo} now")
    missing = object()
    for name in sorted((set(recorded) | set(expected)) - set(IGNORED_SETTINGS)):
        old, new = recorded.get(name, missing), expected.get(name, missing)
        if old != new:
            old_text = "not recorded" if old is missing else _setting_text(old)
            new_text = "not a setting now" if new is missing else _setting_text(new)
            found.append(f"{name}: {old_text} in the run, {new_text} now")
    return found


def _has_checkpoints(run_dir: Path) -> bool:
    folder = run_dir / runs.CHECKPOINT_DIR
    return folder.is_dir() and any(folder.iterdir())


def plan_jobs(
    config: CompareConfig, config_fn: ConfigFn | None = None, resume: bool = True
) -> tuple[list[Job], list[Job]]:
    """Split the comparison's jobs into (to run, already finished), reading the run folders and changing nothing.

    A finished run is kept when its config.json records the settings this comparison would train it with
    (``config_fn``'s config; :data:`IGNORED_SETTINGS` aside). An unfinished run with a usable checkpoint and those
    settings is to run with ``resume=True`` (where ``resume`` and its algorithm allows, :data:`RESUMABLE`); any other
    unfinished run is to train again from scratch.

    Args:
        config: the comparison.
        config_fn: ``config_fn(algo=, env_id=, seed=, total_steps=, logdir=, run_name=, overrides=) -> dict``, the
            config the train function records in config.json for those arguments. Default: :func:`job_config`.
        resume: whether interrupted runs may resume (the caller has a resume function).

    Raises:
        ConfigError: a job's config cannot be built (a bad ``--override``), or a finished run, or an unfinished run
            with checkpoints (which is never deleted unasked), was trained with other settings; the message lists
            each run with the differing fields.
    """
    config_fn = config_fn or job_config
    all_jobs = [
        Job(env_id, algo, seed) for env_id in config.envs for algo in config.algos for seed in range(config.seeds)
    ]
    expected = _job_settings(config, all_jobs, config_fn)
    pending, finished, mismatched = [], [], []
    for job in all_jobs:
        run_dir = config.tb_dir / job.run_name
        if runs.is_finished(run_dir):
            state = "finished"
        elif run_dir.is_dir() and _has_checkpoints(run_dir):
            step = checkpoint_step(run_dir)
            state = "interrupted, with checkpoints" if step is None else f"interrupted at env step {step}"
        else:  # nothing to lose: a failed start, an error, or no folder yet
            pending.append(job)
            continue
        differences = _differences(run_dir, base_algo(job.algo), expected[job])
        if differences:
            mismatched.append(f"  {run_dir} ({state}): " + "; ".join(differences))
        elif state == "finished":
            finished.append(job)
        elif resume and base_algo(job.algo) in RESUMABLE and checkpoint_step(run_dir) is not None:
            pending.append(Job(job.env_id, job.algo, job.seed, resume=True))
        else:
            pending.append(job)
    if mismatched:
        raise ConfigError(
            f"runs in {config.tb_dir} were trained with other settings than this comparison would use:\n"
            + "\n".join(mismatched)
            + "\nchoose another --out, or delete those run folders to train them again with these settings"
        )
    return pending, finished


def run_compare(
    config: CompareConfig,
    train_fn: TrainFn | None = None,
    config_fn: ConfigFn | None = None,
    resume_fn: TrainFn | None = None,
) -> Path:
    """Validate every job's config, run every job that is not finished (resuming interrupted ones from their
    checkpoints), then write and print the report.

    Args:
        config: what to compare.
        train_fn: ``train_fn(algo=, env_id=, seed=, total_steps=, logdir=, run_name=, overrides=) -> summary``;
            it must be a module-level function (workers are spawned and receive it pickled). Default:
            :func:`rlopt.api.run_training`.
        config_fn: the config ``train_fn`` trains (and records) with for the same arguments, as a dict; see
            :func:`plan_jobs`. Default: :func:`job_config`, that of :func:`rlopt.api.run_training`.
        resume_fn: continues the run ``logdir/run_name`` from its checkpoint; same arguments and result as
            ``train_fn``, module-level too. Default: :func:`resume_training` with the default ``train_fn``; with
            another ``train_fn`` and none given, interrupted runs train again from scratch.

    Returns:
        The path of report.md.

    Raises:
        ConfigError: see :func:`plan_jobs`; raised before any folder is written or removed.
    """
    if resume_fn is None and train_fn is None:
        resume_fn = resume_training
    for part in (Path(config.out), *Path(config.out).parents):  # --out (or a folder above it) given as a file
        if part.exists():
            if not part.is_dir():
                raise ConfigError(f"{part} is a file; --out is the comparison's folder (tb/, report.md, plots/)")
            break
    pending, finished = plan_jobs(config, config_fn, resume=resume_fn is not None)
    config.tb_dir.mkdir(parents=True, exist_ok=True)
    for job in finished:
        print(f"skipping finished run {job.run_name}", flush=True)
    for job in pending:
        run_dir = config.tb_dir / job.run_name
        if job.resume:
            # the error of the attempt that stopped would outlive the resumed run and mark it failed in the report
            (run_dir / ERROR_FILE).unlink(missing_ok=True)
            print(f"resuming interrupted run {job.run_name} from env step {checkpoint_step(run_dir)}", flush=True)
        elif run_dir.exists():  # a partial folder from an interrupted or failed attempt would mix into the new run
            shutil.rmtree(run_dir)
    if pending:
        _run_pending(config, pending, train_fn, resume_fn)

    records = load_runs(config.tb_dir, config.score)
    wanted = {job.run_name for job in pending + finished}
    records = [record for record in records if record.run_name in wanted]
    report_path = write_report(
        records, config.out, config.success_threshold, config.reference_algo, success_gain=config.success_gain
    )
    print_report_summary(report_path, config.tb_dir)
    return report_path


def print_report_summary(report_path: Path, tb_dir: Path) -> None:
    """Print the final-performance table of the report just written, its path and the TensorBoard command (what
    ``rlopt compare`` and ``rlopt report`` end with), and the report's caveats."""
    summary = runs.read_json(report_path.parent / runs.SUMMARY_FILE)
    notes = [f"caveat: {note}." for note in summary.get("caveats") or []]
    print(
        "",
        format_table(summary["table"]),
        *notes,
        "",
        f"report: {report_path}",
        f"tensorboard --logdir {tb_dir}",
        sep="\n",
    )


def _budget_warnings(config: CompareConfig, pending: list[Job]) -> list[str]:
    """GRPO's warning that one batch can pass the budget (:func:`rlopt.grpo.budget_warning`), once per GRPO entry
    and env rather than from every worker."""
    from rlopt import api
    from rlopt.grpo import budget_warning
    from rlopt.vector import episode_step_limit

    messages = []
    for env_id, algo in dict.fromkeys((job.env_id, job.algo) for job in pending if base_algo(job.algo) == "grpo"):
        try:
            grpo_config = api.make_config(
                "grpo",
                env_id,
                total_steps=config.steps_for(env_id),
                **overrides_for_seed(config.overrides.get(algo, {}), 0),
            )
            limit = grpo_config.max_episode_steps or episode_step_limit(env_id, grpo_config.env_kwargs)
        except (ConfigError, ValueError):  # the runs themselves will say what is wrong
            continue
        message = budget_warning(grpo_config, limit)
        if message is not None:
            messages.append(f"{algo} on {env_id}: {message}")
    return messages


def _run_pending(
    config: CompareConfig, pending: list[Job], train_fn: TrainFn | None, resume_fn: TrainFn | None = None
) -> None:
    workers = max(1, min(config.jobs, len(pending)))
    torch_threads = config.torch_threads or 1
    options: dict[str, Any] = {"max_workers": workers, "mp_context": multiprocessing.get_context("spawn")}
    if sys.version_info >= (3, 11):
        options["max_tasks_per_child"] = 1  # a fresh process per job: peak RSS and torch state are the job's own
    for message in _budget_warnings(config, pending):
        print(f"rlopt compare: warning: {message}", flush=True)
    print(f"running {len(pending)} jobs on {workers} worker processes", flush=True)
    with ProcessPoolExecutor(**options) as pool:
        futures = {
            pool.submit(
                _run_job,
                train_fn,
                job,
                config.steps_for(job.env_id),
                str(config.tb_dir),
                overrides_for_seed(config.overrides.get(job.algo, {}), job.seed),
                torch_threads,
                resume_fn,
            ): job
            for job in pending
        }
        try:
            for count, future in enumerate(as_completed(futures), start=1):
                job = futures[future]
                try:
                    outcome = future.result()
                except Exception as error:  # noqa: BLE001 (the worker process itself died, e.g. killed for memory)
                    outcome = {"status": "failed", "error": f"worker process died: {error!r}", "seconds": float("nan")}
                    _write_error(config.tb_dir / job.run_name, outcome["error"])
                print(_progress_line(count, len(pending), job, outcome, config.tb_dir), flush=True)
        except KeyboardInterrupt:
            # Stop the workers (a Ctrl-C in a terminal reaches them too, a kill of this process alone does not),
            # then shut the pool down waiting for its manager thread: shutdown(wait=False) with max_tasks_per_child
            # made that thread fail on a process table already cleared, with a TypeError traceback (CPython 3.11).
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)
            print(
                "interrupted: run the same command again to go on (finished runs are kept, interrupted grpo and ppo "
                "runs resume from their latest checkpoint)",
                file=sys.stderr,
                flush=True,
            )
            raise


def _progress_line(count: int, total: int, job: Job, outcome: dict[str, Any], tb_dir: Path) -> str:
    prefix = f"[{count}/{total}] {job.env_id} {job.algo} seed {job.seed}{' (resumed)' if job.resume else ''}"
    if outcome["status"] == "finished":
        reward = outcome.get("eval/mean_reward")
        reward_text = "" if reward is None else f", eval/mean_reward {reward:.4g}"
        return f"{prefix}: finished in {outcome['seconds']:.1f} s{reward_text}"
    return f"{prefix}: FAILED ({outcome['error']}); see {tb_dir / job.run_name / ERROR_FILE}"


# --- command line --------------------------------------------------------------------------------------------------


def _field(name: str) -> Any:
    return next(item for item in fields(CompareConfig) if item.name == name)


def _help(name: str) -> str:
    return _field(name).metadata["help"]


def _default(name: str) -> Any:
    item = _field(name)
    return item.default_factory() if item.default is MISSING else item.default


def _split(values: list[str]) -> list[str]:
    return [item.strip() for value in values for item in value.split(",") if item.strip()]


def add_compare_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``rlopt compare``'s options to ``parser``."""
    parser.add_argument("--env", action="append", required=True, metavar="ID[,ID...]", help=_help("envs"))
    parser.add_argument("--algos", default=",".join(_default("algos")), metavar="A[,A...]", help=_help("algos"))
    parser.add_argument("--seeds", type=int, default=_default("seeds"), metavar="N", help=_help("seeds"))
    parser.add_argument(
        "--total-steps", type=int, default=_default("total_steps"), metavar="S", help=_help("total_steps")
    )
    parser.add_argument(
        "--env-steps",
        action="append",
        default=[],
        metavar="ID=S",
        help="Step budget for one env, overriding --total-steps; repeatable.",
    )
    parser.add_argument("--out", default=_default("out"), metavar="DIR", help=_help("out"))
    parser.add_argument("--jobs", type=int, default=_default("jobs"), metavar="J", help=_help("jobs"))
    parser.add_argument(
        "--torch-threads", type=int, default=_default("torch_threads"), metavar="T", help=_help("torch_threads")
    )
    parser.add_argument(
        "--success-threshold",
        type=float,
        default=_default("success_threshold"),
        metavar="RATE",
        help=_help("success_threshold"),
    )
    parser.add_argument(
        "--success-gain", type=float, default=_default("success_gain"), metavar="GAIN", help=_help("success_gain")
    )
    parser.add_argument(
        "--reference-algo", default=_default("reference_algo"), metavar="ALGO", help=_help("reference_algo")
    )
    parser.add_argument("--score", default=_default("score"), choices=SCORES, help=_help("score"))
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="ALGO.FIELD=VALUE",
        help="Set one config field of one algorithm (VALUE is read as JSON, else as text; {seed} in text becomes "
        "each run's seed); repeatable, e.g. --override sb3_ppo.n_envs=4 --override 'grpo.init=runs/sft-{seed}'",
    )
    return parser


def _parse_override(text: str) -> tuple[str, str, Any]:
    target, separator, raw = text.partition("=")
    algo, dot, name = target.partition(".")
    if not separator or not dot or not algo or not name:
        raise ConfigError(f"--override {text!r} is not ALGO.FIELD=VALUE, e.g. sb3_ppo.n_envs=4")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return algo.strip(), name.strip(), value


def _parse_env_steps(items: list[str]) -> dict[str, int]:
    budgets: dict[str, int] = {}
    for text in items:
        env_id, separator, raw = text.rpartition("=")
        if not separator or not env_id or not raw.strip().isdigit():
            raise ConfigError(f"--env-steps {text!r} is not ID=STEPS, e.g. rlopt/GridGame-DoorKey-5x5-v0=150000")
        budgets[env_id] = int(raw)
    return budgets


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    """A :class:`CompareConfig` from parsed ``rlopt compare`` arguments."""
    overrides: dict[str, dict[str, Any]] = {}
    for text in args.override:
        algo, name, value = _parse_override(text)
        overrides.setdefault(algo, {})[name] = value
    return CompareConfig(
        envs=_split(args.env),
        algos=_split([args.algos]),
        seeds=args.seeds,
        total_steps=args.total_steps,
        env_steps=_parse_env_steps(getattr(args, "env_steps", [])),
        out=args.out,
        jobs=args.jobs,
        torch_threads=args.torch_threads,
        overrides=overrides,
        success_threshold=args.success_threshold,
        success_gain=args.success_gain,
        reference_algo=args.reference_algo,
        score=args.score,
    )


def compare_main(
    args: argparse.Namespace,
    train_fn: TrainFn | None = None,
    config_fn: ConfigFn | None = None,
    resume_fn: TrainFn | None = None,
) -> int:
    """Run ``rlopt compare`` (the functions as in :func:`run_compare`); exit status 0 when every run finished, 1 when
    any failed (the report is written either way)."""
    config = config_from_args(args)
    run_compare(config, train_fn, config_fn, resume_fn)
    summary = runs.read_json(Path(config.out) / runs.SUMMARY_FILE)
    return 0 if all(run["status"] == "finished" for run in summary["runs"]) else 1


# --- rlopt report: the report again, from the runs on disk ---------------------------------------------------------

#: the report settings ``rlopt report`` takes, each defaulting to the earlier report's value, else compare's default
REPORT_SETTINGS = ("success_threshold", "success_gain", "score", "reference_algo")


def _success_rate(text: str) -> float:
    """argparse type of ``rlopt report --success-threshold``: a finite success rate in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a success rate from 0 to 1 such as 0.5, got {text!r}")
    return value


def add_report_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add ``rlopt report``'s arguments to ``parser``."""
    earlier = "Default: the value in the report already in the comparison folder, else {}."
    parser.add_argument(
        "runs_dir",
        metavar="RUNS_DIR",
        help=f"The --out folder of `rlopt compare` (its runs are under {TB_DIR}/), that {TB_DIR}/ folder itself, or "
        "any folder of run folders such as the --logdir of `rlopt train`.",
    )
    parser.add_argument(
        "--success-threshold",
        type=_success_rate,
        default=None,
        metavar="RATE",
        help=f"{_help('success_threshold')} {earlier.format(_default('success_threshold'))}",
    )
    parser.add_argument(
        "--success-gain",
        type=_success_rate,
        default=None,
        metavar="GAIN",
        help=f"{_help('success_gain')} {earlier.format(_default('success_gain'))} A --success-threshold given "
        "without --success-gain sets it to 0.",
    )
    parser.add_argument(
        "--score",
        choices=SCORES,
        default=None,
        help=f"{_help('score')} {earlier.format(_default('score'))}",
    )
    parser.add_argument(
        "--reference-algo",
        default=None,
        metavar="ALGO",
        help=f"{_help('reference_algo')} {earlier.format(_default('reference_algo'))}",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"Folder for report.md, plots/ and summary.json (default: the comparison folder, i.e. RUNS_DIR, or its "
        f"parent when RUNS_DIR is a {TB_DIR}/ folder: the report `rlopt compare` wrote there is replaced; give another "
        "folder to keep it).",
    )
    return parser


def report_folders(runs_dir: str | Path) -> tuple[Path, Path]:
    """(folder of run folders to read, comparison folder) of ``rlopt report RUNS_DIR``.

    A user naturally passes what ``rlopt compare --out`` named, so a folder holding ``tb/`` is read through its
    ``tb/``; a ``tb/`` folder itself belongs to the comparison folder above it; any other folder is both.

    Raises:
        FileNotFoundError: ``runs_dir`` is missing or not a folder.
    """
    path = Path(runs_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; pass the --out folder of an `rlopt compare` run")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is a file; pass the --out folder of an `rlopt compare` run")
    if (path / TB_DIR).is_dir():
        return path / TB_DIR, path
    if path.name == TB_DIR:
        return path, path.parent
    return path, path


def earlier_report_settings(folder: str | Path) -> dict[str, Any]:
    """The :data:`REPORT_SETTINGS` recorded in the summary.json of the report already in ``folder``, so that
    re-making it changes only what the user asks for (a comparison run with ``--score eval/success_rate`` stays
    ranked by success). A report from before summary.json recorded its score gets the score its table's means were
    taken of (:func:`_score_of_table`). Settings missing, invalid, or with no report there are left out."""
    path = Path(folder) / runs.SUMMARY_FILE
    try:
        payload = runs.read_json(path) if path.is_file() else None
    except ValueError:  # a corrupt summary.json: write_report replaces it
        payload = None
    if not isinstance(payload, dict) or "table" not in payload:  # none, or one run's summary rather than a report's
        return {}
    found: dict[str, Any] = {}
    threshold = payload.get("success_threshold")
    if isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0.0 <= threshold <= 1.0:
        found["success_threshold"] = float(threshold)
    if payload.get("score") in SCORES:
        found["score"] = payload["score"]
    else:  # a report from before summary.json recorded its score: the one its table's means were taken of
        inferred = _score_of_table(payload)
        if inferred is not None:
            found["score"] = inferred
    gain = payload.get("success_gain")
    if isinstance(gain, (int, float)) and not isinstance(gain, bool) and 0.0 <= gain <= 1.0:
        found["success_gain"] = float(gain)
    if isinstance(payload.get("reference_algo"), str) and payload["reference_algo"]:
        found["reference_algo"] = payload["reference_algo"]
    return found


def _score_of_table(payload: dict[str, Any]) -> str | None:
    """The score a report's table was computed from, read back from its numbers: the one of :data:`SCORES` whose
    mean over each row's finished runs (their summaries, recorded beside the table) is that row's ``mean``, in every
    row with a finished run. None when no score, or more than one, fits (e.g. an empty table)."""
    table, recorded = payload.get("table"), payload.get("runs")
    if not isinstance(table, list) or not isinstance(recorded, list):
        return None
    fits = set(SCORES)
    for row in table:
        if not isinstance(row, dict) or not isinstance(row.get("mean"), (int, float)):
            continue
        summaries = [
            run.get("summary") or {}
            for run in recorded
            if isinstance(run, dict)
            and run.get("status") == "finished"
            and run.get("algo") == row.get("algo")
            and run.get("env_id") == row.get("env_id")
        ]
        if not summaries:  # a row whose runs all failed tells nothing
            continue
        for score in list(fits):
            values = [summary.get(score) for summary in summaries]
            if not values or not all(isinstance(value, (int, float)) for value in values):
                fits.discard(score)
            elif not math.isclose(sum(values) / len(values), float(row["mean"]), rel_tol=1e-6, abs_tol=1e-9):
                fits.discard(score)
    return fits.pop() if len(fits) == 1 else None


def _no_runs_message(tb_dir: Path) -> str:
    message = (
        f"no runs found in {tb_dir}: expected run folders such as CartPole-v1__grpo__0/ holding config.json, "
        f"summary.json, error.txt or TensorBoard event files, as `rlopt compare --out DIR` writes under DIR/{TB_DIR}/"
    )
    if (tb_dir / runs.CONFIG_FILE).is_file() or any(tb_dir.glob("events.out.tfevents.*")):
        message += f"; {tb_dir} looks like a single run's folder, so pass the folder above it"
    return message


def report_main(args: argparse.Namespace) -> int:
    """Run ``rlopt report``: write report.md, plots/ and summary.json again from the runs under ``args.runs_dir``,
    without training; settings not given are the earlier report's, else compare's defaults. Prints which settings
    it used and where they came from, then the table and the report's path as ``rlopt compare`` does.

    Returns:
        0; failed and unfinished runs are listed in the report, as compare lists them.

    Raises:
        FileNotFoundError: ``args.runs_dir`` is missing or not a folder.
        ConfigError: no runs in it, or a reference algorithm that none of them is.
    """
    tb_dir, folder = report_folders(args.runs_dir)
    earlier = earlier_report_settings(folder)
    settings: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name in REPORT_SETTINGS:
        given = getattr(args, name)
        if name == "success_gain" and given is None and args.success_threshold is not None:
            # an absolute threshold asked for: an earlier report's gain would leave it unused
            settings[name], origins[name] = 0.0, "--success-threshold given"
        elif given is not None:
            settings[name], origins[name] = given, "given"
        elif name in earlier:
            settings[name], origins[name] = earlier[name], f"from {folder / runs.SUMMARY_FILE}"
        else:
            settings[name], origins[name] = _default(name), "compare's default"
            if earlier:  # a report from before summary.json recorded this setting
                origins[name] += f"; {folder / runs.SUMMARY_FILE} does not record it, pass --{name.replace('_', '-')}"
    records = load_runs(tb_dir, settings["score"])
    if not records:
        raise ConfigError(_no_runs_message(tb_dir))
    algos = list(dict.fromkeys(record.algo for record in records))
    if settings["reference_algo"] not in ALGOS and settings["reference_algo"] not in algos:
        raise ConfigError(
            f"reference algo {settings['reference_algo']!r} is not accepted; choose from {', '.join(ALGOS)} or the "
            f"runs' entries {', '.join(algos)}"
        )
    print(f"{len(records)} runs in {tb_dir}", flush=True)
    for name in REPORT_SETTINGS:
        print(f"  {name.replace('_', ' ')}: {settings[name]} ({origins[name]})")
    out = Path(args.out) if args.out is not None else folder
    report_path = write_report(
        records, out, settings["success_threshold"], settings["reference_algo"], success_gain=settings["success_gain"]
    )
    print_report_summary(report_path, tb_dir)
    return 0

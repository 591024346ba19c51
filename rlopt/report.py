"""The comparison report: read run folders, aggregate final scores over seeds, draw learning curves, and write
``report.md``, PNG plots and ``summary.json``.

Each run folder (see :mod:`rlopt.runs`) gives its ``config.json``, ``summary.json`` (final evaluation, speed,
memory, hyperparameters), an ``error.txt`` when the job failed, and the TensorBoard scalars. Final scores are the
summaries' ``eval/mean_reward`` (deterministic, held-out seeds); statistics are in :mod:`rlopt.stats`.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rlopt import runs, stats

ERROR_FILE = "error.txt"
REPORT_FILE = "report.md"
PLOT_DIR = "plots"
EVAL_REWARD = "eval/mean_reward"
EVAL_SUCCESS = "eval/success_rate"
# What a run's final score can be: its last evaluation's mean reward, or its success rate (the fair score when the
# compared entries are trained on different reward definitions, e.g. GRPO with and without a process reward).
SCORES = (EVAL_REWARD, EVAL_SUCCESS)
ROLLOUT_REWARD = "rollout/ep_rew_mean"
SUCCESS_TAGS = ("eval/success_rate", "rollout/success_rate")
UPDATE_TAG = "train/loss"  # logged once per optimisation phase by every trainer: counts updates to a threshold
#: the threshold columns, in the order of :func:`_threshold_crossing`'s tuple
THRESHOLD_KEYS = ("steps_to_threshold", "seconds_to_threshold", "updates_to_threshold")
ALGO_ORDER = ("grpo", "ppo", "sb3_ppo", "distill")
IMPLEMENTATIONS = {"rlopt": "rlopt (own)", "stable-baselines3": "stable-baselines3"}
CURVE_POINTS = 100
# Recorded hyperparameters that name the run rather than the algorithm; seeds sharing the rest are listed together.
RUN_SPECIFIC_KEYS = frozenset({"seed", "run_name", "logdir", "progress"})


@dataclass
class ScalarCurve:
    """One TensorBoard scalar tag of one run, in logging order."""

    steps: np.ndarray  # (S,) env steps
    wall_times: np.ndarray  # (S,) seconds since the epoch
    values: np.ndarray  # (S,)


@dataclass
class RunRecord:
    """What one run folder holds."""

    run_name: str
    run_dir: Path
    env_id: str
    algo: str
    seed: int
    config: dict[str, Any] | None = None
    summary: dict[str, Any] | None = None
    curves: dict[str, ScalarCurve] = field(default_factory=dict)
    start_time: float | None = None  # wall time (epoch seconds) at which the run's clock started
    error: str | None = None
    score_tag: str = EVAL_REWARD  # which summary value is the run's final score (one of SCORES)

    @property
    def finished(self) -> bool:
        return bool(self.summary and self.summary.get("finished"))

    @property
    def status(self) -> str:
        """``finished``, ``failed`` (an error was recorded) or ``unfinished`` (stopped without a summary)."""
        if self.finished:
            return "finished"
        return "failed" if self.error else "unfinished"

    @property
    def final_score(self) -> float | None:
        """The summary's final ``score_tag`` value; None when missing or not finite (a diverged run has no score)."""
        value = self.summary.get(self.score_tag) if self.summary else None
        return float(value) if value is not None and math.isfinite(float(value)) else None


# --- loading -------------------------------------------------------------------------------------------------------


def _read_optional_json(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    if not path.exists():
        return None, None
    try:
        payload = runs.read_json(path)
    except ValueError as error:
        return None, str(error)
    if not isinstance(payload, dict):
        return None, f"{path} holds {type(payload).__name__}, not a JSON object"
    return payload, None


def _read_scalars(run_dir: Path) -> tuple[dict[str, ScalarCurve], float | None]:
    # Imported here: tensorboard and matplotlib take seconds to import, and compare's worker processes (which
    # import this module for its constants) never need them.
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    accumulator = EventAccumulator(str(run_dir), size_guidance={SCALARS: 0})
    # a resumed run's file starts with a purge of the events logged after its checkpoint (rlopt.session); TensorBoard
    # announces each purge as "out of order event.step ... caused by a TensorFlow restart", which is expected here
    tensorboard_logger = logging.getLogger("tensorboard")
    level = tensorboard_logger.level
    tensorboard_logger.setLevel(logging.ERROR)
    try:
        accumulator.Reload()
    finally:
        tensorboard_logger.setLevel(level)
    curves = {}
    for tag in accumulator.Tags().get("scalars", []):
        events = accumulator.Scalars(tag)
        curves[tag] = ScalarCurve(
            steps=np.array([event.step for event in events], dtype=np.float64),
            wall_times=np.array([event.wall_time for event in events], dtype=np.float64),
            values=np.array([event.value for event in events], dtype=np.float64),
        )
    try:
        start = float(accumulator.FirstEventTimestamp())
    except ValueError:  # no events at all
        start = None
    return curves, start


def _clock_origin(curves: dict[str, ScalarCurve], summary: dict | None, first_event: float | None) -> float | None:
    """When the run's clock started. Trainers open their event files at different points of their setup, so the
    first event is a poor common origin; a finished run's last event (its final evaluation, logged just before
    summary.json) minus the summary's wall_clock_seconds is the start as the trainer itself counted it."""
    seconds = summary.get("wall_clock_seconds") if summary else None
    if seconds is not None and math.isfinite(float(seconds)) and curves:
        return max(float(curve.wall_times.max()) for curve in curves.values() if curve.wall_times.size) - float(seconds)
    return first_event


def _identity(name: str, config: dict | None, summary: dict | None) -> tuple[str, str, int] | None:
    parts = name.split("__")
    for source in (config, summary):
        if source and {"env_id", "algo", "seed"} <= set(source):
            algo = str(source["algo"])
            # rlopt compare names a variant's folders <env>__<algo>@<name>__<seed>; the JSON knows only the algo
            if len(parts) >= 3 and parts[1].startswith(algo + "@"):
                algo = parts[1]
            return str(source["env_id"]), algo, int(source["seed"])
    # No JSON to go by (the job failed before writing config.json): <env slug>__<algo>__<seed>[__<time>].
    if len(parts) >= 3 and parts[2].isdigit():
        return parts[0], parts[1], int(parts[2])
    return None


def load_runs(tb_dir: str | Path, score: str = EVAL_REWARD) -> list[RunRecord]:
    """Read every run folder directly under ``tb_dir``; ``score`` (one of :data:`SCORES`) is each run's final score.

    Folders with none of config.json, summary.json, error.txt or event files are ignored. A run whose folder has no
    config.json is identified by its ``<env>__<algo>__<seed>`` name, the env slug mapped back to the id that other
    runs report.

    Returns:
        Records sorted by (env, algo order, seed).
    """
    if score not in SCORES:
        raise ValueError(f"score={score!r} is not accepted; choose from {', '.join(SCORES)}")
    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir():
        raise FileNotFoundError(f"{tb_dir} is not a folder of run folders")
    records = []
    for run_dir in sorted(path for path in tb_dir.iterdir() if path.is_dir() and not path.name.startswith(".")):
        config, config_problem = _read_optional_json(run_dir / runs.CONFIG_FILE)
        summary, summary_problem = _read_optional_json(run_dir / runs.SUMMARY_FILE)
        error_path = run_dir / ERROR_FILE
        error = error_path.read_text(encoding="utf-8", errors="replace").strip() if error_path.exists() else None
        error = error or summary_problem or config_problem
        has_events = any(run_dir.glob("events.out.tfevents.*"))
        if config is None and summary is None and error is None and not has_events:
            continue
        identity = _identity(run_dir.name, config, summary)
        if identity is None:
            warnings.warn(f"skipping {run_dir}: no config.json and its name is not <env>__<algo>__<seed>", stacklevel=2)
            continue
        curves, start = _read_scalars(run_dir) if has_events else ({}, None)
        start = _clock_origin(curves, summary, start)
        env_id, algo, seed = identity
        records.append(
            RunRecord(run_dir.name, run_dir, env_id, algo, seed, config, summary, curves, start, error, score)
        )
    known = {runs.env_slug(record.env_id): record.env_id for record in records if record.config or record.summary}
    if any(record.env_id not in known for record in records if not (record.config or record.summary)):
        import gymnasium as gym

        import envs  # noqa: F401  (registers the rlopt/... ids)

        registered = {runs.env_slug(env_id): env_id for env_id in gym.registry}
        known = {**registered, **known}  # a run that failed before writing config.json: its id from the registry
    for record in records:
        record.env_id = known.get(record.env_id, record.env_id)
    return sorted(records, key=lambda record: (record.env_id, _algo_rank(record.algo), record.algo, record.seed))


def _algo_rank(algo: str) -> int:
    base = algo.partition("@")[0]  # a compare variant ALGO@NAME sorts after its algorithm
    return ALGO_ORDER.index(base) if base in ALGO_ORDER else len(ALGO_ORDER)


# --- analysis ------------------------------------------------------------------------------------------------------


def _unique(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _ordered_algos(records: Sequence[RunRecord]) -> list[str]:
    return sorted(_unique(record.algo for record in records), key=lambda algo: (_algo_rank(algo), algo))


def _success_curve(record: RunRecord) -> ScalarCurve | None:
    for tag in SUCCESS_TAGS:
        if tag in record.curves and record.curves[tag].steps.size:
            return record.curves[tag]
    return None


def start_success(record: RunRecord) -> float | None:
    """The run's success rate at env step 0: its ``eval/success_rate`` there (``eval_on_start``), else None."""
    curve = record.curves.get(SUCCESS_TAGS[0])
    if curve is None or not curve.steps.size:
        return None
    at_start = np.flatnonzero(curve.steps == 0)
    return float(curve.values[at_start[-1]]) if at_start.size else None


def _threshold_crossing(record: RunRecord, threshold: float, gain: float = 0.0) -> tuple[float, float, float] | None:
    """(env steps, seconds since the run started, updates) at the first success-rate point >= threshold, or with
    ``gain`` > 0 at the first point >= the run's own step-0 success plus ``gain`` (None without a step-0
    evaluation). Updates are the ``train/loss`` points logged up to that env step (one per optimisation phase: a
    GRPO update, a PPO rollout's epochs); infinite when the run logged none."""
    curve = _success_curve(record)
    if curve is None:
        return None
    if gain > 0:
        start = start_success(record)
        if start is None:
            return None
        # success rates are fractions of the evaluation episodes: k / n + gain lands on a rate only up to rounding
        threshold = start + gain - 1e-9
    step = stats.steps_to_threshold(curve.steps, curve.values, threshold)
    if step is None:
        return None
    index = int(np.flatnonzero((curve.steps == step) & (curve.values >= threshold))[0])
    origin = record.start_time if record.start_time is not None else float(curve.wall_times.min())
    losses = record.curves.get(UPDATE_TAG)
    updates = float(np.count_nonzero(losses.steps <= step)) if losses is not None and losses.steps.size else math.inf
    return step, float(curve.wall_times[index] - origin), updates


def _median_or_none(values: list[float]) -> float | None:
    """Median where a missing value counts as never (infinite); None when the median itself is never."""
    if not values:
        return None
    median = float(np.median(values))
    return None if math.isinf(median) else median


#: a distillation run's summary keys for its teacher -> the table row's names for their means over the runs
TEACHER_KEYS = {
    "teacher/eval/mean_reward": "teacher_mean_reward",
    "teacher/eval/success_rate": "teacher_success_rate",
    "teacher/num_parameters": "teacher_num_parameters",
}


def _summary_values(records: Sequence[RunRecord], key: str) -> list[float]:
    """The finite values of ``key`` in the runs' summaries (missing, null and NaN are left out)."""
    values = [record.summary.get(key) for record in records if record.summary]
    return [float(value) for value in values if value is not None and math.isfinite(float(value))]


def _implementation(records: Sequence[RunRecord]) -> str:
    names = _unique(str(record.summary.get("baseline", "?")) for record in records if record.summary)
    return ", ".join(IMPLEMENTATIONS.get(name, name) for name in names) or "?"


def build_table(
    records: Sequence[RunRecord],
    success_threshold: float = 0.9,
    reps: int = 2000,
    seed: int = 0,
    success_gain: float = 0.0,
) -> list[dict[str, Any]]:
    """One row per (env, algo): final-score IQM with its 95% stratified-bootstrap interval, mean, std, success
    rate, steps, seconds and updates to the success threshold (median over seeds; with ``success_gain`` > 0 each
    run's threshold is its step-0 success plus the gain), speed, memory and parameters."""
    rows = []
    for env_id in _unique(record.env_id for record in records):
        env_records = [record for record in records if record.env_id == env_id]
        for algo in _ordered_algos(env_records):
            group = [record for record in env_records if record.algo == algo]
            done = [record for record in group if record.finished and record.final_score is not None]
            scores = np.array([record.final_score for record in done], dtype=np.float64)
            row: dict[str, Any] = {
                "env_id": env_id,
                "algo": algo,
                "implementation": _implementation(done),
                "seeds_finished": len(done),
                "seeds_total": len(group),
                "iqm": None,
                "iqm_low": None,
                "iqm_high": None,
                "mean": float(scores.mean()) if done else None,
                "std": float(scores.std(ddof=1)) if len(done) > 1 else (0.0 if done else None),
            }
            if done:
                row["iqm"], row["iqm_low"], row["iqm_high"] = stats.iqm_ci(
                    {algo: scores[:, None]}, reps=reps, seed=seed
                )[algo]
            successes = _summary_values(done, "eval/success_rate")
            row["success_rate"] = float(np.mean(successes)) if successes else None
            row["success_median"] = float(np.median(successes)) if successes else None
            row["success_per_seed"] = [float(value) for value in successes]
            with_signal = [record for record in done if _success_curve(record) is not None]
            crossings = [_threshold_crossing(record, success_threshold, success_gain) for record in with_signal]
            row["success_signal"] = bool(with_signal)
            starts = [start_success(record) for record in with_signal]
            row["success_start_per_seed"] = starts
            row["seeds_without_start"] = sum(start is None for start in starts) if success_gain > 0 else 0
            row["seeds_reached"] = sum(crossing is not None for crossing in crossings)
            for position, key in enumerate(THRESHOLD_KEYS):
                per_seed = [c[position] if c else math.inf for c in crossings]
                row[key] = _median_or_none(per_seed)
                # each seed's own value (None = never), in seed order, for the report's brackets
                row[f"{key}_per_seed"] = [None if math.isinf(value) else value for value in per_seed]
            speeds = _summary_values(done, "steps_per_second")
            row["steps_per_second"] = float(np.mean(speeds)) if speeds else None
            memory = _summary_values(done, "peak_rss_mb")
            row["peak_rss_mb"] = max(memory) if memory else None
            parameters = _summary_values(done, "num_parameters")
            row["num_parameters"] = int(np.median(parameters)) if parameters else None
            env_steps = _summary_values(done, "env_steps")
            row["env_steps"] = float(np.mean(env_steps)) if env_steps else None
            teachers = _unique(str(record.summary["teacher"]) for record in done if record.summary.get("teacher"))
            if teachers:  # a distillation row: how good, and how big, the teachers were (their own evaluation)
                row["teachers"] = teachers
                for key, name in TEACHER_KEYS.items():
                    values = _summary_values(done, key)
                    row[name] = float(np.mean(values)) if values else None
            rows.append(row)
    return rows


def _scores_by_seed(records: Sequence[RunRecord], env_id: str, algo: str) -> dict[int, float]:
    return {
        record.seed: float(record.final_score)
        for record in records
        if record.env_id == env_id and record.algo == algo and record.finished and record.final_score is not None
    }


def improvement_table(
    records: Sequence[RunRecord], reference_algo: str, reps: int = 2000, seed: int = 0
) -> list[dict[str, Any]]:
    """P(reference beats each other algo) per env and, over several envs, across all of them (tasks = envs, using
    the seeds each algorithm finished on every env)."""
    env_ids = _unique(record.env_id for record in records)
    rows = []
    for other in _ordered_algos(records):
        if other == reference_algo:
            continue
        for env_id in env_ids:
            x = _scores_by_seed(records, env_id, reference_algo)
            y = _scores_by_seed(records, env_id, other)
            if x and y:
                point, low, high = stats.probability_of_improvement(
                    np.array(list(x.values()))[:, None], np.array(list(y.values()))[:, None], reps=reps, seed=seed
                )
                rows.append(_improvement_row(reference_algo, other, env_id, len(x), len(y), point, low, high))
        if len(env_ids) > 1:
            x_matrix = _seed_matrix(records, env_ids, reference_algo)
            y_matrix = _seed_matrix(records, env_ids, other)
            if x_matrix is not None and y_matrix is not None:
                point, low, high = stats.probability_of_improvement(x_matrix, y_matrix, reps=reps, seed=seed)
                rows.append(
                    _improvement_row(reference_algo, other, "all envs", len(x_matrix), len(y_matrix), point, low, high)
                )
    return rows


def _improvement_row(x: str, y: str, env: str, runs_x: int, runs_y: int, point: float, low: float, high: float):
    return {"env_id": env, "x": x, "y": y, "runs_x": runs_x, "runs_y": runs_y, "p": point, "low": low, "high": high}


def _seed_matrix(records: Sequence[RunRecord], env_ids: list[str], algo: str) -> np.ndarray | None:
    """``(R, K)`` final scores over the seeds ``algo`` finished on every env, or None when there are none."""
    per_env = [_scores_by_seed(records, env_id, algo) for env_id in env_ids]
    common = sorted(set.intersection(*(set(scores) for scores in per_env)))
    if not common:
        return None
    return np.array([[scores[seed] for scores in per_env] for seed in common])


# --- plots ---------------------------------------------------------------------------------------------------------


def _algo_colors(algos: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {algo: palette(index % 10) for index, algo in enumerate(algos)}


def _score_name(records: Sequence[RunRecord]) -> str:
    """``reward`` or ``success``: the word for the final score in titles and headers."""
    return "success" if records and records[0].score_tag == EVAL_SUCCESS else "reward"


def _reward_tag(group: Sequence[RunRecord]) -> str | None:
    """The score's eval curve when every run logged it, else its rollout counterpart when every run did."""
    primary = group[0].score_tag if group else EVAL_REWARD
    fallback = ROLLOUT_REWARD if primary == EVAL_REWARD else "rollout/success_rate"
    for tag in (primary, fallback):
        if group and all(tag in record.curves and record.curves[tag].steps.size for record in group):
            return tag
    return None


def _band_on_grid(xs: list[np.ndarray], ys: list[np.ndarray], reps: int, seed: int):
    lowest = max(x.min() for x in xs)  # every run has a value from here on
    highest = max(x.max() for x in xs)
    grid = np.linspace(lowest, highest, CURVE_POINTS) if highest > lowest else np.array([lowest])
    curves = np.stack([stats.resample_curve(x, y, grid) for x, y in zip(xs, ys, strict=True)])
    mean, low, high = stats.bootstrap_band(curves, reps=reps, seed=seed)
    return grid, mean, low, high


def plot_learning_curves(
    records: Sequence[RunRecord], env_id: str, path: Path, colors: dict[str, Any], reps: int = 1000, seed: int = 0
) -> Path | None:
    """Mean reward vs env steps and vs wall-clock seconds, mean over seeds with a 95% bootstrap band per algo."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(12, 4.5), layout="constrained")
    by_steps, by_time = figure.subplots(1, 2)
    drawn = False
    tags = set()
    for algo in _ordered_algos(records):
        group = [record for record in records if record.env_id == env_id and record.algo == algo and record.finished]
        tag = _reward_tag(group)
        if tag is None:
            continue
        tags.add(tag)
        label = f"{algo} (n={len(group)})" + ("" if tag.startswith("eval/") else " [rollout]")
        curves = [record.curves[tag] for record in group]
        origins = [
            record.start_time if record.start_time is not None else curve.wall_times.min()
            for record, curve in zip(group, curves, strict=True)
        ]
        axes_inputs = (
            (by_steps, [curve.steps for curve in curves]),
            (by_time, [curve.wall_times - origin for curve, origin in zip(curves, origins, strict=True)]),
        )
        for axes, xs in axes_inputs:
            # Each seed whole and thin; the mean and band only where every seed has a value.
            for x, curve in zip(xs, curves, strict=True):
                axes.step(x, curve.values, where="post", color=colors[algo], alpha=0.35, linewidth=0.7)
            grid, mean, low, high = _band_on_grid(xs, [curve.values for curve in curves], reps, seed)
            axes.plot(grid, mean, color=colors[algo], linewidth=2.0, label=label)
            axes.fill_between(grid, low, high, color=colors[algo], alpha=0.2, linewidth=0)
        drawn = True
    if not drawn:
        return None
    ylabel = " / ".join(sorted(tags))
    name = _score_name(records)
    by_steps.set(xlabel="environment steps", ylabel=ylabel, title=f"{env_id}: {name} vs env steps")
    by_time.set(xlabel="wall-clock seconds", ylabel=ylabel, title=f"{env_id}: {name} vs wall-clock")
    for axes in (by_steps, by_time):
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize="small")
    figure.savefig(path, dpi=110)
    return path


def plot_final_scores(rows: Sequence[dict[str, Any]], records: Sequence[RunRecord], path: Path, colors) -> Path | None:
    """Per env: each algorithm's final scores per seed (dots) and IQM with its 95% interval (bar)."""
    from matplotlib.figure import Figure

    env_ids = _unique(row["env_id"] for row in rows if row["iqm"] is not None)
    if not env_ids:
        return None
    figure = Figure(figsize=(5 * len(env_ids), 0.9 + 0.6 * len(colors)), layout="constrained")
    axes_row = figure.subplots(1, len(env_ids), squeeze=False)[0]
    for axes, env_id in zip(axes_row, env_ids, strict=True):
        env_rows = [row for row in rows if row["env_id"] == env_id and row["iqm"] is not None]
        for position, row in enumerate(env_rows):
            color = colors[row["algo"]]
            axes.errorbar(
                row["iqm"],
                position,
                xerr=[[row["iqm"] - row["iqm_low"]], [row["iqm_high"] - row["iqm"]]],
                fmt="s",
                color=color,
                capsize=4,
                markersize=7,
            )
            scores = list(_scores_by_seed(records, env_id, row["algo"]).values())
            axes.scatter(scores, np.full(len(scores), position + 0.18), color=color, alpha=0.6, s=14)
        axes.set_yticks(range(len(env_rows)), [row["algo"] for row in env_rows])
        axes.invert_yaxis()  # first algorithm on top
        axes.set(title=env_id, xlabel="final eval/mean_reward (IQM, 95% CI)")
        axes.grid(alpha=0.3, axis="x")
    figure.savefig(path, dpi=110)
    return path


# --- writing -------------------------------------------------------------------------------------------------------


def _number(value: float | None, empty: str = "–") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return empty
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _threshold_cell(row: dict[str, Any], key: str) -> str:
    """Median over seeds (never counts as never), how many seeds reached it, then each seed's value."""
    if not row["success_signal"]:
        return "n/a (no success signal)"
    value = row[key]
    missing = row.get("seeds_without_start", 0)
    if missing and missing == len(row[f"{key}_per_seed"]):
        return "n/a (no evaluation at step 0: train with eval_on_start)"
    reached = f"{row['seeds_reached']}/{row['seeds_finished']} seeds"
    if missing:
        reached += f", {missing} without a step-0 evaluation"
    seeds = ", ".join("–" if each is None else _number(each) for each in row[f"{key}_per_seed"])
    return (f"not reached ({reached})" if value is None else f"{_number(value)} ({reached})") + f" [{seeds}]"


def _iqm_cell(row: dict[str, Any]) -> str:
    if row["iqm"] is None:
        return "–"
    return f"{_number(row['iqm'])} [{_number(row['iqm_low'])}, {_number(row['iqm_high'])}]"


def _markdown_table(header: Sequence[str], body: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |" for cells in body]
    return lines


def _success_cell(row: dict[str, Any]) -> str:
    if row.get("success_rate") is None:
        return "–"
    seeds = ", ".join(_rate(value) for value in row["success_per_seed"])
    return f"{_rate(row['success_rate'])}, {_rate(row['success_median'])} [{seeds}]"


def threshold_text(threshold: float, gain: float = 0.0) -> str:
    """The success level the threshold columns are read at: ``0.9``, or ``start + 0.05`` with a gain."""
    return f"start + {gain:g}" if gain > 0 else f"{threshold:g}"


def _env_section(
    env_id: str, rows, improvements, plot: Path | None, out_dir: Path, threshold: str, score_name: str = "reward"
) -> list[str]:
    lines = [f"## {env_id}", ""]
    if plot is not None:
        lines += [f"![learning curves on {env_id}]({plot.relative_to(out_dir).as_posix()})", ""]
    header = (
        "algo",
        "implementation",
        "seeds",
        f"final {score_name} IQM [95% CI]",
        "mean ± std",
        "success rate: mean, median [per seed]",
        f"env steps to success ≥ {threshold} [per seed]",
        f"seconds to success ≥ {threshold} [per seed]",
        f"updates to success ≥ {threshold} [per seed]",
        "env steps trained (mean)",
        "steps/s",
        "peak RSS (MiB)",
        "parameters",
    )
    body = [
        (
            row["algo"],
            row["implementation"],
            f"{row['seeds_finished']}/{row['seeds_total']}",
            _iqm_cell(row),
            "–" if row["mean"] is None else f"{_number(row['mean'])} ± {_number(row['std'])}",
            _success_cell(row),
            _threshold_cell(row, "steps_to_threshold"),
            _threshold_cell(row, "seconds_to_threshold"),
            _threshold_cell(row, "updates_to_threshold"),
            _number(row["env_steps"]),
            _number(row["steps_per_second"]),
            _number(row["peak_rss_mb"]),
            _number(row["num_parameters"]),
        )
        for row in rows
    ]
    lines += _markdown_table(header, body) + [""]
    for row in rows:
        if row.get("teachers"):
            lines += [
                f"Teacher of `{row['algo']}` ({', '.join(f'`{teacher}`' for teacher in row['teachers'])}), evaluated "
                f"by each run on its held-out seeds, mean over the runs: reward {_number(row['teacher_mean_reward'])}, "
                f"success {_rate(row['teacher_success_rate'])}, {_number(row['teacher_num_parameters'])} parameters.",
                "",
            ]
    env_improvements = [row for row in improvements if row["env_id"] == env_id]
    if env_improvements:
        lines += ["Probability of improvement (a run of X scores higher than a run of Y; ties count half):", ""]
        lines += _markdown_table(
            ("X", "Y", "P(X > Y) [95% CI]", "runs X / Y"),
            (
                (
                    row["x"],
                    row["y"],
                    f"{row['p']:.2f} [{row['low']:.2f}, {row['high']:.2f}]",
                    f"{row['runs_x']} / {row['runs_y']}",
                )
                for row in env_improvements
            ),
        )
        lines.append("")
    return lines


def _hyperparameter_lines(records: Sequence[RunRecord]) -> list[str]:
    lines = [
        "## Which algorithm each row is",
        "",
        "`ppo` is rlopt's own PPO, `sb3_ppo` is stable-baselines3's PPO run through rlopt's adapter, `grpo` is "
        "rlopt's critic-free GRPO, `distill` is a student trained by rlopt's policy distillation to match the teacher "
        "named in its settings (no reward; the teacher's own scores are under the table); `ALGO@NAME` is a variant "
        "of ALGO with the settings listed for it. "
        "Hyperparameters as each run recorded them in its summary.json:",
        "",
    ]
    for algo in _ordered_algos(records):
        for env_id in _unique(record.env_id for record in records):
            group = [record for record in records if record.algo == algo and record.env_id == env_id and record.summary]
            if not group:
                continue
            settings: dict[str, list[int]] = {}
            for record in group:
                values = record.summary.get("hyperparameters") or {}
                shown = sorted(set(values) - RUN_SPECIFIC_KEYS)
                text = ", ".join(f"{key}={values[key]}" for key in shown) or "(none recorded)"
                settings.setdefault(text, []).append(record.seed)
            implementation = _implementation(group)
            for text, seeds in settings.items():
                which = "" if len(settings) == 1 else f" (seeds {', '.join(map(str, seeds))})"
                lines.append(f"- **{algo}** on `{env_id}` — {implementation}{which}: {text}")
    return lines + [""]


def caveats(records: Sequence[RunRecord]) -> list[str]:
    """What makes an env x algo row's statistics mean less than they seem: several runs with one seed (they count
    as separate seeds: a folder of repeated `rlopt train` runs, say) and runs trained for different budgets."""
    notes = []
    for env_id in _unique(record.env_id for record in records):
        for algo in _ordered_algos(records):
            group = [record for record in records if record.env_id == env_id and record.algo == algo]
            seeds = [record.seed for record in group]
            repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
            if repeated:
                notes.append(
                    f"{algo} on `{env_id}`: {len(group)} runs but seed(s) {', '.join(map(str, repeated))} appear more "
                    "than once; each run counts as a seed here, so the intervals overstate the evidence"
                )
            recorded = [(record.summary.get("hyperparameters") or {}) for record in group if record.summary]
            budgets = _unique(str(values.get("total_steps")) for values in recorded)
            if len(budgets) > 1:
                notes.append(f"{algo} on `{env_id}`: the runs were trained for different budgets: {', '.join(budgets)}")
        unequal = _unequal_training(records, env_id)
        if unequal:
            notes.append(unequal)
    return notes


#: algorithms of one env whose mean env steps differ by more than this ratio get a caveat
UNEQUAL_STEPS_RATIO = 1.1


def _unequal_training(records: Sequence[RunRecord], env_id: str) -> str | None:
    """A caveat when the algorithms on ``env_id`` trained for visibly different numbers of env steps. Each trainer
    stops at the first batch boundary past its budget: GRPO after a whole batch of groups (P x G episodes, which
    can be thousands of steps while episodes are long), PPO after a whole rollout, so with a budget of a few
    batches GRPO's final score can rest on a quarter more experience than PPO's."""
    means: dict[str, float] = {}
    for algo in _ordered_algos(records):
        done = [record for record in records if record.env_id == env_id and record.algo == algo and record.finished]
        steps = _summary_values(done, "env_steps")
        if steps:
            means[algo] = float(np.mean(steps))
    if len(means) < 2 or min(means.values()) <= 0 or max(means.values()) / min(means.values()) <= UNEQUAL_STEPS_RATIO:
        return None
    listed = ", ".join(f"{algo} {_number(value)}" for algo, value in means.items())
    return (
        f"on `{env_id}` the algorithms trained for unequal numbers of env steps (mean per run: {listed}): each "
        "stops at the first whole batch past its budget, and a GRPO batch (num_prompts x group_size episodes) can "
        "be a large part of a small budget. Compare the curves at equal steps (the to-success columns do), or "
        "raise the budget so that one batch is a small part of it"
    )


def _problem_lines(records: Sequence[RunRecord]) -> list[str]:
    problems = [record for record in records if record.status != "finished"]
    if not problems:
        return []
    lines = ["## Failed and unfinished runs", ""]
    body = []
    for record in problems:
        message = "stopped before writing summary.json"
        if record.error:
            last_lines = [line.strip() for line in record.error.splitlines() if line.strip()]
            message = last_lines[-1][:300] if last_lines else record.error[:300]
        body.append((record.run_name, record.status, message, f"`{record.run_dir}`"))
    return lines + _markdown_table(("run", "status", "error", "folder"), body) + [""]


def _check_folder(path: Path) -> None:
    """A report's folder (or one of its parents) that is a file: say so instead of failing inside ``mkdir``."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise ValueError(
                    f"{part} is a file; the report's --out is a folder for report.md, plots/ and summary.json"
                )
            return


def write_report(
    records: Sequence[RunRecord],
    out_dir: str | Path,
    success_threshold: float = 0.9,
    reference_algo: str = "grpo",
    reps: int = 2000,
    seed: int = 0,
    success_gain: float = 0.0,
) -> Path:
    """Write ``report.md``, ``plots/*.png`` and ``summary.json`` (the settings below and the score, every run's
    summary and the tables) to ``out_dir``.

    Args:
        records: runs from :func:`load_runs`.
        out_dir: the comparison folder.
        success_threshold: success rate that counts as solved, for the steps/seconds-to-threshold columns.
        success_gain: when above 0, those columns measure each run from its own start instead: the first point at
            or above its step-0 success (``eval_on_start``) plus this gain; ``success_threshold`` is then unused.
        reference_algo: the X in "probability that X improves on each other algorithm".
        reps: bootstrap resamples for the intervals.
        seed: seed of the bootstrap.

    Returns:
        The path of report.md.
    """
    if not 0.0 <= success_threshold <= 1.0:
        raise ValueError(f"success_threshold={success_threshold!r} must be a success rate in [0, 1]")
    if not 0.0 <= success_gain <= 1.0:
        raise ValueError(f"success_gain={success_gain!r} must be a gain in success rate in [0, 1] (0: not used)")
    out_dir = Path(out_dir)
    _check_folder(out_dir)
    plot_dir = out_dir / PLOT_DIR
    plot_dir.mkdir(parents=True, exist_ok=True)
    rows = build_table(records, success_threshold, reps=reps, seed=seed, success_gain=success_gain)
    improvements = improvement_table(records, reference_algo, reps=reps, seed=seed)
    colors = _algo_colors(_ordered_algos(records))
    env_ids = _unique(record.env_id for record in records)
    finished = sum(record.finished for record in records)

    lines = [
        "# rlopt comparison report",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} on {runs.machine_description()}.",
        f"{len(records)} runs: {finished} finished, {len(records) - finished} failed or unfinished. "
        f"Environments: {', '.join(f'`{env_id}`' for env_id in env_ids) or 'none'}.",
        "",
        f"The final {_score_name(records)} is each run's last evaluation "
        f"(`{records[0].score_tag if records else EVAL_REWARD}`: deterministic actions on held-out seeds). "
        "IQM is the mean of the middle 50% of the seeds' final scores; its interval and the probability-of-"
        f"improvement intervals are 95% stratified percentile bootstraps ({reps} resamples, Agarwal et al. 2021). "
        "Curves show the mean over seeds, a 95% bootstrap band and each seed thinly; thresholds are read from "
        "`eval/success_rate` (else `rollout/success_rate`) and give the median over seeds, a seed that never got "
        "there counting as never, then each seed's own value in brackets (– for never); updates are the "
        f"`{UPDATE_TAG}` points a run logged up to that evaluation (one per GRPO update or PPO rollout). "
        + (
            f"Each run's threshold is its own success at env step 0 (its `eval_on_start` evaluation) plus "
            f"{success_gain:g}. "
            if success_gain > 0
            else ""
        )
        + "Wall-clock and steps/s were measured with other jobs running alongside.",
        "",
    ]
    notes = caveats(records)
    if notes:
        lines += ["**Caveats:**", "", *(f"- {note}." for note in notes), ""]
    for env_id in env_ids:
        plot = plot_learning_curves(
            records, env_id, plot_dir / f"curves_{runs.env_slug(env_id)}.png", colors, seed=seed
        )
        env_rows = [row for row in rows if row["env_id"] == env_id]
        level = threshold_text(success_threshold, success_gain)
        lines += _env_section(env_id, env_rows, improvements, plot, out_dir, level, _score_name(records))
    overall = [row for row in improvements if row["env_id"] == "all envs"]
    if overall:
        lines += ["## Across environments", "", "Probability of improvement with tasks = environments:", ""]
        lines += _markdown_table(
            ("X", "Y", "P(X > Y) [95% CI]", "seeds X / Y"),
            (
                (
                    row["x"],
                    row["y"],
                    f"{row['p']:.2f} [{row['low']:.2f}, {row['high']:.2f}]",
                    f"{row['runs_x']} / {row['runs_y']}",
                )
                for row in overall
            ),
        ) + [""]
    if not any(record.algo == reference_algo and record.finished for record in records):
        lines += [f"No finished `{reference_algo}` run, so no probability of improvement was computed.", ""]
    final_plot = plot_final_scores(rows, records, plot_dir / "final_scores.png", colors)
    if final_plot is not None:
        lines += ["## Final scores", "", f"![final scores]({final_plot.relative_to(out_dir).as_posix()})", ""]
    lines += _hyperparameter_lines(records)
    lines += _problem_lines(records)
    tb_dirs = _unique(str(record.run_dir.parent) for record in records)
    if tb_dirs:
        lines += ["TensorBoard: " + ", ".join(f"`tensorboard --logdir {tb_dir}`" for tb_dir in tb_dirs), ""]

    report_path = out_dir / REPORT_FILE
    temporary = report_path.with_name(f".{REPORT_FILE}.tmp")
    temporary.write_text("\n".join(lines), encoding="utf-8")
    temporary.replace(report_path)
    runs.write_json_atomic(
        out_dir / runs.SUMMARY_FILE,
        {
            "success_threshold": success_threshold,
            "success_gain": success_gain,
            "reference_algo": reference_algo,
            "score": records[0].score_tag if records else EVAL_REWARD,  # what `rlopt report` re-makes it with
            "machine": runs.machine_description(),
            "table": rows,
            "caveats": notes,
            "probability_of_improvement": improvements,
            "runs": [
                {
                    "run_name": record.run_name,
                    "env_id": record.env_id,
                    "algo": record.algo,
                    "seed": record.seed,
                    "status": record.status,
                    "error": record.error,
                    "summary": record.summary,
                }
                for record in records
            ],
        },
    )
    return report_path


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """The final-performance table as aligned plain text, for the terminal."""
    header = ("env", "algo", "seeds", "IQM [95% CI]", "success", "steps to threshold", "steps/s")
    body = [
        (
            row["env_id"],
            row["algo"],
            f"{row['seeds_finished']}/{row['seeds_total']}",
            _iqm_cell(row),
            _rate(row["success_rate"]),
            _threshold_cell(row, "steps_to_threshold"),
            _number(row["steps_per_second"]),
        )
        for row in rows
    ]
    widths = [max(len(cells[column]) for cells in [header, *body]) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) for cells in [header, *body]
    )

"""Statistics for comparing algorithms over few seeds: IQM, stratified-bootstrap intervals, probability of
improvement, learning-curve bands and thresholds.

The estimators follow Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice"
(NeurIPS 2021) and its library rliable:

1. The IQM is the mean of the middle 50% of all (run, task) scores, cut the way ``scipy.stats.trim_mean`` and
   ``rliable.metrics.aggregate_iqm`` cut (``int(0.25 * n)`` scores from each end).
2. Confidence intervals come from a stratified percentile bootstrap: each task's runs are resampled with
   replacement, independently per task (and per algorithm for the probability of improvement), as rliable's
   ``StratifiedBootstrap`` / ``StratifiedIndependentBootstrap`` do.

Departure from rliable: the bootstrap is written here in numpy instead of calling
``rliable.library.get_interval_estimates``. That function draws its resamples from NumPy's *global* random state
(``np.random.choice``), so its ``random_state`` argument does not make it reproducible, and ``rliable.library``
imports ``arch``, whose 7.x releases (rliable 1.2 caps ``arch<8``) fail to import next to pandas 3. The
estimator is the same; a test checks the intervals against rliable's where rliable imports.

Shapes: ``R`` runs (seeds), ``K`` tasks (environments), ``S`` points on a learning curve.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

ScoreMatrix = np.ndarray  # (R, K) final scores: run r of task k
Interval = tuple[float, float, float]  # (point estimate, lower bound, upper bound)


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name}={value!r} must lie strictly between 0 and 1 (e.g. 0.95)")


def _check_reps(reps: int) -> None:
    if int(reps) != reps or reps < 1:
        raise ValueError(f"reps={reps!r} must be a positive integer number of bootstrap resamples")


def _as_score_matrix(name: str, scores: np.ndarray) -> np.ndarray:
    array = np.asarray(scores, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be a (runs, tasks) matrix, got an array of shape {array.shape}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"{name} must hold at least one run of one task, got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contains NaN or infinite scores; drop the failed runs first")
    return array


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all scores: the mean after cutting ``int(0.25 * n)`` scores from each end.

    Args:
        scores: any shape, e.g. ``(R, K)``; every entry counts once.

    Returns:
        The IQM as a float.
    """
    flat = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if flat.size == 0:
        raise ValueError("iqm needs at least one score, got an empty array")
    if not np.all(np.isfinite(flat)):
        raise ValueError("iqm got NaN or infinite scores; drop the failed runs first")
    cut = int(0.25 * flat.size)
    return float(flat[cut : flat.size - cut].mean())


def _stratified_resample(scores: np.ndarray, rng: np.random.Generator, reps: int) -> np.ndarray:
    """``reps`` stratified resamples of a ``(R, K)`` matrix: runs redrawn with replacement within each task.

    Returns:
        ``(reps, R, K)`` array.
    """
    runs, tasks = scores.shape
    run_index = rng.integers(0, runs, size=(reps, runs, tasks))
    task_index = np.arange(tasks)[None, None, :]
    return scores[run_index, task_index]


def _percentile_interval(point: float, replicates: np.ndarray, ci: float) -> Interval:
    tail = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail])
    return float(point), float(low), float(high)


def iqm_ci(
    scores_by_algo: Mapping[str, np.ndarray], reps: int = 2000, ci: float = 0.95, seed: int = 0
) -> dict[str, Interval]:
    """IQM of each algorithm with a stratified-bootstrap percentile confidence interval.

    Args:
        scores_by_algo: algorithm name -> ``(R, K)`` final scores (``R`` may differ between algorithms).
        reps: bootstrap resamples.
        ci: coverage of the interval.
        seed: seed of the resampling, so a report is reproducible.

    Returns:
        algorithm name -> ``(iqm, low, high)``.
    """
    _check_reps(reps)
    _check_fraction("ci", ci)
    results: dict[str, Interval] = {}
    for offset, (algo, scores) in enumerate(scores_by_algo.items()):
        matrix = _as_score_matrix(f"scores of {algo!r}", scores)
        rng = np.random.default_rng([seed, offset])
        resampled = _stratified_resample(matrix, rng, reps)  # (reps, R, K)
        flat = np.sort(resampled.reshape(reps, -1), axis=1)
        cut = int(0.25 * flat.shape[1])
        replicates = flat[:, cut : flat.shape[1] - cut].mean(axis=1)  # (reps,)
        results[algo] = _percentile_interval(iqm(matrix), replicates, ci)
    return results


def _improvement_probability(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + 0.5 P(X = Y) per task and resample, averaged over tasks.

    Args:
        x: ``(..., Rx, K)`` scores of algorithm X.
        y: ``(..., Ry, K)`` scores of algorithm Y.

    Returns:
        ``(...)`` probabilities.
    """
    greater = (x[..., :, None, :] > y[..., None, :, :]).mean(axis=(-3, -2))  # (..., K)
    equal = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return (greater + 0.5 * equal).mean(axis=-1)


def probability_of_improvement(
    x: np.ndarray, y: np.ndarray, reps: int = 2000, ci: float = 0.95, seed: int = 0
) -> Interval:
    """Probability that a run of X scores higher than a run of Y on the same task (ties count half).

    This is the Mann-Whitney U statistic divided by ``Rx * Ry``, averaged over tasks; its interval resamples the
    runs of X and of Y independently within each task.

    Args:
        x: ``(Rx, K)`` final scores of algorithm X.
        y: ``(Ry, K)`` final scores of algorithm Y, same tasks in the same column order.
        reps: bootstrap resamples.
        ci: coverage of the interval.
        seed: seed of the resampling.

    Returns:
        ``(probability, low, high)``.
    """
    _check_reps(reps)
    _check_fraction("ci", ci)
    x = _as_score_matrix("x", x)
    y = _as_score_matrix("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x has {x.shape[1]} tasks and y has {y.shape[1]}; both need the same task columns")
    rng = np.random.default_rng(seed)
    point = float(_improvement_probability(x, y))
    # Resample in chunks so (chunk, Rx, Ry, K) comparisons stay small whatever reps is.
    replicates = []
    chunk = max(1, 200_000 // (x.shape[0] * y.shape[0] * x.shape[1]))
    for start in range(0, reps, chunk):
        count = min(chunk, reps - start)
        replicates.append(
            _improvement_probability(_stratified_resample(x, rng, count), _stratified_resample(y, rng, count))
        )
    return _percentile_interval(point, np.concatenate(replicates), ci)


def bootstrap_band(
    curves: np.ndarray, reps: int = 2000, ci: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean learning curve across runs with a bootstrap confidence band (runs resampled with replacement).

    Args:
        curves: ``(R, S)`` values of ``R`` runs on a common grid of ``S`` points.
        reps: bootstrap resamples.
        ci: coverage of the band.
        seed: seed of the resampling.

    Returns:
        ``(mean, low, high)``, each ``(S,)``.
    """
    _check_reps(reps)
    _check_fraction("ci", ci)
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or curves.shape[0] < 1 or curves.shape[1] < 1:
        raise ValueError(f"curves must be a (runs, points) matrix with at least one run, got shape {curves.shape}")
    if not np.all(np.isfinite(curves)):
        raise ValueError("curves contain NaN or infinite values; resample every run onto a grid it covers")
    rng = np.random.default_rng(seed)
    run_index = rng.integers(0, curves.shape[0], size=(reps, curves.shape[0]))
    replicates = curves[run_index].mean(axis=1)  # (reps, S)
    tail = 100.0 * (1.0 - ci) / 2.0
    low, high = np.percentile(replicates, [tail, 100.0 - tail], axis=0)
    return curves.mean(axis=0), low, high


def _check_curve(steps: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if steps.ndim != 1 or values.shape != steps.shape:
        raise ValueError(f"steps and values must be 1-D arrays of one length, got {steps.shape} and {values.shape}")
    order = np.argsort(steps, kind="stable")
    return steps[order], values[order]


def steps_to_threshold(steps: np.ndarray, values: np.ndarray, threshold: float) -> float | None:
    """The first step at which a curve reaches ``threshold`` (``value >= threshold``), or None if it never does.

    Args:
        steps: ``(S,)`` x positions (env steps, or seconds for wall-clock).
        values: ``(S,)`` curve values.
        threshold: level to reach.
    """
    steps, values = _check_curve(steps, values)
    reached = np.flatnonzero(values >= threshold)
    return float(steps[reached[0]]) if reached.size else None


def resample_curve(steps: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Step-function interpolation: each grid point takes the last value logged at or before it.

    Grid points before the first logged step are NaN; where one step was logged twice the later value wins.

    Args:
        steps: ``(S,)`` logged x positions.
        values: ``(S,)`` logged values.
        grid: ``(G,)`` x positions to read the curve at.

    Returns:
        ``(G,)`` values.
    """
    steps, values = _check_curve(steps, values)
    grid = np.asarray(grid, dtype=np.float64)
    result = np.full(grid.shape, np.nan)
    if steps.size == 0:
        return result
    index = np.searchsorted(steps, grid, side="right") - 1
    covered = index >= 0
    result[covered] = values[index[covered]]
    return result

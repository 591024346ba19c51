"""rlopt.stats against hand-computed values on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest

from rlopt import stats


def test_iqm_of_one_to_eight_is_mean_of_middle_half():
    assert stats.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6


def test_iqm_cuts_like_trim_mean_and_ignores_shape():
    # n = 10: int(2.5) = 2 cut from each end -> mean of 3..8 = 5.5, whatever the outliers are.
    scores = np.array([[-1000.0, 3, 4, 5, 6], [7, 8, 1e6, 1, 2]])
    assert stats.iqm(scores) == pytest.approx(np.mean([2, 3, 4, 5, 6, 7]))
    assert stats.iqm([4.0]) == 4.0
    assert stats.iqm([1.0, 3.0]) == 2.0  # int(0.5) = 0 cut


def test_iqm_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="at least one"):
        stats.iqm([])
    with pytest.raises(ValueError, match="NaN"):
        stats.iqm([1.0, np.nan])


def test_iqm_ci_point_and_bounds():
    scores = {"a": np.arange(1, 9, dtype=float).reshape(8, 1), "b": np.full((3, 2), 7.0)}
    result = stats.iqm_ci(scores, reps=500, seed=0)
    point, low, high = result["a"]
    assert point == pytest.approx(4.5)
    assert 1.0 <= low < point < high <= 8.0
    assert result["b"] == (7.0, 7.0, 7.0)  # no spread, no interval
    assert stats.iqm_ci(scores, reps=500, seed=0) == result  # reproducible


def test_iqm_ci_is_stratified_per_task():
    # Task 0 scores are all 0, task 1 all 10: resampling runs within a task never mixes them, so every resample
    # keeps 4 zeros and 4 tens and the interval collapses onto the point (a plain bootstrap would not).
    scores = np.array([[0.0, 10.0]] * 4)
    assert stats.iqm_ci({"a": scores}, reps=300)["a"] == (5.0, 5.0, 5.0)


def test_iqm_ci_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\(runs, tasks\)"):
        stats.iqm_ci({"a": np.ones(4)})
    with pytest.raises(ValueError, match="reps"):
        stats.iqm_ci({"a": np.ones((4, 1))}, reps=0)
    with pytest.raises(ValueError, match="ci"):
        stats.iqm_ci({"a": np.ones((4, 1))}, ci=95)


def test_iqm_ci_matches_rliable():
    try:
        from rliable import library, metrics
    except Exception as error:  # noqa: BLE001 (rliable.library fails to import with arch 7 next to pandas 3)
        pytest.skip(f"rliable.library does not import here: {error}")
    rng = np.random.default_rng(3)
    scores = rng.normal(size=(10, 3))
    np.random.seed(0)  # noqa: NPY002 (rliable draws its resamples from the legacy global state)
    points, intervals = library.get_interval_estimates(
        {"a": scores}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=4000
    )
    point, low, high = stats.iqm_ci({"a": scores}, reps=4000)["a"]
    assert point == pytest.approx(float(points["a"][0]))
    assert low == pytest.approx(float(intervals["a"][0, 0]), abs=0.05)
    assert high == pytest.approx(float(intervals["a"][1, 0]), abs=0.05)


def test_probability_of_improvement_disjoint_samples():
    x = np.array([[5.0], [6.0], [7.0]])
    y = np.array([[1.0], [2.0]])
    assert stats.probability_of_improvement(x, y, reps=200) == (1.0, 1.0, 1.0)
    assert stats.probability_of_improvement(y, x, reps=200) == (0.0, 0.0, 0.0)


def test_probability_of_improvement_ties_count_half():
    same = np.array([[1.0], [1.0]])
    assert stats.probability_of_improvement(same, same, reps=200)[0] == 0.5
    # x = [1, 2], y = [2, 3]: pairs (1,2) lose, (1,3) lose, (2,2) tie, (2,3) lose -> 0.5 / 4.
    x = np.array([[1.0], [2.0]])
    y = np.array([[2.0], [3.0]])
    assert stats.probability_of_improvement(x, y, reps=200)[0] == pytest.approx(0.125)


def test_probability_of_improvement_averages_over_tasks():
    x = np.array([[1.0, 0.0], [1.0, 0.0]])
    y = np.array([[0.0, 1.0], [0.0, 1.0]])  # X wins task 0 surely, loses task 1 surely
    point, low, high = stats.probability_of_improvement(x, y, reps=200)
    assert (point, low, high) == (0.5, 0.5, 0.5)


def test_probability_of_improvement_interval_brackets_point():
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 1.0, size=(6, 2))
    y = rng.normal(0.0, 1.0, size=(5, 2))
    point, low, high = stats.probability_of_improvement(x, y, reps=1000, seed=1)
    assert 0.0 <= low <= point <= high <= 1.0
    assert low < high
    with pytest.raises(ValueError, match="same task columns"):
        stats.probability_of_improvement(x, y[:, :1])


def test_bootstrap_band():
    curves = np.array([[0.0, 1.0, 2.0], [2.0, 3.0, 4.0]])
    mean, low, high = stats.bootstrap_band(curves, reps=500)
    np.testing.assert_allclose(mean, [1.0, 2.0, 3.0])
    # Each resample mean is 0, 1 or 2 above the first run's value: the band can only reach those.
    np.testing.assert_allclose(low, [0.0, 1.0, 2.0])
    np.testing.assert_allclose(high, [2.0, 3.0, 4.0])
    one_mean, one_low, one_high = stats.bootstrap_band(curves[:1], reps=50)
    np.testing.assert_array_equal(one_low, one_mean)
    np.testing.assert_array_equal(one_high, one_mean)
    with pytest.raises(ValueError, match="NaN"):
        stats.bootstrap_band(np.array([[np.nan, 1.0]]))


def test_steps_to_threshold():
    steps = np.array([100, 200, 300, 400])
    assert stats.steps_to_threshold(steps, [0.1, 0.95, 0.5, 1.0], 0.9) == 200.0
    assert stats.steps_to_threshold(steps, [0.1, 0.9, 0.5, 1.0], 0.9) == 200.0  # reaching counts
    assert stats.steps_to_threshold(steps, [0.1, 0.2, 0.5, 0.8], 0.9) is None
    assert stats.steps_to_threshold([300, 100], [1.0, 0.0], 0.5) == 300.0  # ordered by step
    assert stats.steps_to_threshold([], [], 0.5) is None
    with pytest.raises(ValueError, match="one length"):
        stats.steps_to_threshold([1, 2], [1.0], 0.5)


def test_resample_curve_holds_last_value():
    result = stats.resample_curve([10, 20, 30], [1.0, 2.0, 3.0], [0, 10, 15, 20, 29, 100])
    np.testing.assert_array_equal(result, [np.nan, 1.0, 1.0, 2.0, 2.0, 3.0])
    # A step logged twice: the later value wins.
    np.testing.assert_array_equal(stats.resample_curve([10, 10, 20], [1.0, 5.0, 2.0], [10, 15]), [5.0, 5.0])
    assert np.all(np.isnan(stats.resample_curve([], [], [1.0, 2.0])))

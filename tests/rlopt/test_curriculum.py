"""The difficulty curriculum: the pure level rule and the windowed Curriculum object."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rlopt.curriculum import Curriculum, next_level


@pytest.mark.parametrize(
    ("level", "accuracy", "expected"),
    [
        (3, 0.7, 4),  # the promotion threshold is inclusive
        (3, 0.69, 3),
        (3, 0.1, 2),  # so is the demotion threshold
        (3, 0.11, 3),
        (6, 1.0, 6),  # clipped at the top
        (1, 0.0, 1),  # and at the bottom
        (2, 0.4, 2),
    ],
)
def test_next_level_by_hand(level: int, accuracy: float, expected: int) -> None:
    assert next_level(level, accuracy, min_level=1, max_level=6) == expected


def test_next_level_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="demote_at < promote_at"):
        next_level(2, 0.5, 1, 6, promote_at=0.3, demote_at=0.4)
    with pytest.raises(ValueError, match="accuracy=1.5"):
        next_level(2, 1.5, 1, 6)
    with pytest.raises(ValueError, match="level=7 is outside"):
        next_level(7, 0.5, 1, 6)


def test_curriculum_decides_on_full_windows_and_restarts_the_window_after_a_change() -> None:
    curriculum = Curriculum(level=1, max_level=3, window=4)
    assert curriculum.record([1, 1, 1]) == 1, "no decision before the window is full"
    assert curriculum.record([np.nan, 1]) == 2 and curriculum.changes == [(4, 1, 2)]
    assert np.isnan(curriculum.accuracy), "the window restarts at the new level"
    assert curriculum.record([0, 1, 0, 1]) == 2  # 0.5: stay
    assert curriculum.record([0, 0, 0]) == 2  # the last four are 1, 0, 0, 0: 0.25 is above 0.1
    assert curriculum.record([0]) == 1  # 0, 0, 0, 0
    assert curriculum.changes[-1] == (12, 2, 1)
    assert curriculum.metrics()["curriculum/level"] == 1.0


def test_curriculum_sliding_window_uses_only_the_last_episodes() -> None:
    curriculum = Curriculum(level=2, window=4, promote_at=0.75, demote_at=0.25)
    assert curriculum.record([1, 0, 1, 0]) == 2  # 0.5
    assert curriculum.record([1]) == 2  # last four: 0, 1, 0, 1 -> 0.5
    assert curriculum.record([1]) == 3  # last four: 1, 0, 1, 1 -> 0.75
    assert curriculum.episodes == 6


def test_curriculum_state_round_trips_through_json() -> None:
    curriculum = Curriculum(level=2, window=8)
    curriculum.record([1, 0, 1])
    restored = Curriculum.from_state_dict(json.loads(json.dumps(curriculum.state_dict())))
    assert restored.state_dict() == curriculum.state_dict()
    assert restored.record([1, 1, 1, 1, 1]) == curriculum.record([1, 1, 1, 1, 1]) == 3


def test_curriculum_rejects_bad_settings_and_outcomes() -> None:
    with pytest.raises(ValueError, match="window=0"):
        Curriculum(window=0)
    with pytest.raises(ValueError, match="level=9 is outside"):
        Curriculum(level=9)
    with pytest.raises(ValueError, match="success values must be 0, 1 or NaN"):
        Curriculum().record([0.5])

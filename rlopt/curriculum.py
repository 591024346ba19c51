"""A difficulty curriculum: the level rises when recent accuracy is high and falls when it collapses.

Motivation: a GRPO group carries no gradient when all its members succeed or all fail (DESIGN.md section 7), so
training is most efficient at a level the policy solves sometimes. The rule is the threshold schedule of
automatic curricula such as Portelas et al. 2020 ("Automatic Curriculum Learning For Deep RL: A Short Survey",
arXiv:2003.04664), reduced to one integer difficulty:

* accuracy over the last ``window`` episodes at the current level ``>= promote_at`` (0.7): level + 1;
* accuracy ``<= demote_at`` (0.1): level - 1;
* otherwise, or before ``window`` episodes have been seen at this level: unchanged.

After every change the window is emptied, so the next decision is made on the new level's own episodes.
:func:`next_level` is the pure rule; :class:`Curriculum` keeps the window and is JSON-serialisable for checkpoints;
:func:`curriculum_env_kwargs` fixes the env arguments so that every level shares one observation space (a policy
is built once, for one observation length).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the rlopt/... ids that curriculum_env_kwargs builds)
from rlopt.config import ConfigError

__all__ = ["Curriculum", "curriculum_env_kwargs", "next_level"]


def next_level(
    level: int, accuracy: float, min_level: int, max_level: int, promote_at: float = 0.7, demote_at: float = 0.1
) -> int:
    """The level after one decision: ``level + 1`` if ``accuracy >= promote_at``, ``level - 1`` if ``accuracy <=
    demote_at``, else ``level``; always clipped to ``[min_level, max_level]``.

    Raises:
        ValueError: for ``demote_at >= promote_at``, an accuracy outside ``[0, 1]`` or a level outside the range.
    """
    if not 0.0 <= demote_at < promote_at <= 1.0:
        raise ValueError(f"need 0 <= demote_at < promote_at <= 1, got demote_at={demote_at}, promote_at={promote_at}")
    if not 0.0 <= accuracy <= 1.0:
        raise ValueError(f"accuracy={accuracy!r} must be in [0, 1]")
    if not min_level <= level <= max_level:
        raise ValueError(f"level={level} is outside [{min_level}, {max_level}]")
    if accuracy >= promote_at:
        return min(level + 1, max_level)
    if accuracy <= demote_at:
        return max(level - 1, min_level)
    return level


@dataclass
class Curriculum:
    """The current level and the success window it is judged on.

    Attributes:
        level: the current difficulty level.
        min_level, max_level: the range the level stays in (the math env has levels 1-6).
        window: episodes at the current level needed for a decision (the accuracy is over the last ``window``).
        promote_at, demote_at: accuracy thresholds of :func:`next_level`.
        changes: ``(episodes seen, old level, new level)`` of every change so far.
    """

    level: int = 1
    min_level: int = 1
    max_level: int = 6
    window: int = 256
    promote_at: float = 0.7
    demote_at: float = 0.1
    changes: list[tuple[int, int, int]] = field(default_factory=list)
    episodes: int = 0
    _recent: deque = field(default_factory=deque, repr=False)

    def __post_init__(self) -> None:
        if self.window < 1:
            raise ValueError(f"window={self.window} must be at least 1 episode")
        if self.min_level > self.max_level:
            raise ValueError(f"min_level={self.min_level} exceeds max_level={self.max_level}")
        next_level(self.level, 0.5, self.min_level, self.max_level, self.promote_at, self.demote_at)  # validates
        self._recent = deque(self._recent, maxlen=self.window)
        self.changes = [tuple(change) for change in self.changes]
        self.last_accuracy = self.accuracy

    @property
    def accuracy(self) -> float:
        """Success rate over the window so far (NaN when empty)."""
        return float(np.mean(self._recent)) if self._recent else float("nan")

    def record(self, success: np.ndarray | list[float]) -> int:
        """Add the outcomes of episodes played at the current level and return the (possibly new) level.

        Args:
            success: ``(B,)`` 1/0 (or bool) per episode; NaN entries (success unknown) are skipped.

        Returns:
            The level to play next. When it changed, the window is empty again.
        """
        values = np.asarray(success, dtype=np.float64).reshape(-1)
        values = values[np.isfinite(values)]
        if ((values != 0.0) & (values != 1.0)).any():
            raise ValueError(f"success values must be 0, 1 or NaN, got {sorted(set(values.tolist()))[:5]}")
        self._recent.extend(values.tolist())
        self.episodes += len(values)
        self.last_accuracy = self.accuracy
        if len(self._recent) < self.window:
            return self.level
        new = next_level(self.level, self.accuracy, self.min_level, self.max_level, self.promote_at, self.demote_at)
        if new != self.level:
            self.changes.append((self.episodes, self.level, new))
            self.level = new
            self._recent.clear()
        return self.level

    def metrics(self) -> dict[str, float]:
        """``curriculum/level`` (the level played from now on) and ``curriculum/window_accuracy`` (the window's
        success rate after the latest :meth:`record`, taken before a change empties the window, so the value that
        crossed a threshold is the one logged with the change; NaN before any episode)."""
        return {"curriculum/level": float(self.level), "curriculum/window_accuracy": self.last_accuracy}

    def state_dict(self) -> dict[str, Any]:
        """JSON-friendly state (for a checkpoint's ``extra``)."""
        return {
            "level": self.level,
            "min_level": self.min_level,
            "max_level": self.max_level,
            "window": self.window,
            "promote_at": self.promote_at,
            "demote_at": self.demote_at,
            "episodes": self.episodes,
            "changes": [list(change) for change in self.changes],
            "recent": list(self._recent),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Curriculum:
        """Rebuild from :meth:`state_dict` output."""
        values = dict(state)
        recent = values.pop("recent", [])
        return cls(**values, _recent=deque(recent))


def curriculum_env_kwargs(
    env_id: str, env_kwargs: Mapping[str, Any], min_level: int, max_level: int
) -> tuple[dict[str, Any], int]:
    """The env arguments a curriculum over ``[min_level, max_level]`` trains with, and the start level.

    The env must take ``level=`` (rlopt/MathReasoning-*). Its observation length may grow with the level (the math
    env's default ``max_length`` is 32 tokens at level 1 and 160 at level 6), while the policy is built once for
    one observation space. So ``max_length`` is fixed for every level: the user's ``env_kwargs["max_length"]`` if
    given (every level of the range must fit it), else the longest default of the range. Each level is built once
    here to check all that before training starts.

    Args:
        env_id: a registered Gymnasium id.
        env_kwargs: the run's env arguments; ``level`` (default 1) is the start level.
        min_level, max_level: the range the curriculum moves in.

    Returns:
        ``(env_kwargs with level and max_length set, observation size)``: the size is the number of tokens of the
        math env's 1-D observations, which a transformer policy's context must hold.

    Raises:
        ConfigError: the env takes no ``level``, a level or the start level is out of range, or ``max_length`` is
            too small for a level; the message says what to change.
    """
    if min_level < 1 or min_level > max_level:
        raise ConfigError(
            f"curriculum levels must satisfy 1 <= curriculum_min_level <= curriculum_max_level, got "
            f"{min_level} and {max_level}"
        )
    start = env_kwargs.get("level", 1)
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not min_level <= start <= max_level:
        raise ConfigError(
            f"the curriculum's start level (env_kwargs level, default 1) is {start!r}, outside the curriculum range "
            f"[{min_level}, {max_level}]; pass --env-kwargs '{{\"level\": {min_level}}}' or widen the range"
        )
    shapes = {
        level: _observation_shape(env_id, {**env_kwargs, "level": level}) for level in range(min_level, max_level + 1)
    }
    fixed = dict(env_kwargs, level=int(start))
    if "max_length" in env_kwargs or len(set(shapes.values())) == 1:
        # already one observation space (the env would have refused a max_length too small for a level)
        return fixed, int(np.prod(shapes[max_level]))
    longest = max(shape[0] for shape in shapes.values())
    for level in shapes:
        try:
            shape = _observation_shape(env_id, {**fixed, "level": level, "max_length": longest})
        except ConfigError as error:
            raise ConfigError(
                f"the observations of {env_id} change shape across curriculum levels ({shapes}) and fixing "
                f"max_length={longest} failed: {error}"
            ) from None
        if shape != (longest,):
            raise ConfigError(
                f"the observations of {env_id} change shape across curriculum levels ({shapes}) even with "
                f"max_length={longest}; a policy cannot take them all"
            )
    fixed["max_length"] = longest
    return fixed, longest


def _observation_shape(env_id: str, env_kwargs: dict[str, Any]) -> tuple[int, ...]:
    """Build the env once and return its observation shape, turning construction errors into ConfigError."""
    try:
        env = gym.make(env_id, **env_kwargs)
    except TypeError as error:
        raise ConfigError(
            f"curriculum needs an env whose constructor takes level= (rlopt/MathReasoning-*); {env_id} with "
            f"{env_kwargs} failed: {error}"
        ) from None
    except (ValueError, gym.error.Error) as error:
        raise ConfigError(
            f"curriculum: {env_id} cannot be built with {env_kwargs}: {error}; lower curriculum_max_level, raise "
            "env_kwargs max_length, or drop a problem_file (a curriculum generates problems per level)"
        ) from None
    try:
        return tuple(env.observation_space.shape or ())
    finally:
        env.close()

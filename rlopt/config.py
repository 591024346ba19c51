"""Configuration dataclasses shared by every algorithm, and the machinery that turns them into ``--help``.

Each algorithm has one dataclass that extends :class:`RunConfig`. Every field carries its help text in
``metadata["help"]`` (written with :func:`option`), which the command line shows verbatim, and a field may list
its accepted values in ``metadata["choices"]``. Invalid values and invalid combinations are rejected in
``__post_init__`` with a message that says what to change.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, fields
from typing import Any


class ConfigError(ValueError):
    """A configuration value or combination that cannot work; the message says what to change."""


def option(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:  # noqa: A002 (argparse's word)
    """A dataclass field with its ``--help`` text (and accepted values) attached."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise :class:`ConfigError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        accepted = ", ".join(repr(choice) for choice in choices)
        raise ConfigError(f"{name}={value!r} is not accepted; choose one of {accepted}")


def check_range(name: str, value: float, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (bounds open where asked)."""
    below = low is not None and (value <= low if low_open else value < low)
    above = high is not None and (value >= high if high_open else value > high)
    if below or above or value != value:  # value != value catches NaN
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ConfigError(f"{name}={value!r} is outside the accepted range {interval}")


@dataclass
class RunConfig:
    """What every training run needs, whatever the algorithm."""

    env_id: str = option("rlopt/GridGame-Empty-5x5-v0", "Gymnasium id of the environment to train on.")
    seed: int = option(0, "Random seed (torch, the environments' start states and evaluation seeds derive from it).")
    total_steps: int = option(100_000, "Environment steps to train for (every env step of every parallel env counts).")
    logdir: str = option("runs", "Folder under which the run folder <env>__<algo>__<seed>__<time>/ is created.")
    run_name: str | None = option(None, "Run folder name; default <env>__<algo>__<seed>__<time>.")
    device: str = option("auto", "Torch device: auto (CUDA if available, else CPU), cpu, cuda, cuda:1, ...")
    eval_episodes: int = option(32, "Episodes (on held-out seeds) in each evaluation and in the final one.")
    eval_every: int = option(0, "Evaluate every this many env steps; 0 picks about ten evaluations per run.")
    checkpoint_every: int = option(0, "Save a checkpoint every this many env steps; 0 saves at each evaluation.")
    progress: bool = option(True, "Show a progress bar on stderr.")
    env_kwargs: dict = option({}, "Extra keyword arguments for gymnasium.make / make_vec (JSON on the command line).")

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str) or not self.env_id:
            raise ConfigError("env_id must be a Gymnasium id such as rlopt/GridGame-Empty-5x5-v0 or CartPole-v1")
        check_range("seed", self.seed, 0)
        check_range("total_steps", self.total_steps, 0, low_open=True)
        check_range("eval_episodes", self.eval_episodes, 1)
        check_range("eval_every", self.eval_every, 0)
        check_range("checkpoint_every", self.checkpoint_every, 0)
        if not isinstance(self.env_kwargs, dict):
            raise ConfigError(f"env_kwargs must be a dict of keyword arguments, got {self.env_kwargs!r}")

    @property
    def evaluation_interval(self) -> int:
        """Env steps between evaluations (derived when ``eval_every`` is 0)."""
        return self.eval_every if self.eval_every > 0 else max(1, self.total_steps // 10)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """Build from a dict, refusing unknown keys with the list of known ones."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown {cls.__name__} fields {unknown}; known fields: {sorted(known)}")
        converted = {}
        hints = typing.get_type_hints(cls)
        for key, value in values.items():
            if isinstance(value, list) and _is_tuple_type(hints.get(key)):
                value = tuple(value)
            converted[key] = value
        return cls(**converted)

    def replace(self, **changes: Any) -> RunConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _is_tuple_type(hint: Any) -> bool:
    if hint is None:
        return False
    origin = typing.get_origin(hint)
    if origin is tuple:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_tuple_type(arg) for arg in typing.get_args(hint))
    return False

"""The table of registered ``rlopt/...`` ids: one row per id, its front ends, defaults and time limit.

Entry points are strings, so registering imports no environment module. Bump an id's version when its reward or
dynamics change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym


@dataclass(frozen=True)
class EnvEntry:
    """One registered id."""

    id: str
    module: str
    single_class: str
    vector_class: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    #: Gymnasium's TimeLimit; None where the env ends its episodes itself (the grid: its ``max_steps``)
    max_episode_steps: int | None = None


def _grid(name: str, task: str, size: int) -> EnvEntry:
    # No TimeLimit wrapper, as in Minigrid's own registrations: the grid core truncates at its own max_steps, which
    # is also the step budget of its reward 1 - 0.9 * steps / max_steps. A registered TimeLimit would cut
    # gymnasium.make(id, max_steps=N) at the registered value instead of N, and would report a goal reached on the
    # last step as truncated as well as terminated. max_steps is left out of the kwargs too, so that it follows
    # size and task (Minigrid's default: 4 * size**2 for empty and lava, 10 * size**2 for doorkey).
    kwargs = {"task": task, "size": size}
    return EnvEntry(f"rlopt/GridGame-{name}-v0", "envs.grid_game", "GridGameEnv", "GridGameVectorEnv", kwargs)


ENTRIES: tuple[EnvEntry, ...] = (
    EnvEntry("rlopt/MathReasoning-v0", "envs.math_reasoning", "MathReasoningEnv", "MathReasoningVectorEnv"),
    EnvEntry("rlopt/GridGame-v0", "envs.grid_game", "GridGameEnv", "GridGameVectorEnv", {"task": "doorkey", "size": 5}),
    _grid("Empty-5x5", "empty", 5),  # 100 steps
    _grid("Empty-8x8", "empty", 8),  # 256
    _grid("DoorKey-5x5", "doorkey", 5),  # 250
    _grid("DoorKey-8x8", "doorkey", 8),  # 640
    _grid("Lava-7x7", "lava", 7),  # 196
    EnvEntry("rlopt/ArmReach-v0", "envs.arm_reach", "ArmReachEnv", "ArmReachVectorEnv", {"num_links": 2}, 50),
    EnvEntry("rlopt/ArmReach3-v0", "envs.arm_reach", "ArmReachEnv", "ArmReachVectorEnv", {"num_links": 3}, 50),
)

ENV_IDS: tuple[str, ...] = tuple(entry.id for entry in ENTRIES)


def register_envs() -> None:
    """Register every id in :data:`ENTRIES` with Gymnasium (idempotent)."""
    for entry in ENTRIES:
        if entry.id in gym.registry:
            continue
        gym.register(
            id=entry.id,
            entry_point=f"{entry.module}:{entry.single_class}",
            vector_entry_point=f"{entry.module}:{entry.vector_class}",
            max_episode_steps=entry.max_episode_steps,
            kwargs=dict(entry.kwargs),
        )

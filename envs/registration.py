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
    max_episode_steps: int | None = None


def _grid(name: str, task: str, size: int, max_steps: int) -> EnvEntry:
    # The grid core needs its step budget for the Minigrid-style reward 1 - 0.9 * steps / max_steps, so the
    # registration passes it to the core and to TimeLimit alike.
    return EnvEntry(
        f"rlopt/GridGame-{name}-v0",
        "envs.grid_game",
        "GridGameEnv",
        "GridGameVectorEnv",
        {"task": task, "size": size, "max_steps": max_steps},
        max_steps,
    )


ENTRIES: tuple[EnvEntry, ...] = (
    EnvEntry("rlopt/MathReasoning-v0", "envs.math_reasoning", "MathReasoningEnv", "MathReasoningVectorEnv"),
    EnvEntry(
        "rlopt/GridGame-v0",
        "envs.grid_game",
        "GridGameEnv",
        "GridGameVectorEnv",
        {"task": "doorkey", "size": 5, "max_steps": 250},
        250,
    ),
    _grid("Empty-5x5", "empty", 5, 100),
    _grid("Empty-8x8", "empty", 8, 256),
    _grid("DoorKey-5x5", "doorkey", 5, 250),
    _grid("DoorKey-8x8", "doorkey", 8, 640),
    _grid("Lava-7x7", "lava", 7, 196),
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

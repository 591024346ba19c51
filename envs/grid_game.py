"""Grid game: procedurally generated Minigrid-style grid worlds, natively batched.

One numpy core (:class:`GridCore`) steps ``N`` grid worlds at once; :class:`GridGameEnv` and
:class:`GridGameVectorEnv` are its single and vector front ends. The observation encoding, the action set, the
dynamics and the reward follow Minigrid (Chevalier-Boisvert et al., "Minigrid & Miniworld", NeurIPS 2023 Datasets
and Benchmarks), so agents and settings written for ``MiniGrid-*`` ids carry over. Departures from Minigrid:

1. No ``"mission"`` string in the observation (every task has a fixed mission), so stable-baselines3 can flatten
   the observation with its default ``MultiInputPolicy``.
2. The image space is ``Box(0, 10)`` rather than ``Box(0, 255)``: every code is at most 10, and with bounds other
   than ``[0, 255]`` stable-baselines3 treats the view as a vector (MLP) instead of a picture (NatureCNN, which
   cannot take a 7x7 input).
3. ``terminated`` and ``truncated`` are never both true: reaching the goal on the last step is a termination.
4. Layouts are drawn from rlopt's counter-based :class:`~envs.core.BatchRNG`, so a seed gives the same layout in
   the single env and in any slot of the vector env, but not the layout Minigrid draws for that seed. The empty
   room has one fixed layout, as in ``MiniGrid-Empty-NxN``: there the seed changes nothing.

Speed: a step is a few dozen whole-batch numpy operations, with no Python loop over environments (resets neither).
The egocentric view is one gather with precomputed offsets per direction from grids padded with walls (so no
bounds checks), and Minigrid's occlusion (``Grid.process_vis``) runs row by row through a lookup table indexed by
(cells seen in the row, transparent cells of the row), so it costs ``agent_view_size`` batched lookups per step.
"""

from __future__ import annotations

import functools
from enum import IntEnum
from typing import Any, ClassVar

import numpy as np
from gymnasium import spaces

from envs.core import BatchedCore, BatchedVectorEnv, SingleEnv

__all__ = [
    "Actions",
    "COLOR_TO_IDX",
    "GridCore",
    "GridGameEnv",
    "GridGameVectorEnv",
    "OBJECT_TO_IDX",
    "STATE_TO_IDX",
    "TASKS",
]

# --- Minigrid's encoding -----------------------------------------------------------------------------------------

#: Minigrid's object indices (``minigrid.core.constants.OBJECT_TO_IDX``).
OBJECT_TO_IDX: dict[str, int] = {
    "unseen": 0,
    "empty": 1,
    "wall": 2,
    "floor": 3,
    "door": 4,
    "key": 5,
    "ball": 6,
    "box": 7,
    "goal": 8,
    "lava": 9,
    "agent": 10,
}
#: Minigrid's colour indices.
COLOR_TO_IDX: dict[str, int] = {"red": 0, "green": 1, "blue": 2, "purple": 3, "yellow": 4, "grey": 5}
#: Minigrid's door states.
STATE_TO_IDX: dict[str, int] = {"open": 0, "closed": 1, "locked": 2}


class Actions(IntEnum):
    """Minigrid's action set (``MiniGridEnv.Actions``)."""

    left = 0
    right = 1
    forward = 2
    pickup = 3
    drop = 4
    toggle = 5
    done = 6


#: The task names accepted by ``task=``.
TASKS: tuple[str, ...] = ("empty", "doorkey", "lava")
_MIN_SIZE = {"empty": 4, "doorkey": 5, "lava": 5}
# Minigrid's default step budgets: MiniGrid-Empty 4*size^2, DoorKey 10*size^2, LavaGap 4*size^2.
_STEPS_PER_CELL = {"empty": 4, "doorkey": 10, "lava": 4}
# Minigrid's occlusion defaults: MiniGrid-Empty sees through walls, DoorKey and LavaGap do not.
_SEE_THROUGH_WALLS = {"empty": True, "doorkey": False, "lava": False}

# Internal cell codes: one uint8 per cell. Code 0 is "unseen" so that multiplying by a visibility mask hides cells,
# and the opaque codes (wall, closed door, locked door) are consecutive so that occlusion is one compare.
UNSEEN, EMPTY, WALL, DOOR_CLOSED, DOOR_LOCKED, DOOR_OPEN, KEY, GOAL, LAVA = range(9)
_FIRST_OPAQUE, _NUM_OPAQUE = WALL, 3
# code -> Minigrid (object, colour, state); the door and key are yellow as in MiniGrid-DoorKey.
_ENCODING = np.array(
    [
        (OBJECT_TO_IDX["unseen"], 0, 0),
        (OBJECT_TO_IDX["empty"], 0, 0),
        (OBJECT_TO_IDX["wall"], COLOR_TO_IDX["grey"], 0),
        (OBJECT_TO_IDX["door"], COLOR_TO_IDX["yellow"], STATE_TO_IDX["closed"]),
        (OBJECT_TO_IDX["door"], COLOR_TO_IDX["yellow"], STATE_TO_IDX["locked"]),
        (OBJECT_TO_IDX["door"], COLOR_TO_IDX["yellow"], STATE_TO_IDX["open"]),
        (OBJECT_TO_IDX["key"], COLOR_TO_IDX["yellow"], 0),
        (OBJECT_TO_IDX["goal"], COLOR_TO_IDX["green"], 0),
        (OBJECT_TO_IDX["lava"], COLOR_TO_IDX["red"], 0),
    ],
    dtype=np.uint8,
)
# The same triples as 4-byte words: a lookup of 4-byte items is much faster in numpy than one of 3-byte rows.
_ENCODING_WORDS = np.zeros(len(_ENCODING), dtype=np.uint32)
_ENCODING_WORDS.view(np.uint8).reshape(-1, 4)[:, :3] = _ENCODING
# Minigrid's WorldObj.can_overlap per code.
_CAN_OVERLAP = np.zeros(9, dtype=bool)
_CAN_OVERLAP[[EMPTY, DOOR_OPEN, GOAL, LAVA]] = True
# toggle: an unlocked door opens or closes; a locked door opens only for the key (checked in step)
_TOGGLED = np.arange(9, dtype=np.uint8)
_TOGGLED[[DOOR_OPEN, DOOR_CLOSED, DOOR_LOCKED]] = [DOOR_CLOSED, DOOR_OPEN, DOOR_OPEN]
# Minigrid's DIR_TO_VEC: 0 right (+x), 1 down (+y), 2 left, 3 up
_DIR_TO_VEC = np.array([(1, 0), (0, 1), (-1, 0), (0, -1)], dtype=np.int64)

# Above this view size the occlusion table (4**view_size entries) is too big; rows are swept directly instead.
_MAX_TABLE_VIEW = 9


# --- occlusion (Minigrid's Grid.process_vis) -------------------------------------------------------------------


def _sweep_row(seen: np.ndarray, transparent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row of Minigrid's visibility propagation, for a batch of rows.

    Minigrid walks the view from the agent's row away from it; in each row it spreads visibility left to right
    and then right to left through cells one can see behind, and every such cell also lights up itself and its
    neighbour in the next row.

    Args:
        seen: ``(B, V)`` bool, the cells of this row already known to be visible.
        transparent: ``(B, V)`` bool, whether one can see behind each cell of this row.

    Returns:
        ``(B, V)`` bool, the visible cells of this row, and ``(B, V)`` bool, the cells it makes visible in the next.
    """
    seen = seen.copy()
    ahead = np.zeros_like(seen)
    width = seen.shape[1]
    for i in range(width - 1):
        spread = seen[:, i] & transparent[:, i]
        seen[:, i + 1] |= spread
        ahead[:, i] |= spread
        ahead[:, i + 1] |= spread
    for i in range(width - 1, 0, -1):
        spread = seen[:, i] & transparent[:, i]
        seen[:, i - 1] |= spread
        ahead[:, i - 1] |= spread
        ahead[:, i] |= spread
    return seen, ahead


def _bits_to_mask(view_size: int) -> np.ndarray:
    """``(2**V, V)`` bool: bit ``i`` of the row index is column ``i``."""
    return (np.arange(2**view_size)[:, None] >> np.arange(view_size)[None, :]) & 1 == 1


@functools.cache
def _visibility_table(view_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Tables of :func:`_sweep_row` over every (seen bits, transparent bits) of a row of ``view_size`` cells.

    Returns:
        visible ``(4**V,)`` and ahead ``(4**V,)`` int64 bit sets, indexed by ``(seen << V) | transparent``.
    """
    masks = _bits_to_mask(view_size)
    index = np.arange(4**view_size)
    seen, ahead = _sweep_row(masks[index >> view_size], masks[index & (2**view_size - 1)])
    powers = 1 << np.arange(view_size)
    return seen @ powers, ahead @ powers


def _encode(codes: np.ndarray) -> np.ndarray:
    """Minigrid triples ``(..., 3)`` uint8 of cell codes ``(...)`` (any strides)."""
    words = np.take(_ENCODING_WORDS, codes).view(np.uint8).reshape(*codes.shape, 4)
    image = np.empty((*codes.shape, 3), dtype=np.uint8)
    # channel by channel: numpy copies a strided channel much faster than a (..., 3) slice of 4-byte rows
    for channel in range(3):
        image[..., channel] = words[..., channel]
    return image


# --- rendering ---------------------------------------------------------------------------------------------------

TILE_SIZE = 16
_WALL_RGB = (100, 100, 100)
_YELLOW_RGB = (255, 255, 0)
_AGENT_RGB = np.array((255, 0, 0), dtype=np.uint8)


def _tile_coordinates(tile_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates in [0, 1] of a tile: ``x`` (columns) and ``y`` (rows), each ``(T, T)``."""
    centres = (np.arange(tile_size) + 0.5) / tile_size
    return np.meshgrid(centres, centres, indexing="xy")


@functools.cache
def _tiles(tile_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pictures of every cell code ``(9, T, T, 3)`` uint8 and agent triangle masks per direction ``(4, T, T)``."""
    x, y = _tile_coordinates(tile_size)
    tiles = np.zeros((9, tile_size, tile_size, 3), dtype=np.uint8)
    tiles[WALL] = _WALL_RGB
    tiles[GOAL] = (0, 255, 0)
    tiles[LAVA] = (255, 128, 0)
    for row in (0.3, 0.5, 0.7):  # three dark waves, as Minigrid draws lava
        wave = np.abs(y - row - 0.04 * np.sin(x * 4 * np.pi)) < 0.03
        tiles[LAVA][wave & (x > 0.1) & (x < 0.9)] = 0
    door_frame = (x < 0.06) | (x > 0.94) | (y < 0.06) | (y > 0.94)
    tiles[DOOR_LOCKED] = np.where(door_frame[..., None], _YELLOW_RGB, (150, 150, 0))
    tiles[DOOR_LOCKED][(np.abs(x - 0.75) < 0.12) & (np.abs(y - 0.5) < 0.03)] = _YELLOW_RGB
    closed = door_frame | (np.hypot(x - 0.75, y - 0.5) < 0.08)
    tiles[DOOR_CLOSED][closed] = _YELLOW_RGB
    tiles[DOOR_OPEN][(x > 0.88) & ((x < 0.92) | (x > 0.96) | (y < 0.04) | (y > 0.96))] = _YELLOW_RGB
    key = (np.hypot(x - 0.5, y - 0.28) < 0.18) & (np.hypot(x - 0.5, y - 0.28) > 0.08)
    key |= (np.abs(x - 0.5) < 0.06) & (y > 0.4) & (y < 0.88)
    key |= (x > 0.5) & (x < 0.68) & (((y > 0.6) & (y < 0.68)) | ((y > 0.78) & (y < 0.86)))
    tiles[KEY][key] = _YELLOW_RGB
    # Minigrid's thin grid lines on the top and left edge of every tile
    edge = (x < 1.0 / tile_size) | (y < 1.0 / tile_size)
    tiles[:, edge] = _WALL_RGB
    # A triangle pointing right, rotated to each direction (Minigrid's agent glyph).
    right = (x > 0.12) & (x < 0.88) & (np.abs(y - 0.5) < 0.38 * (0.88 - x) / 0.76)
    triangles = np.stack([np.rot90(right, -k) for k in range(4)])
    return tiles, triangles


# --- the core ----------------------------------------------------------------------------------------------------


def _check_int(name: str, value: Any, minimum: int, condition: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be {condition}, got {value!r}")
    return int(value)


class GridCore(BatchedCore):
    """State and dynamics of ``N`` Minigrid-style worlds. See :class:`GridGameEnv` for the environment contract.

    State: ``grid`` ``(N, W*W)`` uint8 cell codes of the world padded with ``agent_view_size - 1`` rings of walls
    (``W = size + 2 * pad``, cell ``(x, y)`` at ``(x + pad) * W + (y + pad)``), ``agent_cell`` ``(N,)`` the agent's
    flat padded cell, ``direction`` ``(N,)``, ``carrying`` ``(N,)`` the code of the carried object (``EMPTY`` when
    none) and ``step_count`` ``(N,)``.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["rgb_array"], "render_fps": 10}
    reward_term_names = ("goal",)

    def __init__(
        self,
        num_envs: int,
        task: str = "doorkey",
        size: int = 5,
        max_steps: int | None = None,
        full_observation: bool = False,
        agent_view_size: int = 7,
        see_through_walls: bool | None = None,
    ) -> None:
        super().__init__(num_envs)
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; accepted: {', '.join(TASKS)}")
        self.task = task
        self.size = _check_int("size", size, _MIN_SIZE[task], f"an integer >= {_MIN_SIZE[task]} for task {task!r}")
        if max_steps is None:
            max_steps = _STEPS_PER_CELL[task] * self.size**2
        self.max_steps = _check_int("max_steps", max_steps, 1, "a positive integer or None")
        if not isinstance(full_observation, (bool, np.bool_)):
            raise ValueError(f"full_observation must be True or False, got {full_observation!r}")
        self.full_observation = bool(full_observation)
        view = _check_int("agent_view_size", agent_view_size, 3, "an odd integer >= 3")
        if view % 2 == 0:
            raise ValueError(f"agent_view_size must be an odd integer >= 3, got {agent_view_size!r}")
        self.agent_view_size = view
        if see_through_walls is None:
            see_through_walls = _SEE_THROUGH_WALLS[task]
        if not isinstance(see_through_walls, (bool, np.bool_)):
            raise ValueError(f"see_through_walls must be True, False or None, got {see_through_walls!r}")
        self.see_through_walls = bool(see_through_walls)

        self.pad = view - 1
        self.width = self.size + 2 * self.pad
        self._rows = np.arange(self.num_envs)
        self._grid_base = self._rows * self.width**2  # start of each env's grid in the flat batch
        self._direction_step = _DIR_TO_VEC[:, 0] * self.width + _DIR_TO_VEC[:, 1]
        # View rows are padded to a multiple of 8 cells: numpy's take has fast paths for 8- and 16-byte items, so
        # whole rows of the visibility mask come out of one lookup (the padding cells repeat the agent's cell).
        self._row_width = 8 * -(-view // 8)
        self._view_offsets = self._egocentric_offsets()
        if view <= _MAX_TABLE_VIEW:
            self._visible_table, self._ahead_table = _visibility_table(view)
            self._row_masks = np.zeros((2**view, self._row_width), dtype=bool)
            self._row_masks[:, :view] = _bits_to_mask(view)
        self._template = self._empty_world()

        self.grid = np.tile(self._template, (self.num_envs, 1))
        self.agent_cell = np.full(self.num_envs, self._cell(1, 1), dtype=np.int64)
        self.direction = np.zeros(self.num_envs, dtype=np.int64)
        self.carrying = np.full(self.num_envs, EMPTY, dtype=np.uint8)
        self.step_count = np.zeros(self.num_envs, dtype=np.int64)

        image_shape = (self.size, self.size, 3) if self.full_observation else (view, view, 3)
        self.single_observation_space = spaces.Dict(
            {
                "image": spaces.Box(0, OBJECT_TO_IDX["agent"], image_shape, dtype=np.uint8),
                "direction": spaces.Discrete(4),
            }
        )
        self.single_action_space = spaces.Discrete(len(Actions))

    # --- layout ---

    def _cell(self, x: Any, y: Any) -> Any:
        """Flat padded index of world cell ``(x, y)`` (ints or arrays)."""
        return (np.asarray(x) + self.pad) * self.width + (np.asarray(y) + self.pad)

    def _empty_world(self) -> np.ndarray:
        """``(W*W,)`` codes: walls everywhere outside the interior, an empty interior and the goal bottom-right."""
        world = np.full((self.width, self.width), WALL, dtype=np.uint8)
        inner = slice(self.pad + 1, self.pad + self.size - 1)
        world[inner, inner] = EMPTY
        world[self.pad + self.size - 2, self.pad + self.size - 2] = GOAL
        return world.reshape(-1)

    def _egocentric_offsets(self) -> np.ndarray:
        """``(4, V * R)`` flat offsets from the agent's cell of view cell ``(vx, vy)`` at ``vy * R + vx``.

        As in Minigrid's ``get_view_coords``: the agent sits at ``(V // 2, V - 1)`` looking towards ``vy = 0``, so
        view cell ``(vx, vy)`` is ``agent + (vx - V // 2) * right + (V - 1 - vy) * forward`` in the world. Rows of
        the view (fixed ``vy``) are contiguous, padded to ``R`` cells, because the occlusion works row by row.
        """
        view = self.agent_view_size
        vy, vx = np.meshgrid(np.arange(view), np.arange(view), indexing="ij")
        offsets = np.zeros((4, view, self._row_width), dtype=np.int64)
        for direction, (dx, dy) in enumerate(_DIR_TO_VEC):
            rx, ry = -dy, dx
            ox = (vx - view // 2) * rx + (view - 1 - vy) * dx
            oy = (vx - view // 2) * ry + (view - 1 - vy) * dy
            offsets[direction, :, :view] = ox * self.width + oy
        offsets = offsets.reshape(4, -1)
        return offsets

    def reset_envs(self, indices: np.ndarray) -> None:
        """Draw new layouts for ``indices`` from their random streams, all at once."""
        indices = np.asarray(indices, dtype=np.int64)
        if indices.size == 0:
            return
        size = self.size
        self.grid[indices] = self._template
        self.carrying[indices] = EMPTY
        self.step_count[indices] = 0
        rows = indices[:, None]
        if self.task == "empty":
            # MiniGrid-Empty: agent in the top-left corner facing right
            self.agent_cell[indices] = self._cell(1, 1)
            self.direction[indices] = 0
        elif self.task == "doorkey":
            # MiniGrid-DoorKey: a wall at x in [2, size-2) with a locked door at y in [1, size-2); agent (random
            # direction) and key on distinct random cells left of the wall.
            draws = self.rng.random(indices, 5)
            split = 2 + np.floor(draws[:, 0] * (size - 4)).astype(np.int64)
            door_y = 1 + np.floor(draws[:, 1] * (size - 3)).astype(np.int64)
            room_width = split - 1
            room_cells = room_width * (size - 2)
            agent = np.floor(draws[:, 2] * room_cells).astype(np.int64)
            key = np.floor(draws[:, 3] * (room_cells - 1)).astype(np.int64)
            key += key >= agent  # a uniform cell among the others
            self.grid[rows, self._cell(split[:, None], np.arange(size)[None, :])] = WALL
            self.grid[indices, self._cell(split, door_y)] = DOOR_LOCKED
            self.grid[indices, self._cell(1 + key % room_width, 1 + key // room_width)] = KEY
            self.agent_cell[indices] = self._cell(1 + agent % room_width, 1 + agent // room_width)
            self.direction[indices] = np.floor(draws[:, 4] * 4).astype(np.int64)
        else:
            # MiniGrid-LavaGap: a lava column at x in [2, size-2) with one gap at y in [1, size-1); agent top-left
            draws = self.rng.random(indices, 2)
            gap_x = 2 + np.floor(draws[:, 0] * (size - 4)).astype(np.int64)
            gap_y = 1 + np.floor(draws[:, 1] * (size - 2)).astype(np.int64)
            self.grid[rows, self._cell(gap_x[:, None], np.arange(1, size - 1)[None, :])] = LAVA
            self.grid[indices, self._cell(gap_x, gap_y)] = EMPTY
            self.agent_cell[indices] = self._cell(1, 1)
            self.direction[indices] = 0

    # --- dynamics ---

    def step(
        self, actions: np.ndarray, active: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Minigrid's ``step`` for every env at once; inactive envs take no action and keep their step count."""
        if active is not None:
            actions = np.where(active, actions, Actions.done)
        front = self.agent_cell + self._direction_step[self.direction]
        front_code = self.grid[self._rows, front]

        turn = (actions == Actions.right).astype(np.int64) - (actions == Actions.left)
        self.direction = (self.direction + turn) % 4

        move = (actions == Actions.forward) & _CAN_OVERLAP[front_code]
        self.agent_cell = np.where(move, front, self.agent_cell)
        reached_goal = move & (front_code == GOAL)
        entered_lava = move & (front_code == LAVA)

        hands_free = self.carrying == EMPTY
        pickup = (actions == Actions.pickup) & (front_code == KEY) & hands_free
        drop = (actions == Actions.drop) & (front_code == EMPTY) & ~hands_free
        # a locked door opens only for the (yellow) key; open and closed doors toggle freely
        toggle = (actions == Actions.toggle) & (_TOGGLED[front_code] != front_code)
        toggle &= (front_code != DOOR_LOCKED) | (self.carrying == KEY)
        changed = pickup | drop | toggle
        if changed.any():
            new_code = np.where(pickup, EMPTY, np.where(drop, self.carrying, _TOGGLED[front_code]))
            self.grid[self._rows[changed], front[changed]] = new_code[changed]
            self.carrying = np.where(pickup, front_code, np.where(drop, EMPTY, self.carrying)).astype(np.uint8)

        self.step_count += 1 if active is None else active
        reward = np.where(reached_goal, 1.0 - 0.9 * self.step_count / self.max_steps, 0.0)
        terminated = reached_goal | entered_lava
        truncated = (self.step_count >= self.max_steps) & ~terminated
        if active is not None:
            truncated &= active
        info = {"is_success": reached_goal, "reward_terms": {"goal": reward}}
        return reward, terminated, truncated, info

    # --- observation ---

    @property
    def step_limit(self) -> int:
        return self.max_steps

    def observe(self) -> dict[str, np.ndarray]:
        """``{"image": (N, V, V, 3) or (N, size, size, 3) uint8, "direction": (N,) int64}``, fresh arrays."""
        if self.full_observation:
            image = self._full_image()
        else:
            image = self._egocentric_image()
        return {"image": image, "direction": self.direction.copy()}

    def _full_image(self) -> np.ndarray:
        """Minigrid's ``FullyObsWrapper`` encoding ``(N, size, size, 3)``, indexed ``[x, y]``, agent marked."""
        inner = slice(self.pad, self.pad + self.size)
        image = _encode(self.grid.reshape(self.num_envs, self.width, self.width)[:, inner, inner])
        x = self.agent_cell // self.width - self.pad
        y = self.agent_cell % self.width - self.pad
        image[self._rows, x, y, 0] = OBJECT_TO_IDX["agent"]
        image[self._rows, x, y, 1] = COLOR_TO_IDX["red"]
        image[self._rows, x, y, 2] = self.direction
        return image

    def _egocentric_image(self) -> np.ndarray:
        """Minigrid's ``gen_obs`` image ``(N, V, V, 3)``, indexed ``[vx, vy]``, with its occlusion."""
        view = self.agent_view_size
        # one gather of the view codes, (N, V, R) row-major [vy, vx], from the flat padded grids (the index is
        # built in place: two live megabyte temporaries cost more in fresh-page faults than the arithmetic)
        index = np.take(self._view_offsets, self.direction, axis=0)
        index += (self._grid_base + self.agent_cell)[:, None]
        codes = np.take(self.grid.reshape(-1), index).reshape(self.num_envs, view, self._row_width)
        if not self.see_through_walls:
            codes *= self._visibility(codes)
        # Minigrid shows the carried object (or nothing) in the agent's own cell
        codes[:, view - 1, view // 2] = self.carrying
        return _encode(codes[:, :, :view].transpose(0, 2, 1))

    def _visibility(self, codes: np.ndarray) -> np.ndarray:
        """Minigrid's ``process_vis`` over the batch: view codes ``(N, V, R)`` ``[vy, vx]`` -> visible, same shape."""
        view = self.agent_view_size
        transparent = (codes - np.uint8(_FIRST_OPAQUE)) >= np.uint8(_NUM_OPAQUE)  # uint8 wraps below WALL
        seen = np.full(self.num_envs, 1 << (view // 2), dtype=np.int64)  # the agent's own cell
        if view > _MAX_TABLE_VIEW:
            visible = np.zeros(codes.shape, dtype=bool)
            seen_row = (seen[:, None] >> np.arange(view)) & 1 == 1
            for vy in range(view - 1, -1, -1):
                visible[:, vy, :view], seen_row = _sweep_row(seen_row, transparent[:, vy, :view])
            return visible
        # bit vx of row_bits[:, vy]: whether one sees behind cell (vx, vy); rows of R cells pack into R / 8 bytes
        packed = np.packbits(transparent.reshape(-1), bitorder="little").reshape(self.num_envs, view, -1)
        row_bits = packed.view(f"<u{self._row_width // 8}")[:, :, 0].astype(np.int64) & (2**view - 1)
        visible_bits = np.empty((self.num_envs, view), dtype=np.int64)
        for vy in range(view - 1, -1, -1):  # from the agent's row away from it
            index = (seen << view) | row_bits[:, vy]
            visible_bits[:, vy] = self._visible_table[index]
            seen = self._ahead_table[index]
        return np.take(self._row_masks, visible_bits, axis=0)

    # --- rendering ---

    def render(self, index: int, mode: str) -> np.ndarray:
        """The whole grid of env ``index`` as an ``(size*16, size*16, 3)`` uint8 picture, agent as a red triangle."""
        if mode != "rgb_array":
            raise ValueError(f"render mode {mode!r} is not supported; accepted: ['rgb_array']")
        tiles, triangles = _tiles(TILE_SIZE)
        inner = slice(self.pad, self.pad + self.size)
        codes = self.grid[index].reshape(self.width, self.width)[inner, inner].T  # rows are y
        frame = tiles[codes].transpose(0, 2, 1, 3, 4).reshape(self.size * TILE_SIZE, self.size * TILE_SIZE, 3)
        x = int(self.agent_cell[index] // self.width - self.pad)
        y = int(self.agent_cell[index] % self.width - self.pad)
        agent_tile = frame[y * TILE_SIZE : (y + 1) * TILE_SIZE, x * TILE_SIZE : (x + 1) * TILE_SIZE]
        agent_tile[triangles[self.direction[index]]] = _AGENT_RGB
        return frame

    def agent_position(self) -> np.ndarray:
        """``(N, 2)`` int64 world coordinates ``(x, y)`` of the agents."""
        return np.stack([self.agent_cell // self.width - self.pad, self.agent_cell % self.width - self.pad], axis=1)

    def world(self) -> np.ndarray:
        """``(N, size, size)`` uint8 cell codes of the worlds, indexed ``[x, y]`` (a copy; the agent not marked)."""
        inner = slice(self.pad, self.pad + self.size)
        return self.grid.reshape(self.num_envs, self.width, self.width)[:, inner, inner].copy()


# --- the front ends ----------------------------------------------------------------------------------------------

_DOCSTRING = """
    ## Description

    Procedurally generated grid worlds in the style of Minigrid, with Minigrid's observation encoding, actions,
    dynamics and reward. The agent, a triangle, moves on a ``size`` x ``size`` grid whose outer ring is wall.
    Three tasks:

    * ``"empty"`` (like ``MiniGrid-Empty``): an empty room; reach the green goal in the bottom-right corner.
    * ``"doorkey"`` (like ``MiniGrid-DoorKey``): a vertical wall splits the room; the goal is behind a locked
      yellow door in that wall. Pick up the yellow key on the agent's side, open the door (toggle), then go to the
      goal. Sparse reward, long horizon.
    * ``"lava"`` (like ``MiniGrid-LavaGap``): a vertical column of lava with one gap separates the agent from the
      goal; stepping into lava ends the episode with no reward.

    ## Action Space

    ``Discrete(7)``, Minigrid's actions: 0 turn left, 1 turn right, 2 forward (blocked by walls, closed or locked
    doors and the key), 3 pick up the object in front (the key; only with empty hands), 4 drop the carried object
    onto the empty cell in front, 5 toggle the object in front (opens a locked door only when carrying the key;
    opens or closes an unlocked door), 6 done (does nothing).

    ## Observation Space

    ``Dict(image=Box(0, 10, (7, 7, 3), uint8), direction=Discrete(4))``. ``image`` is Minigrid's egocentric view
    (``MiniGridEnv.gen_obs``): each cell is (object, colour, state) with Minigrid's ``OBJECT_TO_IDX``,
    ``COLOR_TO_IDX`` and ``STATE_TO_IDX``, indexed ``[vx, vy]`` with the agent at ``(3, 6)`` looking towards
    ``vy = 0``. Cells outside the grid are walls; cells hidden behind walls and closed doors are 0 ("unseen")
    unless ``see_through_walls``; the agent's own cell shows the carried object. ``direction`` is 0 right, 1 down,
    2 left, 3 up. With ``full_observation=True``, ``image`` is the whole ``(size, size, 3)`` grid (Minigrid's
    ``FullyObsWrapper``: indexed ``[x, y]``, the agent's cell is (10, 0, direction)). The image bound is 10, not
    Minigrid's 255, so that stable-baselines3 flattens it for an MLP instead of sending it to a CNN. There is no
    ``mission`` string.

    ## Rewards

    ``1 - 0.9 * steps / max_steps`` on reaching the goal, 0 otherwise (also 0 for lava).
    ``info["reward_terms"]["goal"]`` carries it; ``info["is_success"]`` says whether the goal was reached.

    ## Starting State

    ``"empty"`` and ``"lava"``: the agent at (1, 1) facing right. ``"doorkey"``: the agent and the key on distinct
    random cells left of the wall, random direction; wall at a random column in ``[2, size - 2)``, door at a random
    row in ``[1, size - 2)``. ``"lava"``: lava column at a random column in ``[2, size - 2)``, gap at a random row.
    The goal is always at ``(size - 2, size - 2)``. ``reset(seed=s)`` reproduces the layout exactly, in the single
    env and in any slot of the vector env.

    ## Episode End

    Terminated on reaching the goal or entering lava. Truncated after ``max_steps`` steps, never on the same step as
    a termination. As in Minigrid, the env applies this limit itself: the ids register no ``TimeLimit`` wrapper
    (``env.spec.max_episode_steps`` is None), so ``max_steps=`` changes the limit and the reward's budget together.

    ## Arguments

    ``gymnasium.make("rlopt/GridGame-DoorKey-5x5-v0", render_mode="rgb_array")`` or
    ``gymnasium.make_vec("rlopt/GridGame-DoorKey-5x5-v0", num_envs=4096)``. Keyword arguments:

    * ``task``: ``"empty"``, ``"doorkey"`` or ``"lava"``.
    * ``size``: grid size including the outer walls (Minigrid's convention: size 5 has a 3 x 3 interior).
    * ``max_steps``: step budget in the reward and the time limit; None (what every registered id uses) gives
      Minigrid's default (``4 * size**2`` for empty and lava, ``10 * size**2`` for doorkey).
    * ``full_observation``: the whole grid instead of the egocentric view (default False).
    * ``agent_view_size``: odd side of the egocentric view (default 7, Minigrid's).
    * ``see_through_walls``: skip the occlusion; None gives the Minigrid task's setting (True for empty as in
      ``MiniGrid-Empty``, False for doorkey and lava).
    * ``render_mode``: ``"rgb_array"`` gives the whole grid as an ``(16 * size, 16 * size, 3)`` uint8 picture.

    ## Version History

    * v0: initial version.
"""


class GridGameEnv(SingleEnv):
    __doc__ = "A single Minigrid-style grid world (a view of one :class:`GridCore`).\n" + _DOCSTRING
    core_class = GridCore
    # gymnasium.make checks render_mode against the class attribute, before SingleEnv copies the core's metadata
    metadata: ClassVar[dict[str, Any]] = GridCore.metadata


class GridGameVectorEnv(BatchedVectorEnv):
    __doc__ = "``num_envs`` Minigrid-style grid worlds stepped as one numpy batch.\n" + _DOCSTRING
    core_class = GridCore
    metadata: ClassVar[dict[str, Any]] = GridCore.metadata

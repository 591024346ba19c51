"""The grid game: Minigrid equivalence, scripted solutions, episode ends, seeding, rendering and bad input."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.preprocessing import is_image_space

import envs  # noqa: F401  (registers the ids)
from envs import grid_game as gg
from envs.core import InvalidActionError
from envs.grid_game import Actions, GridCore, GridGameEnv, GridGameVectorEnv

GRID_IDS = [env_id for env_id in envs.ENV_IDS if env_id.startswith("rlopt/GridGame")]
SOLVER_IDS = [
    "rlopt/GridGame-Empty-5x5-v0",
    "rlopt/GridGame-Empty-8x8-v0",
    "rlopt/GridGame-DoorKey-5x5-v0",
    "rlopt/GridGame-DoorKey-8x8-v0",
    "rlopt/GridGame-Lava-7x7-v0",
]
SB3_IMAGE_WARNINGS = [
    "ignore:It seems that your observation space image is an image:UserWarning",
    "ignore:The minimal resolution for an image is 36x36:UserWarning",
]


def _core(env: gym.Env) -> GridCore:
    return env.unwrapped.core


# --- Minigrid equivalence ----------------------------------------------------------------------------------------


def _to_minigrid(core: GridCore, index: int, minigrid_env) -> None:
    """Copy env ``index`` of ``core`` (grid, agent, carried key, step count) into a Minigrid env."""
    from minigrid.core.grid import Grid
    from minigrid.core.world_object import Door, Goal, Key, Lava, Wall

    makers = {
        gg.WALL: Wall,
        gg.GOAL: Goal,
        gg.LAVA: Lava,
        gg.KEY: lambda: Key("yellow"),
        gg.DOOR_OPEN: lambda: Door("yellow", is_open=True),
        gg.DOOR_CLOSED: lambda: Door("yellow"),
        gg.DOOR_LOCKED: lambda: Door("yellow", is_locked=True),
    }
    world = core.world()[index]
    grid = Grid(core.size, core.size)
    for x in range(core.size):
        for y in range(core.size):
            if int(world[x, y]) in makers:
                grid.set(x, y, makers[int(world[x, y])]())
    minigrid_env.grid = grid
    minigrid_env.agent_pos = tuple(int(v) for v in core.agent_position()[index])
    minigrid_env.agent_dir = int(core.direction[index])
    minigrid_env.carrying = Key("yellow") if core.carrying[index] == gg.KEY else None
    minigrid_env.step_count = int(core.step_count[index])
    minigrid_env.see_through_walls = core.see_through_walls


def test_empty_5x5_start_and_walk_match_minigrid() -> None:
    pytest.importorskip("minigrid")
    reference = gym.make("MiniGrid-Empty-5x5-v0")
    ours = gym.make("rlopt/GridGame-Empty-5x5-v0")
    expected, _ = reference.reset(seed=0)
    observation, _ = ours.reset(seed=0)
    np.testing.assert_array_equal(observation["image"], expected["image"])
    assert observation["direction"] == expected["direction"] == 0
    # Empty is deterministic: the same walk gives the same views, and the same reward at the goal
    walk = [Actions.left, Actions.forward, Actions.right, Actions.forward, Actions.forward, Actions.right]
    walk += [Actions.forward, Actions.toggle, Actions.pickup, Actions.forward]
    for action in walk:
        expected, expected_reward, expected_terminated, _, _ = reference.step(int(action))
        observation, reward, terminated, _, _ = ours.step(int(action))
        np.testing.assert_array_equal(observation["image"], expected["image"])
        assert observation["direction"] == expected["direction"]
        assert reward == pytest.approx(expected_reward) and terminated == expected_terminated
    assert terminated and reward == pytest.approx(1 - 0.9 * len(walk) / 100)


@pytest.mark.parametrize(
    ("task", "size", "view"),
    [("doorkey", 5, 7), ("doorkey", 8, 7), ("lava", 7, 7), ("empty", 6, 7), ("doorkey", 7, 3), ("doorkey", 8, 11)],
)
def test_random_play_matches_minigrid(task: str, size: int, view: int) -> None:
    """Random actions in Minigrid and in our core, from the same worlds: same views, rewards and episode ends.

    View size 11 exercises the direct occlusion sweep (no lookup table).
    """
    pytest.importorskip("minigrid")
    from minigrid.envs import EmptyEnv

    num_envs, steps = 12, 60
    core = GridCore(num_envs, task=task, size=size, agent_view_size=view)
    core.rng.seed(np.arange(num_envs), list(range(num_envs)))
    core.reset_envs(np.arange(num_envs))
    references = []
    for index in range(num_envs):
        reference = EmptyEnv(size=size, max_steps=core.max_steps, agent_view_size=view)
        reference.reset(seed=0)
        _to_minigrid(core, index, reference)
        references.append(reference)
    rng = np.random.default_rng(0)
    # forward-heavy play so that agents reach keys, doors, lava and goals
    probabilities = np.array([0.15, 0.15, 0.4, 0.1, 0.05, 0.15, 0.0])
    for _ in range(steps):
        observation = core.observe()
        for index, reference in enumerate(references):
            expected = reference.gen_obs()
            np.testing.assert_array_equal(observation["image"][index], expected["image"])
            assert observation["direction"][index] == expected["direction"]
        actions = rng.choice(7, size=num_envs, p=probabilities)
        reward, terminated, truncated, info = core.step(actions, None)
        for index, reference in enumerate(references):
            _, expected_reward, expected_terminated, _, _ = reference.step(int(actions[index]))
            assert reward[index] == pytest.approx(expected_reward)
            assert terminated[index] == expected_terminated
            assert info["is_success"][index] == (expected_reward > 0)
            if terminated[index] or truncated[index]:
                core.reset_envs(np.array([index]))
                _to_minigrid(core, index, reference)


def test_full_observation_matches_minigrid_fully_obs_wrapper() -> None:
    pytest.importorskip("minigrid")
    from minigrid.envs import EmptyEnv
    from minigrid.wrappers import FullyObsWrapper

    core = GridCore(6, task="doorkey", size=8, full_observation=True)
    core.reset_envs(np.arange(6))
    core.step(np.array([Actions.forward, Actions.left, Actions.pickup, Actions.right, Actions.forward, 0]), None)
    image = core.observe()["image"]
    assert image.shape == (6, 8, 8, 3)
    for index in range(6):
        reference = FullyObsWrapper(EmptyEnv(size=8))
        reference.reset(seed=0)
        _to_minigrid(core, index, reference.unwrapped)
        expected = reference.observation(reference.unwrapped.gen_obs())["image"]
        np.testing.assert_array_equal(image[index], expected)


def test_visibility_table_agrees_with_row_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    """The lookup-table occlusion and the direct row sweep give the same masks on random views."""
    rng = np.random.default_rng(1)
    core = GridCore(64, task="doorkey", size=8, agent_view_size=9)
    codes = rng.choice([gg.EMPTY, gg.WALL, gg.DOOR_CLOSED, gg.DOOR_OPEN, gg.KEY], size=(64, 9, 16)).astype(np.uint8)
    with_table = core._visibility(codes)
    monkeypatch.setattr(gg, "_MAX_TABLE_VIEW", 7)
    without_table = core._visibility(codes)
    np.testing.assert_array_equal(with_table, without_table)
    assert with_table[:, 8, 4].all()  # the agent always sees its own cell
    assert 0 < with_table[:, :, :9].mean() < 1


# --- a scripted solver -------------------------------------------------------------------------------------------


def _navigate(core: GridCore, done: Callable[[int, int, int], bool]) -> list[int]:
    """Shortest left/right/forward action list (BFS over position and direction) until ``done(x, y, d)``.

    Walks only on empty cells, open doors and the goal (never lava).
    """
    world = core.world()[0]
    walkable = np.isin(world, [gg.EMPTY, gg.DOOR_OPEN, gg.GOAL])
    start = (*(int(v) for v in core.agent_position()[0]), int(core.direction[0]))
    parents: dict[tuple[int, int, int], tuple[tuple[int, int, int], int] | None] = {start: None}
    queue = deque([start])
    while queue:
        state = queue.popleft()
        x, y, d = state
        if done(x, y, d):
            actions: list[int] = []
            while parents[state] is not None:
                state, action = parents[state]
                actions.append(action)
            return actions[::-1]
        dx, dy = gg._DIR_TO_VEC[d]
        moves = [((x, y, (d - 1) % 4), Actions.left), ((x, y, (d + 1) % 4), Actions.right)]
        if walkable[x + dx, y + dy]:
            moves.append(((x + dx, y + dy, d), Actions.forward))
        for successor, action in moves:
            if successor not in parents:
                parents[successor] = (state, int(action))
                queue.append(successor)
    raise AssertionError("no path")


def _facing(target: tuple[int, int]) -> Callable[[int, int, int], bool]:
    return lambda x, y, d: (x + gg._DIR_TO_VEC[d][0], y + gg._DIR_TO_VEC[d][1]) == target


def _solve(env: gym.Env) -> tuple[list[int], float, bool, dict]:
    """Play a scripted solution on a reset env; returns the actions, last reward, terminated and info."""
    core = _core(env)
    goal = (core.size - 2, core.size - 2)
    taken: list[int] = []

    def play(actions: list[int]) -> tuple[float, bool, dict]:
        result = (0.0, False, {})
        for action in actions:
            _, reward, terminated, truncated, info = env.step(action)
            taken.append(action)
            assert not truncated
            result = (reward, terminated, info)
        return result

    if core.task == "doorkey":
        world = core.world()[0]
        key = tuple(int(v) for v in np.argwhere(world == gg.KEY)[0])
        door = tuple(int(v) for v in np.argwhere(world == gg.DOOR_LOCKED)[0])
        play([*_navigate(core, _facing(key)), Actions.pickup])
        assert core.carrying[0] == gg.KEY
        play([*_navigate(core, _facing(door)), Actions.toggle])
        assert core.world()[0][door] == gg.DOOR_OPEN
    reward, terminated, info = play(_navigate(core, lambda x, y, d: (x, y) == goal))
    return taken, reward, terminated, info


@pytest.mark.parametrize("env_id", SOLVER_IDS)
def test_scripted_solver_reaches_the_goal(env_id: str) -> None:
    env = gym.make(env_id)
    max_steps = _core(env).max_steps
    for seed in range(40):
        env.reset(seed=seed)
        actions, reward, terminated, info = _solve(env)
        assert terminated and info["is_success"]
        assert reward == pytest.approx(1 - 0.9 * len(actions) / max_steps)
        assert info["reward_terms"]["goal"] == pytest.approx(reward)


# --- dynamics and episode ends -----------------------------------------------------------------------------------


def _set_agent(core: GridCore, x: int, y: int, direction: int) -> None:
    core.agent_cell[0] = core._cell(x, y)
    core.direction[0] = direction


def test_lava_terminates_with_zero_reward() -> None:
    env = gym.make("rlopt/GridGame-Lava-7x7-v0")
    env.reset(seed=3)
    core = _core(env)
    lava = np.argwhere(core.world()[0] == gg.LAVA)[0]
    _set_agent(core, int(lava[0]) - 1, int(lava[1]), 0)  # just left of a lava cell, facing it
    _, reward, terminated, truncated, info = env.step(Actions.forward)
    assert terminated and not truncated
    assert reward == 0.0 and not info["is_success"] and info["reward_terms"]["goal"] == 0.0


def test_lava_layout_has_one_gap_and_start_like_lavagap() -> None:
    core = GridCore(200, task="lava", size=7)
    core.reset_envs(np.arange(200))
    world = core.world()
    columns = np.flatnonzero((world == gg.LAVA).any(axis=(0, 2)))
    assert set(columns) <= {2, 3, 4}
    for index in range(200):
        column = int(np.flatnonzero((world[index] == gg.LAVA).any(axis=1))[0])
        assert (world[index, column, 1:-1] == gg.LAVA).sum() == core.size - 3  # one gap
    np.testing.assert_array_equal(core.agent_position(), np.tile([1, 1], (200, 1)))
    assert (core.direction == 0).all()


def test_truncation_at_max_steps() -> None:
    env = gym.make("rlopt/GridGame-Empty-5x5-v0")
    env.reset(seed=0)
    for step in range(1, 101):
        _, reward, terminated, truncated, _ = env.step(Actions.done)
        assert reward == 0.0 and not terminated
        assert truncated == (step == 100)
    core = GridCore(3, task="empty", size=5, max_steps=4)
    core.reset_envs(np.arange(3))
    for step in range(1, 5):
        _, _, truncated, _ = core.step(np.full(3, Actions.left), None)
        assert truncated.all() == (step == 4)


@pytest.mark.parametrize(
    ("env_id", "steps"),
    [("rlopt/GridGame-Empty-5x5-v0", 100), ("rlopt/GridGame-DoorKey-8x8-v0", 640), ("rlopt/GridGame-Lava-7x7-v0", 196)],
)
def test_the_env_applies_its_own_time_limit(env_id: str, steps: int) -> None:
    """Like Minigrid, no TimeLimit wrapper: max_steps= moves the limit and the reward's budget together, for the single
    and the vector env, and the size moves Minigrid's default limit."""
    from rlopt.vector import episode_step_limit

    assert gym.spec(env_id).max_episode_steps is None
    assert _core(gym.make(env_id)).max_steps == steps == episode_step_limit(env_id)
    assert episode_step_limit(env_id, {"max_steps": 7}) == 7
    assert _core(gym.make("rlopt/GridGame-v0", size=8)).max_steps == 640  # doorkey: 10 * size**2
    env = gym.make("rlopt/GridGame-Empty-5x5-v0", max_steps=150)
    env.reset(seed=0)
    for step in range(1, 151):
        _, _, terminated, truncated, _ = env.step(Actions.done)
        assert not terminated and truncated == (step == 150)
    vector = gym.make_vec("rlopt/GridGame-Empty-5x5-v0", num_envs=2, max_steps=150)
    vector.reset(seed=0)
    for step in range(1, 151):
        _, _, _, truncated, _ = vector.step(np.full(2, Actions.done))
        assert truncated.all() == (step == 150) and truncated.any() == (step == 150)


def test_a_goal_on_the_last_step_is_terminated_only() -> None:
    """Departure 3 of the module docstring, through gymnasium.make: the goal reached on the step that uses up the
    budget is a termination, not also a truncation (a registered TimeLimit used to set both)."""
    env = gym.make("rlopt/GridGame-Empty-5x5-v0")
    env.reset(seed=0)
    # 95 no-ops, then right, right, turn, right, right: the goal (3, 3) from (1, 1) facing right on step 100
    actions = [Actions.done] * 95 + [Actions.forward, Actions.forward, Actions.right, Actions.forward, Actions.forward]
    for action in actions:
        _, reward, terminated, truncated, info = env.step(action)
    assert terminated and not truncated and info["is_success"]
    assert reward == pytest.approx(1 - 0.9 * 100 / 100)


def test_vector_env_truncates_and_autoresets() -> None:
    env = gym.make_vec("rlopt/GridGame-Empty-5x5-v0", num_envs=3, vectorization_mode="vector_entry_point")
    assert isinstance(env.unwrapped, GridGameVectorEnv)
    env.reset(seed=0)
    for _ in range(99):
        _, _, terminated, truncated, _ = env.step(np.full(3, Actions.left))
        assert not truncated.any() and not terminated.any()
    _, _, _, truncated, _ = env.step(np.full(3, Actions.left))
    assert truncated.all()
    _, _, _, truncated, _ = env.step(np.full(3, Actions.left))  # NEXT_STEP autoreset
    assert not truncated.any() and (_core(env).step_count == 0).all()


def test_doorkey_needs_the_key_and_toggle() -> None:
    env = gym.make("rlopt/GridGame-DoorKey-5x5-v0")
    core = _core(env)
    for seed in range(20):  # a layout where the key does not stand right before the door
        env.reset(seed=seed)
        world = core.world()[0]
        door = tuple(int(v) for v in np.argwhere(world == gg.DOOR_LOCKED)[0])
        key = tuple(int(v) for v in np.argwhere(world == gg.KEY)[0])
        if key != (door[0] - 1, door[1]):
            break
    for action in _navigate(core, _facing(door)):
        env.step(action)
    before = core.agent_position()[0].copy()
    for action in (Actions.forward, Actions.toggle, Actions.forward):  # locked: no way through without the key
        env.step(action)
    np.testing.assert_array_equal(core.agent_position()[0], before)
    assert core.world()[0][door] == gg.DOOR_LOCKED
    for action in [*_navigate(core, _facing(key)), Actions.pickup]:
        env.step(action)
    for action in _navigate(core, _facing(door)):  # planned after the key is gone from the grid
        env.step(action)
    assert core.carrying[0] == gg.KEY
    observation, _, _, _, _ = env.step(Actions.toggle)
    assert core.world()[0][door] == gg.DOOR_OPEN
    np.testing.assert_array_equal(observation["image"][3, 6], [5, 4, 0])  # the carried key shows in the agent's cell
    np.testing.assert_array_equal(observation["image"][3, 5], [4, 4, 0])  # an open yellow door in front
    env.step(Actions.toggle)  # an unlocked door closes again ...
    assert core.world()[0][door] == gg.DOOR_CLOSED
    env.step(Actions.forward)  # ... and blocks
    assert tuple(core.agent_position()[0]) != door
    env.step(Actions.toggle)
    env.step(Actions.forward)
    assert tuple(core.agent_position()[0]) == door


def test_pickup_and_drop() -> None:
    env = gym.make("rlopt/GridGame-DoorKey-8x8-v0")
    env.reset(seed=11)
    core = _core(env)
    key = tuple(int(v) for v in np.argwhere(core.world()[0] == gg.KEY)[0])
    # stand below the key (or above it on the bottom row) facing away from it
    below = core.world()[0][key[0], key[1] + 1] == gg.EMPTY
    _set_agent(core, key[0], key[1] + 1 if below else key[1] - 1, 1 if below else 3)
    env.step(Actions.pickup)  # nothing in front
    assert core.carrying[0] == gg.EMPTY
    env.step(Actions.left)
    env.step(Actions.left)
    env.step(Actions.pickup)
    assert core.carrying[0] == gg.KEY and core.world()[0][key] == gg.EMPTY
    env.step(Actions.toggle)  # nothing to toggle in front
    env.step(Actions.drop)
    assert core.carrying[0] == gg.EMPTY and core.world()[0][key] == gg.KEY
    position = tuple(core.agent_position()[0])
    env.step(Actions.forward)  # the key blocks the way
    assert tuple(core.agent_position()[0]) == position


def test_inactive_envs_are_untouched() -> None:
    core = GridCore(8, task="doorkey", size=8)
    core.reset_envs(np.arange(8))
    active = np.arange(8) % 2 == 0
    before = (core.grid.copy(), core.agent_cell.copy(), core.direction.copy(), core.step_count.copy())
    rng = np.random.default_rng(0)
    for _ in range(30):
        reward, terminated, truncated, _ = core.step(rng.integers(0, 7, 8), active)
        assert (reward[~active] == 0).all() and not terminated[~active].any() and not truncated[~active].any()
    for old, new in zip(before, (core.grid, core.agent_cell, core.direction, core.step_count), strict=True):
        np.testing.assert_array_equal(old[~active], new[~active])
    assert (core.step_count[active] == 30).all()


# --- seeding, spaces, rendering ----------------------------------------------------------------------------------


@pytest.mark.parametrize("env_id", ["rlopt/GridGame-DoorKey-8x8-v0", "rlopt/GridGame-Lava-7x7-v0"])
def test_seeds_reproduce_layouts_and_differ(env_id: str) -> None:
    env = gym.make(env_id)
    layouts = []
    for seed in range(30):
        first, _ = env.reset(seed=seed)
        state = (_core(env).world().tobytes(), _core(env).agent_cell.tobytes(), _core(env).direction.tobytes())
        again, _ = env.reset(seed=seed)
        assert state == (_core(env).world().tobytes(), _core(env).agent_cell.tobytes(), _core(env).direction.tobytes())
        np.testing.assert_array_equal(first["image"], again["image"])
        layouts.append(state)
    assert len(set(layouts)) >= 5
    # the vector env puts seed s + i in slot i, with the same layout as the single env seeded s + i
    vector = gym.make_vec(env_id, num_envs=4, vectorization_mode="vector_entry_point")
    vector.reset(seed=10)
    for slot in range(4):
        env.reset(seed=10 + slot)
        np.testing.assert_array_equal(_core(vector).world()[slot], _core(env).world()[0])
        assert _core(vector).agent_cell[slot] == _core(env).agent_cell[0]


def test_doorkey_layout_like_minigrid() -> None:
    core = GridCore(500, task="doorkey", size=8)
    core.reset_envs(np.arange(500))
    world = core.world()
    positions = core.agent_position()
    splits = set()
    for index in range(500):
        walls = np.isin(world[index, 2:6, 1:-1], [gg.WALL, gg.DOOR_LOCKED]).all(axis=1)
        assert walls.sum() == 1
        split = 2 + int(np.flatnonzero(walls)[0])
        door_y = int(np.flatnonzero(world[index, split] == gg.DOOR_LOCKED)[0])
        key = tuple(np.argwhere(world[index] == gg.KEY)[0])
        assert 1 <= door_y < 6 and 1 <= key[0] < split and 1 <= positions[index, 0] < split
        assert key != tuple(positions[index]) and world[index, 6, 6] == gg.GOAL
        splits.add(split)
    assert splits == {2, 3, 4, 5} and set(core.direction) == {0, 1, 2, 3}


@pytest.mark.filterwarnings(*SB3_IMAGE_WARNINGS)
@pytest.mark.parametrize("env_id", GRID_IDS)
def test_checkers_pass(env_id: str) -> None:
    gym_check_env(gym.make(env_id, render_mode="rgb_array").unwrapped, skip_render_check=False)
    sb3_check_env(gym.make(env_id), warn=True)


def test_spaces_and_sb3_flattens_the_image() -> None:
    env = gym.make("rlopt/GridGame-DoorKey-5x5-v0")
    image_space = env.observation_space["image"]
    assert image_space.shape == (7, 7, 3) and image_space.dtype == np.uint8 and image_space.high.max() == 10
    assert not is_image_space(image_space)  # so SB3's MultiInputPolicy flattens it for an MLP
    assert env.action_space == gym.spaces.Discrete(7)
    full = gym.make("rlopt/GridGame-DoorKey-8x8-v0", full_observation=True)
    observation, _ = full.reset(seed=0)
    assert observation["image"].shape == (8, 8, 3) and full.observation_space.contains(observation)
    assert (observation["image"][..., 0] == gg.OBJECT_TO_IDX["agent"]).sum() == 1


def test_render_rgb_array() -> None:
    env = gym.make("rlopt/GridGame-DoorKey-8x8-v0", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (8 * gg.TILE_SIZE, 8 * gg.TILE_SIZE, 3) and frame.dtype == np.uint8
    x, y = _core(env).agent_position()[0]
    agent_tile = frame[y * gg.TILE_SIZE : (y + 1) * gg.TILE_SIZE, x * gg.TILE_SIZE : (x + 1) * gg.TILE_SIZE]
    assert (agent_tile == [255, 0, 0]).all(axis=-1).sum() > 20
    assert (frame[6 * gg.TILE_SIZE + 8, 6 * gg.TILE_SIZE + 8] == [0, 255, 0]).all()  # the goal
    env.step(Actions.left)
    assert not np.array_equal(env.render(), frame)
    vector = gym.make_vec("rlopt/GridGame-Empty-5x5-v0", num_envs=2, render_mode="rgb_array")
    vector.reset(seed=0)
    assert len(vector.render()) == 2


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "maze"}, "unknown task 'maze'"),
        ({"task": "doorkey", "size": 4}, "size must be an integer >= 5"),
        ({"size": 5.0}, "size must be"),
        ({"max_steps": 0}, "max_steps must be a positive integer"),
        ({"agent_view_size": 6}, "agent_view_size must be an odd integer >= 3, got 6"),
        ({"agent_view_size": 1}, "agent_view_size must be"),
        ({"full_observation": "yes"}, "full_observation must be True or False"),
        ({"see_through_walls": 1}, "see_through_walls must be"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GridGameEnv(**kwargs)


def test_bad_actions_raise_clear_errors() -> None:
    env = GridGameEnv(task="empty", size=5)
    env.reset(seed=0)
    with pytest.raises(InvalidActionError, match="accepted values are 0..6"):
        env.step(7)
    vector = GridGameVectorEnv(num_envs=3, task="empty", size=5, autoreset_mode=AutoresetMode.SAME_STEP)
    vector.reset(seed=0)
    with pytest.raises(InvalidActionError, match="shape"):
        vector.step(np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="render mode 'human'"):
        env.core.render(0, "human")


def test_stable_baselines3_ppo_learns_the_empty_room_unmodified(tmp_path, monkeypatch) -> None:
    """SB3's PPO, straight from gymnasium.make with no wrapper, raises its success rate on the easiest preset."""
    import torch

    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path))  # SB3's default logger otherwise leaves a folder in /tmp per run
    from stable_baselines3 import PPO
    from stable_baselines3.common.evaluation import evaluate_policy

    torch.set_num_threads(1)
    env = gym.make("rlopt/GridGame-Empty-5x5-v0")
    model = PPO("MultiInputPolicy", env, n_steps=512, batch_size=64, seed=0, verbose=0, device="cpu")

    def success_rate() -> float:
        _, lengths = evaluate_policy(model, env, n_eval_episodes=20, deterministic=True, return_episode_rewards=True)
        return float(np.mean(np.asarray(lengths) < 100))  # an episode shorter than the time limit reached the goal

    before = success_rate()
    model.learn(total_timesteps=8192)
    after = success_rate()
    assert after >= 0.9 and after > before, (before, after)

"""Conformance of every registered rlopt/... id: checkers, seeding, single vs vector, autoreset modes, bad input."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from envs import ENV_IDS
from envs.core import InvalidActionError, UnsupportedRenderMode

STEPS = 40
#: Like MiniGrid-Empty, the empty rooms start the agent top-left facing the goal whatever the seed.
FIXED_START = {"rlopt/GridGame-Empty-5x5-v0", "rlopt/GridGame-Empty-8x8-v0"}


def _actions(env_id: str, count: int, num_envs: int | None = None) -> list[np.ndarray]:
    """A fixed, seeded action sequence (batched when num_envs is given)."""
    space = gym.make(env_id).action_space
    space.seed(123)
    if num_envs is None:
        return [space.sample() for _ in range(count)]
    return [np.stack([space.sample() for _ in range(num_envs)]) for _ in range(count)]


def _flatten(observation) -> np.ndarray:
    if isinstance(observation, dict):
        return np.concatenate([np.asarray(observation[key], dtype=np.float64).ravel() for key in sorted(observation)])
    return np.asarray(observation, dtype=np.float64).ravel()


def _trajectory(env: gym.Env, seed: int, actions: list) -> list[tuple]:
    observation, _ = env.reset(seed=seed)
    out = [(_flatten(observation), 0.0, False, False)]
    for action in actions:
        observation, reward, terminated, truncated, _ = env.step(action)
        out.append((_flatten(observation), reward, terminated, truncated))
        if terminated or truncated:
            observation, _ = env.reset()
    return out


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_gymnasium_and_sb3_checkers(env_id: str) -> None:
    gym_check_env(gym.make(env_id).unwrapped, skip_render_check=False)
    sb3_check_env(gym.make(env_id), warn=True)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_seed_same_trajectory_and_different_seeds_differ(env_id: str) -> None:
    actions = _actions(env_id, STEPS)
    first = _trajectory(gym.make(env_id), 7, actions)
    second = _trajectory(gym.make(env_id), 7, actions)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    if env_id in FIXED_START:
        return
    starts = {tuple(_flatten(gym.make(env_id).reset(seed=seed)[0])) for seed in range(8)}
    assert len(starts) > 1, "eight different seeds gave the same start state"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_single_env_and_vector_env_agree_step_for_step(env_id: str) -> None:
    num_envs, seeds = 3, [11, 12, 13]
    vector = gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=AutoresetMode.NEXT_STEP)
    batched_actions = _actions(env_id, STEPS, num_envs)
    observation, _ = vector.reset(seed=seeds)
    singles = [gym.make(env_id) for _ in range(num_envs)]
    single_observations = [env.reset(seed=seed)[0] for env, seed in zip(singles, seeds, strict=True)]
    pending_reset = [False] * num_envs
    for actions in batched_actions:
        for i in range(num_envs):
            np.testing.assert_allclose(
                _flatten(
                    {k: v[i] for k, v in observation.items()} if isinstance(observation, dict) else observation[i]
                ),
                _flatten(single_observations[i]),
                rtol=1e-5,
                atol=1e-6,
            )
        observation, reward, terminated, truncated, _ = vector.step(actions)
        for i, env in enumerate(singles):
            if pending_reset[i]:  # NEXT_STEP: this step resets env i and ignores its action
                single_observations[i], _ = env.reset()
                pending_reset[i] = False
                assert reward[i] == 0 and not terminated[i] and not truncated[i]
                continue
            single_observations[i], r, te, tr, _ = env.step(actions[i])
            assert reward[i] == pytest.approx(r, rel=1e-5, abs=1e-6)
            assert (terminated[i], truncated[i]) == (te, tr)
            pending_reset[i] = te or tr


def _info_entries(info: dict, prefix: str = "") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Every leaf of a vector info dict as ``{path: (mask, values)}`` (final_obs left out: compared elsewhere)."""
    out = {}
    for key, value in info.items():
        if key.startswith("_") or key == "final_obs":
            continue
        if isinstance(value, dict):
            mask = np.asarray(info.get(f"_{key}"), dtype=bool)
            for path, (inner, values) in _info_entries(value, f"{prefix}{key}/").items():
                out[path] = (inner & mask, values)
        else:
            out[prefix + key] = (np.asarray(info[f"_{key}"], dtype=bool), np.asarray(value))
    return out


@pytest.mark.parametrize("mode", [AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP])
@pytest.mark.parametrize("env_id", ["rlopt/MathReasoning-v0", "rlopt/GridGame-Lava-7x7-v0"])
def test_autoreset_info_has_gymnasiums_layout(env_id: str, mode: AutoresetMode) -> None:
    """Against Gymnasium's own SyncVectorEnv over single envs: on an autoreset step an env's top-level info is its
    reset info (the math env's prompt_length), the step's info sits in final_info (SAME_STEP) or was given the step
    before (NEXT_STEP), and every key's mask and masked-in values agree."""
    seeds, num_envs = [3, 4, 5], 3
    native = gym.make_vec(env_id, num_envs=num_envs, autoreset_mode=mode)
    reference = gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode="sync", vector_kwargs={"autoreset_mode": mode}
    )
    native.reset(seed=seeds)
    reference.reset(seed=seeds)
    restarts = 0
    for actions in _actions(env_id, 300, num_envs):
        *_, terminated, truncated, info = native.step(actions)
        *_, info_reference = reference.step(actions)
        restarts += int((terminated | truncated).sum())
        entries, expected = _info_entries(info), _info_entries(info_reference)
        assert set(entries) == set(expected)
        for path, (mask, values) in expected.items():
            np.testing.assert_array_equal(entries[path][0], mask, err_msg=path)
            np.testing.assert_allclose(entries[path][1][mask], values[mask], rtol=1e-6, err_msg=path)
    assert restarts >= 3


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_vector_reset_accepts_seed_list_and_reproduces_slots(env_id: str) -> None:
    vector = gym.make_vec(env_id, num_envs=4)
    first, _ = vector.reset(seed=[5, 5, 6, 5])
    flat = [_flatten({k: v[i] for k, v in first.items()} if isinstance(first, dict) else first[i]) for i in range(4)]
    np.testing.assert_array_equal(flat[0], flat[1])
    np.testing.assert_array_equal(flat[0], flat[3])
    single = _flatten(gym.make(env_id).reset(seed=6)[0])
    np.testing.assert_array_equal(flat[2], single)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_disabled_autoreset_freezes_until_reset_mask(env_id: str) -> None:
    vector = gym.make_vec(env_id, num_envs=2, autoreset_mode=AutoresetMode.DISABLED)
    assert vector.metadata["autoreset_mode"] == AutoresetMode.DISABLED
    vector.reset(seed=[1, 2])
    actions = _actions(env_id, 2000, 2)
    ended = np.zeros(2, dtype=bool)
    for action in actions:
        _, reward, terminated, truncated, info = vector.step(action)
        assert reward[ended].sum() == 0, "a finished env earned reward before it was reset"
        ended |= terminated | truncated
        assert "is_success" in info and "reward_terms" in info
        if ended.all():
            break
    assert ended.all(), "episodes never ended within 2000 random steps"
    vector.reset(options={"reset_mask": np.array([True, False])})
    _, _, terminated, truncated, _ = vector.step(actions[0])
    assert (terminated | truncated)[1], "the env left out of reset_mask should stay finished"


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_same_step_autoreset_reports_final_observation(env_id: str) -> None:
    vector = gym.make_vec(env_id, num_envs=2, autoreset_mode=AutoresetMode.SAME_STEP)
    vector.reset(seed=0)
    for action in _actions(env_id, 2000, 2):
        _, _, terminated, truncated, info = vector.step(action)
        if (terminated | truncated).any():
            ended = np.flatnonzero(terminated | truncated)
            assert info["_final_obs"][ended].all()
            assert all(info["final_obs"][i] is not None for i in ended)
            return
    pytest.fail("no episode ended within 2000 random steps")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_bad_actions_raise_clear_errors(env_id: str) -> None:
    env = gym.make(env_id)
    env.reset(seed=0)
    space = env.action_space
    if isinstance(space, gym.spaces.Discrete):
        bad, wrong_shape = space.n + 3, np.zeros((2, 2), dtype=np.int64)
    else:
        bad, wrong_shape = np.full(space.shape, 10.0, dtype=np.float32), np.zeros(space.shape[0] + 1, np.float32)
    with pytest.raises(InvalidActionError, match="outside the action space"):
        env.step(bad)
    with pytest.raises(InvalidActionError, match="shape"):
        env.step(wrong_shape)
    # the message describes one action, not a batch of one
    one_too_many = np.zeros(1, np.int64) if isinstance(space, gym.spaces.Discrete) else wrong_shape
    with pytest.raises(InvalidActionError) as caught:
        env.step(one_too_many)
    assert str(caught.value) == f"expected one action of shape {space.shape}, got shape {one_too_many.shape}"
    for not_a_number in (np.full(space.shape, "a"), np.ones(space.shape, dtype=np.complex64)):
        with pytest.raises(InvalidActionError, match="integers|real numbers"):
            env.step(not_a_number)
    vector = gym.make_vec(env_id, num_envs=3)
    vector.reset(seed=0)
    with pytest.raises(InvalidActionError, match="shape"):
        vector.step(np.stack([space.sample() for _ in range(2)]))
    if isinstance(space, gym.spaces.Box):
        nan_action = np.stack([space.sample() for _ in range(3)])
        nan_action[0, 0] = np.nan
        with pytest.raises(InvalidActionError, match="NaN"):
            vector.step(nan_action)


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_render_modes(env_id: str) -> None:
    env = gym.make(env_id)
    modes = env.metadata["render_modes"]
    assert modes, "every env renders in at least one mode"
    env = gym.make(env_id, render_mode=modes[0])
    env.reset(seed=0)
    frame = env.render()
    if modes[0] == "rgb_array":
        assert frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
    else:
        assert isinstance(frame, str) and frame
    with pytest.raises(UnsupportedRenderMode, match="render_mode"):
        gym.make(env_id, render_mode="human-nonexistent")
    with pytest.raises(UnsupportedRenderMode, match="render_mode"):
        gym.make_vec(env_id, num_envs=2, render_mode="human-nonexistent")


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_stable_baselines3_builds_every_id_by_name(env_id: str) -> None:
    """SB3's id entry points ask for rgb_array and fall back only on TypeError: the text-only math env must build."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    vec_env = make_vec_env(env_id, n_envs=2, seed=0)
    observations = vec_env.reset()
    assert vec_env.num_envs == 2 and observations is not None
    vec_env.step(np.stack([vec_env.action_space.sample() for _ in range(2)]))
    vec_env.close()
    policy = "MultiInputPolicy" if isinstance(gym.make(env_id).observation_space, gym.spaces.Dict) else "MlpPolicy"
    model = PPO(policy, env_id, n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(16)
    assert model.num_timesteps >= 16


@pytest.mark.parametrize("env_id", ENV_IDS)
def test_stepping_past_the_end_of_an_episode_asks_for_reset(env_id: str) -> None:
    env = gym.make(env_id).unwrapped  # without TimeLimit: only the env's own ends (the arm has none)
    env.reset(seed=0)
    for action in _actions(env_id, 2000):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    else:
        assert env_id.startswith("rlopt/ArmReach"), "no episode ended within 2000 random steps"
        return
    with pytest.raises(gym.error.ResetNeeded, match="reset"):
        env.step(env.action_space.sample())
    env.reset(seed=1)
    env.step(env.action_space.sample())  # a reset clears it


@pytest.mark.parametrize("env_id", ["rlopt/GridGame-DoorKey-5x5-v0", "rlopt/MathReasoning-v0"])
def test_seeds_of_any_size_and_bad_seed_types(env_id: str) -> None:
    """Gymnasium takes any non-negative int as a seed: one of 2**64 or more reproduces its start, is told apart from
    its value modulo 2**64, and does not disturb the seeds below 2**64."""

    def start(seed: int) -> np.ndarray:
        return _flatten(gym.make(env_id).reset(seed=seed)[0])

    huge = 2**64 + 12345
    np.testing.assert_array_equal(start(huge), start(huge))
    np.testing.assert_array_equal(start(2**70), start(2**70))
    assert any(not np.array_equal(start(huge + k), start(12345 + k)) for k in range(5))
    vector = gym.make_vec(env_id, num_envs=2)
    batch = vector.reset(seed=[huge, 7])[0]
    first = {key: value[0] for key, value in batch.items()} if isinstance(batch, dict) else batch[0]
    np.testing.assert_array_equal(_flatten(first), start(huge))
    for bad in (1.5, "abc", -1):
        with pytest.raises(ValueError, match="seed"):
            vector.reset(seed=bad)


def test_unknown_id_lists_rlopt_ids() -> None:
    from rlopt.vector import env_spec

    with pytest.raises(ValueError, match="rlopt/GridGame"):
        env_spec("rlopt/NoSuchEnv-v0")

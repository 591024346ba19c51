"""Shared machinery for rlopt's natively batched environments.

Every rlopt environment is one numpy implementation over a batch of ``N`` environments, a :class:`BatchedCore`.
Two thin front ends share that core, so the dynamics have one source of truth:

* :class:`BatchedVectorEnv` is a :class:`gymnasium.vector.VectorEnv` over all ``N`` (registered as the id's
  ``vector_entry_point``; ``gymnasium.make_vec(id, num_envs=N)`` builds it), with Gymnasium's three autoreset
  modes and the episode time limit;
* :class:`SingleEnv` is a :class:`gymnasium.Env` over a core of one environment (``gymnasium.make(id)``); a
  time limit comes from the registration's ``TimeLimit`` wrapper (the arm's), or from the task itself (the grid's
  ``max_steps``, as in Minigrid).

Randomness lives in :class:`BatchRNG`, a counter-based generator with one stream per environment, so that a
reset with seed ``s`` gives the same start in the single env and in any slot of the vector env, and a batch of
resets needs no Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

__all__ = ["BatchRNG", "BatchedCore", "BatchedVectorEnv", "SingleEnv", "InvalidActionError", "UnsupportedRenderMode"]


class InvalidActionError(ValueError):
    """An action (or batch of actions) that lies outside the action space or has the wrong shape."""


class UnsupportedRenderMode(ValueError, TypeError):
    """A ``render_mode`` that the environment does not offer.

    It is a ``TypeError`` as well as a ``ValueError`` because stable-baselines3, given an env id (``PPO("MlpPolicy",
    id)``, ``make_vec_env(id)``), first tries ``gymnasium.make(id, render_mode="rgb_array")`` and builds the env
    without a render mode only when that raises ``TypeError``: the text-only math env would otherwise be unusable
    through those entry points.
    """


def _check_render_mode(render_mode: str | None, render_modes: list[str]) -> None:
    if render_mode is not None and render_mode not in render_modes:
        raise UnsupportedRenderMode(f"render_mode {render_mode!r} is not supported; accepted: {render_modes} or None")


# --- counter-based random numbers --------------------------------------------------------------------------------

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele, Lea and Flood, OOPSLA 2014) applied elementwise to a uint64 array."""
    x = np.asarray(x, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = x + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _MIX1
        z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


class BatchRNG:
    """One independent random stream per environment, drawn in batches without a Python loop.

    Environment ``i`` has a 64-bit key (set from its reset seed) and a counter; the ``k``-th number of the stream
    is a hash of (key, k). Seeding env ``i`` with ``s`` therefore reproduces its stream exactly, whichever slot of
    whichever batch it sits in.
    """

    def __init__(self, num_envs: int) -> None:
        entropy = np.random.SeedSequence().generate_state(2, dtype=np.uint64)
        self.key = splitmix64(entropy[0] + np.arange(num_envs, dtype=np.uint64) * entropy[1])
        self.counter = np.zeros(num_envs, dtype=np.uint64)

    def seed(self, indices: np.ndarray, seeds: Sequence[int]) -> None:
        """Restart the streams of ``indices`` from the given non-negative integer seeds."""
        seeds_array = np.asarray([_fold_seed(int(seed)) for seed in seeds], dtype=np.uint64)
        self.key[indices] = splitmix64(splitmix64(seeds_array) ^ _MIX2)
        self.counter[indices] = 0

    def random(self, indices: np.ndarray, size: int | tuple[int, ...] = ()) -> np.ndarray:
        """Uniform floats in [0, 1) of shape ``(len(indices), *size)``; advances those streams."""
        size = (size,) if isinstance(size, int) else tuple(size)
        count = int(np.prod(size)) if size else 1
        offsets = np.arange(count, dtype=np.uint64)
        counters = self.counter[indices][:, None] + offsets[None, :]
        bits = splitmix64(self.key[indices][:, None] ^ splitmix64(counters))
        self.counter[indices] += np.uint64(count)
        values = (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 9007199254740992.0)
        return values.reshape((len(indices), *size))

    def integers(self, indices: np.ndarray, low: Any, high: Any, size: int | tuple[int, ...] = ()) -> np.ndarray:
        """Integers in ``[low, high)`` (broadcast per environment) of shape ``(len(indices), *size)``."""
        draws = self.random(indices, size)
        low_array = np.asarray(low, dtype=np.int64)
        high_array = np.asarray(high, dtype=np.int64)
        extra = draws.ndim - 1
        if low_array.ndim == 1:
            low_array = low_array.reshape(low_array.shape + (1,) * extra)
        if high_array.ndim == 1:
            high_array = high_array.reshape(high_array.shape + (1,) * extra)
        return low_array + np.floor(draws * (high_array - low_array)).astype(np.int64)

    def generator(self, index: int) -> np.random.Generator:
        """A numpy Generator for code that must loop per environment (e.g. procedural layouts).

        It is derived from the env's stream, so it is reproducible, and it advances that stream by one draw.
        """
        state = [int(self.key[index]), int(self.counter[index])]
        self.counter[index] += np.uint64(1)
        return np.random.default_rng(state)


def _fold_seed(seed: int) -> int:
    """A seed below 2**64 as it is; a larger one (Gymnasium takes any non-negative int) folded into 64 bits, one
    64-bit word at a time through SplitMix64, so that it neither overflows nor lands on the seed ``seed % 2**64``."""
    if seed < 2**64:
        return seed
    folded = np.uint64(0x243F6A8885A308D3)  # a fixed start that no seed below 2**64 shares
    while seed:
        folded = splitmix64(folded ^ np.uint64(seed & (2**64 - 1)))
        seed >>= 64
    return int(folded)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


# --- the batched core --------------------------------------------------------------------------------------------


class BatchedCore:
    """The numpy state and dynamics of ``N`` environments. Subclasses implement the five methods below.

    Conventions:
        * state arrays have the batch as their first axis, ``(N, ...)``;
        * ``self.rng`` is the only source of randomness, and it is used only in :meth:`reset_envs`;
        * :meth:`step` receives already validated actions and an ``active`` mask (``None`` means all active).
          It must leave inactive environments unchanged and give them zero reward.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": []}
    #: names of the reward terms that :meth:`step` returns in ``info["reward_terms"]``
    reward_term_names: tuple[str, ...] = ()

    def __init__(self, num_envs: int) -> None:
        if not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
            raise ValueError(f"num_envs must be a positive integer, got {num_envs!r}")
        self.num_envs = int(num_envs)
        self.rng = BatchRNG(self.num_envs)
        self.single_observation_space: spaces.Space
        self.single_action_space: spaces.Space

    def reset_envs(self, indices: np.ndarray) -> None:
        """Start new episodes in the environments ``indices`` (int64 array), drawing from ``self.rng``."""
        raise NotImplementedError

    def observe(self) -> Any:
        """The batched observation ``(N, ...)`` (a dict of arrays for Dict spaces); a fresh copy."""
        raise NotImplementedError

    def step(
        self, actions: np.ndarray, active: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Advance every active environment by one step.

        Returns:
            reward ``(N,)`` float64, terminated ``(N,)`` bool, truncated ``(N,)`` bool (truncation intrinsic to the
            task, e.g. a full token buffer; time limits are handled by the front ends), and an info dict with
            ``is_success`` ``(N,)`` bool and ``reward_terms``: ``{name: (N,) float64}``.
        """
        raise NotImplementedError

    def render(self, index: int, mode: str) -> Any:
        """An ``rgb_array`` frame (H, W, 3) uint8 or an ``ansi`` string for environment ``index``."""
        raise NotImplementedError

    # --- helpers shared by the front ends ---

    @property
    def step_limit(self) -> int | None:
        """The most steps an episode can last when the task truncates episodes itself (the grid's ``max_steps``),
        else None (the registration's ``max_episode_steps`` is then the limit, if any)."""
        return None

    def reset_info(self, indices: np.ndarray) -> dict[str, Any]:
        """Extra per-environment information after a reset (arrays over ``indices``); empty by default."""
        return {}

    def validate_actions(self, actions: Any) -> np.ndarray:
        """Check a batch of actions against ``single_action_space``; raise :class:`InvalidActionError` if off."""
        space = self.single_action_space
        array = np.asarray(actions)
        if isinstance(space, spaces.Discrete):
            if array.shape != (self.num_envs,):
                raise InvalidActionError(
                    f"expected a batch of {self.num_envs} discrete actions with shape ({self.num_envs},), "
                    f"got shape {array.shape}"
                )
            if not np.issubdtype(array.dtype, np.integer):
                if not np.issubdtype(array.dtype, np.floating) or not np.all(np.equal(np.mod(array, 1), 0)):
                    raise InvalidActionError(f"discrete actions must be integers, got dtype {array.dtype}")
                array = array.astype(np.int64)
            low, high = int(space.start), int(space.start + space.n - 1)
            if array.size and (array.min() < low or array.max() > high):
                bad = array[(array < low) | (array > high)][0]
                raise InvalidActionError(f"action {bad} is outside the action space: accepted values are {low}..{high}")
            return array.astype(np.int64, copy=False)
        if isinstance(space, spaces.Box):
            expected = (self.num_envs, *space.shape)
            if array.shape != expected:
                raise InvalidActionError(f"expected a batch of actions with shape {expected}, got shape {array.shape}")
            if array.dtype.kind not in "biuf":  # strings, objects, complex numbers: no silent conversion
                raise InvalidActionError(f"actions must be real numbers, got dtype {array.dtype}")
            array = array.astype(space.dtype, copy=False)
            # min/max propagate NaN, so two reductions check finiteness and bounds together (the hot path)
            smallest, largest = array.min(), array.max()
            if not (np.isfinite(smallest) and np.isfinite(largest)):
                raise InvalidActionError("actions contain NaN or infinity; every action must be finite")
            if (
                smallest >= space.low.min()
                and largest <= space.high.max()
                and space.is_bounded("both")
                and (np.all(space.low == space.low.flat[0]) and np.all(space.high == space.high.flat[0]))
            ):
                return array
            tolerance = 1e-6
            if np.any(array < space.low - tolerance) or np.any(array > space.high + tolerance):
                flat = np.argwhere((array < space.low - tolerance) | (array > space.high + tolerance))[0]
                raise InvalidActionError(
                    f"action {array[tuple(flat)]!r} at index {tuple(int(i) for i in flat)} is outside the action "
                    f"space: accepted range is [{space.low.min()}, {space.high.max()}] (clip actions first)"
                )
            return np.clip(array, space.low, space.high)
        raise TypeError(f"unsupported action space {space}")


# --- the vector front end ----------------------------------------------------------------------------------------


def _vector_info(info: dict[str, Any], num_envs: int) -> dict[str, Any]:
    """Give a core info dict (arrays over all N) Gymnasium's vector layout: each key with its ``_key`` mask."""
    out: dict[str, Any] = {}
    everywhere = np.ones(num_envs, dtype=bool)
    for key, value in info.items():
        out[key] = _vector_info(value, num_envs) if isinstance(value, dict) else value
        out[f"_{key}"] = everywhere
    return out


def _slice_info(info: dict[str, Any], index: int) -> dict[str, Any]:
    """The single-environment view of a core info dict: scalars for environment ``index``."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _slice_info(value, index)
        else:
            item = value[index]
            out[key] = item.item() if isinstance(item, np.generic) else item
    return out


def _select_info(info: dict[str, Any], mask: np.ndarray) -> dict[str, Any]:
    """Restrict a vector info dict to the environments in ``mask`` (for ``final_info``)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        if isinstance(value, dict):
            out[key] = _select_info(value, mask)
        elif key.startswith("_"):
            out[key] = value & mask
        else:
            out[key] = value
    return out


def _restarted_info(
    info: dict[str, Any], reset_info: dict[str, Any], restart: np.ndarray, num_envs: int
) -> dict[str, Any]:
    """Gymnasium's layout for envs reset inside ``step`` (autoreset): like ``SyncVectorEnv``, their entries are their
    reset info (``reset_info``: arrays over ``restart``), and every other key is masked off for them."""

    def masked_off(part: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in part.items():
            if isinstance(value, dict):
                out[key] = masked_off(value)
            elif key.startswith("_"):
                out[key] = np.asarray(value, dtype=bool).copy()
                out[key][restart] = False
            else:
                out[key] = value
        return out

    out = masked_off(info)
    for key, value in reset_info.items():
        value = np.asarray(value)
        full = np.zeros((num_envs, *value.shape[1:]), dtype=value.dtype)
        present = np.zeros(num_envs, dtype=bool)
        if key in out:  # a key that the step reports too: its other envs keep their step values
            full[:] = out[key]
            present = out[f"_{key}"]
        full[restart] = value
        present[restart] = True
        out[key], out[f"_{key}"] = full, present
    return out


class BatchedVectorEnv(VectorEnv):
    """A Gymnasium vector env over a :class:`BatchedCore`. Subclasses set ``core_class``.

    Autoreset: ``autoreset_mode`` is one of Gymnasium's modes (default NEXT_STEP, Gymnasium's own default,
    recorded in ``metadata["autoreset_mode"]``):

    * NEXT_STEP: the step after an episode ends resets that env; its action is ignored, reward 0, flags False.
    * SAME_STEP: an env whose episode ends is reset in the same step; the returned observation is the new start,
      and ``info["final_obs"]`` / ``info["final_info"]`` hold the last observation and info.
    * DISABLED: finished envs stay frozen (reward 0, their ``terminated``/``truncated`` flags stay set) until
      ``reset(options={"reset_mask": mask})`` restarts them.
    """

    core_class: ClassVar[type[BatchedCore]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "core_class" in cls.__dict__:
            cls.metadata = dict(cls.core_class.metadata)

    def __init__(
        self,
        num_envs: int = 1,
        max_episode_steps: int | None = None,
        autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
        **core_kwargs: Any,
    ) -> None:
        self.core = self.core_class(num_envs=num_envs, **core_kwargs)
        self.num_envs = self.core.num_envs
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            accepted = ", ".join(mode.value for mode in AutoresetMode)
            raise ValueError(f"unknown autoreset_mode {autoreset_mode!r}; accepted: {accepted}") from None
        if max_episode_steps is not None and (not isinstance(max_episode_steps, int) or max_episode_steps < 1):
            raise ValueError(f"max_episode_steps must be a positive integer or None, got {max_episode_steps!r}")
        self.max_episode_steps = max_episode_steps
        render_modes = self.core.metadata.get("render_modes", [])
        _check_render_mode(render_mode, render_modes)
        self.render_mode = render_mode
        self.metadata = {**self.core.metadata, "autoreset_mode": self.autoreset_mode}
        self.single_observation_space = self.core.single_observation_space
        self.single_action_space = self.core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.elapsed_steps = np.zeros(self.num_envs, dtype=np.int64)
        # envs whose episode has ended and that have not been reset yet
        self._done = np.zeros(self.num_envs, dtype=bool)
        self._last_terminated = np.zeros(self.num_envs, dtype=bool)
        self._last_truncated = np.zeros(self.num_envs, dtype=bool)
        self._has_reset = False

    def reset(
        self, *, seed: int | Sequence[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        """Reset all envs, or those in ``options["reset_mask"]``.

        ``seed`` is an int (env ``i`` gets ``seed + i``, Gymnasium's convention), a list of ``num_envs`` ints or
        Nones, or None (each env continues its own stream).
        """
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if mask is None:
            mask = np.ones(self.num_envs, dtype=bool)
        else:
            mask = np.asarray(mask)
            if mask.shape != (self.num_envs,) or mask.dtype != np.bool_:
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},), "
                    f"got dtype {mask.dtype} and shape {mask.shape}"
                )
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; accepted: ['reset_mask']")
        if seed is not None:
            if isinstance(seed, (int, np.integer)) and not isinstance(seed, (bool, np.bool_)):
                seeds: list[int | None] = [_check_seed(seed) + i for i in range(self.num_envs)]
            elif isinstance(seed, (str, bytes)) or not isinstance(seed, Sequence | np.ndarray):
                raise ValueError(
                    f"seed must be a non-negative integer, a list of {self.num_envs} integers or Nones, or None; "
                    f"got {seed!r}"
                )
            else:
                seeds = list(seed)
                if len(seeds) != self.num_envs:
                    raise ValueError(f"expected {self.num_envs} seeds (one per env), got {len(seeds)}")
            chosen = [i for i in range(self.num_envs) if mask[i] and seeds[i] is not None]
            if chosen:
                self.core.rng.seed(np.asarray(chosen), [_check_seed(seeds[i]) for i in chosen])
        indices = np.flatnonzero(mask)
        self.core.reset_envs(indices)
        self.elapsed_steps[indices] = 0
        self._done[indices] = False
        self._last_terminated[indices] = False
        self._last_truncated[indices] = False
        self._has_reset = True
        return self.core.observe(), _vector_info(self.core.reset_info(np.arange(self.num_envs)), self.num_envs)

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        if not self._has_reset:
            raise gym.error.ResetNeeded("call reset() before step()")
        actions = self.core.validate_actions(actions)
        waiting = self._done.copy()
        active = None if not waiting.any() else ~waiting
        reward, terminated, truncated, info = self.core.step(actions, active)
        terminated = terminated.copy()
        truncated = truncated.copy()
        if active is not None:
            reward = np.where(active, reward, 0.0)
            terminated &= active
            truncated &= active
            self.elapsed_steps[active] += 1
        else:
            self.elapsed_steps += 1
        if self.max_episode_steps is not None:
            truncated |= (self.elapsed_steps >= self.max_episode_steps) & ~terminated & ~waiting
        ended = terminated | truncated
        vector_info = _vector_info(info, self.num_envs)

        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            if waiting.any():
                restart = np.flatnonzero(waiting)
                self.core.reset_envs(restart)
                self.elapsed_steps[restart] = 0
                vector_info = _restarted_info(vector_info, self.core.reset_info(restart), restart, self.num_envs)
            self._done = ended
            observation = self.core.observe()
        elif self.autoreset_mode == AutoresetMode.SAME_STEP:
            observation = self.core.observe()
            if ended.any():
                restart = np.flatnonzero(ended)
                final_obs = np.full(self.num_envs, None, dtype=object)
                for i in restart:
                    final_obs[i] = _index_observation(observation, i)
                final_info = _select_info(vector_info, ended)
                self.core.reset_envs(restart)
                self.elapsed_steps[restart] = 0
                # the top level holds the new episodes' reset info for these envs, the step's info is in final_info
                vector_info = _restarted_info(vector_info, self.core.reset_info(restart), restart, self.num_envs)
                vector_info["final_info"] = final_info
                vector_info["_final_info"] = ended
                vector_info["final_obs"] = final_obs
                vector_info["_final_obs"] = ended
                observation = self.core.observe()
        else:  # DISABLED: finished envs stay frozen until reset(options={"reset_mask": ...})
            self._last_terminated |= terminated
            self._last_truncated |= truncated
            terminated = terminated | (waiting & self._last_terminated)
            truncated = truncated | (waiting & self._last_truncated)
            self._done |= ended
            observation = self.core.observe()
        return observation, reward.astype(np.float64, copy=False), terminated, truncated, vector_info

    def render(self) -> Any:
        """Frames (or text) of every env, as a tuple, for ``render_mode`` given at construction."""
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode= to make_vec")
            return None
        return tuple(self.core.render(i, self.render_mode) for i in range(self.num_envs))

    def close_extras(self, **kwargs: Any) -> None:
        pass


def _index_observation(observation: Any, index: int) -> Any:
    if isinstance(observation, dict):
        return {key: value[index].copy() for key, value in observation.items()}
    return observation[index].copy()


# --- the single-env front end ------------------------------------------------------------------------------------


class SingleEnv(gym.Env):
    """A :class:`gymnasium.Env` that is a view of a :class:`BatchedCore` with one environment.

    Subclasses set ``core_class``. A registered time limit is applied by Gymnasium's ``TimeLimit`` wrapper
    (``max_episode_steps``), so this class truncates only when the task itself does. Stepping after the task ended
    the episode raises ``ResetNeeded``.
    """

    core_class: ClassVar[type[BatchedCore]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # gymnasium.make reads render modes from the class before __init__ runs
        super().__init_subclass__(**kwargs)
        if "core_class" in cls.__dict__:
            cls.metadata = dict(cls.core_class.metadata)

    def __init__(self, render_mode: str | None = None, **core_kwargs: Any) -> None:
        self.core = self.core_class(num_envs=1, **core_kwargs)
        self.metadata = dict(self.core.metadata)
        render_modes = self.metadata.get("render_modes", [])
        _check_render_mode(render_mode, render_modes)
        self.render_mode = render_mode
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._has_reset = False
        self._ended = False  # the task ended the episode (terminated, or truncated by the env itself)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; this environment takes none")
        if seed is not None:
            self.core.rng.seed(np.zeros(1, dtype=np.int64), [_check_seed(seed)])
        self.core.reset_envs(np.zeros(1, dtype=np.int64))
        self._has_reset, self._ended = True, False
        return _index_observation(self.core.observe(), 0), _slice_info(self.core.reset_info(np.zeros(1, int)), 0)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if not self._has_reset:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self._ended:
            # every rlopt env, not only the math env, whose core refuses: stepping on would give a state no episode
            # can reach (the grid's agent walking out of lava)
            raise gym.error.ResetNeeded("the episode has ended (terminated or truncated); call reset() first")
        array = np.asarray(action)
        if array.shape != self.action_space.shape:
            raise InvalidActionError(f"expected one action of shape {self.action_space.shape}, got shape {array.shape}")
        try:
            actions = self.core.validate_actions(array[None, ...])
        except InvalidActionError as error:  # name the element within the one action, not within a batch of one
            raise InvalidActionError(str(error).replace("at index (0, ", "at index (")) from None
        reward, terminated, truncated, info = self.core.step(actions, None)
        self._ended = bool(terminated[0] or truncated[0])
        observation = _index_observation(self.core.observe(), 0)
        return observation, float(reward[0]), bool(terminated[0]), bool(truncated[0]), _slice_info(info, 0)

    def render(self) -> Any:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode= to gymnasium.make")
            return None
        return self.core.render(0, self.render_mode)

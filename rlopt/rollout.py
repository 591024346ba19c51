"""The rollout collector shared by every algorithm and every environment.

Two shapes of rollout come out of the same stepping loop:

* :func:`collect_groups` (GRPO): ``P`` start seeds, each repeated ``G`` times, every member run to the end of its
  episode with autoreset disabled; finished members are masked. Layout ``(N, L)`` with ``N = P * G`` and member
  ``n = p * G + g``, so rewards reshape to ``(P, G)`` explicitly.
* :func:`collect_steps` (PPO): fixed-length ``(T, N)`` rollouts with same-step autoreset, and the final
  observation of every truncated episode kept for bootstrapping.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from agents import obs_to_tensor
from rlopt.vector import success_signal

# --- observation buffers (arrays or dicts of arrays) -------------------------------------------------------------


def stack_observations(items: list[Any]) -> Any:
    """Stack a list of batched observations along a new leading axis (dicts key by key)."""
    if isinstance(items[0], dict):
        return {key: np.stack([item[key] for item in items]) for key in items[0]}
    return np.stack(items)


def index_observations(observations: Any, index: Any) -> Any:
    """``observations[index]`` for arrays and for dicts of arrays."""
    if isinstance(observations, dict):
        return {key: value[index] for key, value in observations.items()}
    return observations[index]


#: :func:`distinct_observations` leaves batches larger than this alone (the search copies the rows once)
DISTINCT_SEARCH_MAX_BYTES = 256 * 2**20


def distinct_observations(observations: Any, index: Any, max_fraction: float = 0.5) -> tuple[np.ndarray, Any] | None:
    """Group exactly equal observations among ``observations[index]``.

    Small discrete worlds repeat themselves: on DoorKey-5x5 a GRPO batch of about 13k steps holds only 150-220
    distinct egocentric views (1-2%), because the G members of a group start in the same state and an agent
    revisits cells. A policy that scores each distinct observation once and gathers the result per step does a
    fraction of the work and gets the same log-probabilities (the gradient sums over the repeats).

    Only integer and boolean observations are compared (byte equality); float observations (arm, CartPole) rarely
    repeat exactly, so they are not searched at all, nor are batches of more than ``DISTINCT_SEARCH_MAX_BYTES``
    (large image observations: the search would copy them).

    Args:
        observations: ``(L, N, ...)`` arrays or a dict of them.
        index: a tuple of equally long index arrays into the leading axes, e.g. ``(steps, members)``.
        max_fraction: give up (return None) when more than this fraction of the rows are distinct.

    Returns:
        ``(ids, first)``: ``ids[i]`` numbers row ``i``'s observation among the distinct ones (``0..U-1``), and
        ``first[u]`` is the position of the first row holding observation ``u``; or None (floats, or too few
        repeats to pay for the bookkeeping).
    """
    leaves = list(observations.values()) if isinstance(observations, dict) else [observations]
    if not all(leaf.dtype.kind in "biu" for leaf in leaves):
        return None
    count = len(index[0])
    row_bytes = sum(leaf.itemsize * int(np.prod(leaf.shape[len(index) :], dtype=np.int64)) for leaf in leaves)
    if count == 0 or count * row_bytes > DISTINCT_SEARCH_MAX_BYTES:
        return None
    selected = [np.ascontiguousarray(leaf[index]) for leaf in leaves]
    rows = np.concatenate([leaf.reshape(count, -1).view(np.uint8) for leaf in selected], axis=1)
    keys = np.ascontiguousarray(rows).view(np.dtype((np.void, rows.shape[1]))).ravel()
    _, first, ids = np.unique(keys, return_index=True, return_inverse=True)
    if len(first) > max_fraction * count:
        return None
    return ids.reshape(-1).astype(np.int64), first


def filler_actions(action_space: spaces.Space, count: int) -> np.ndarray:
    """Valid placeholder actions for envs that are not stepping (their action is ignored)."""
    if isinstance(action_space, spaces.Discrete):
        return np.full(count, action_space.start, dtype=np.int64)
    if isinstance(action_space, spaces.Box):
        return np.broadcast_to(np.clip(0.0, action_space.low, action_space.high), (count, *action_space.shape)).copy()
    return np.stack([action_space.sample() for _ in range(count)])


def to_env_actions(actions: torch.Tensor, action_space: spaces.Space) -> np.ndarray:
    """Policy actions -> numpy actions the env accepts (Gaussian samples are clipped to the Box)."""
    array = actions.detach().cpu().numpy()
    if isinstance(action_space, spaces.Box):
        return np.clip(array, action_space.low, action_space.high).astype(action_space.dtype)
    return array


# --- grouped rollouts (GRPO) -------------------------------------------------------------------------------------


@dataclass
class GroupedRollout:
    """Episode-complete rollouts of ``P`` groups of ``G`` members. ``N = P * G``, ``L`` = longest episode.

    Attributes:
        observations: ``(L, N, ...)`` observations (dict of such arrays for Dict spaces).
        actions: ``(L, N, ...)`` actions as the policy sampled them (unclipped for Box spaces).
        log_probs: ``(N, L)`` log-probabilities of those actions under the behaviour policy.
        rewards: ``(N, L)`` per-step rewards, 0 where masked.
        mask: ``(N, L)`` True at steps that happened.
        returns: ``(N,)`` undiscounted episode returns.
        lengths: ``(N,)`` episode lengths.
        success: ``(N,)`` 1/0 success at the episode's end, NaN where the env does not report it.
        reward_terms: ``{term: (N,)}`` sums of each reward term over the episode.
        seeds: ``(P,)`` the start seeds.
        group_size: ``G``.
    """

    observations: Any
    actions: np.ndarray
    log_probs: np.ndarray
    rewards: np.ndarray
    mask: np.ndarray
    returns: np.ndarray
    lengths: np.ndarray
    success: np.ndarray
    reward_terms: dict[str, np.ndarray]
    seeds: np.ndarray
    group_size: int

    @property
    def num_groups(self) -> int:
        return len(self.seeds)

    @property
    def env_steps(self) -> int:
        return int(self.mask.sum())

    def select_groups(self, keep: np.ndarray) -> GroupedRollout:
        """The rollout restricted to the groups where ``keep`` (P,) is True."""
        members = np.repeat(keep, self.group_size)
        length = int(self.lengths[members].max()) if members.any() else 0
        return GroupedRollout(
            observations=index_observations(self.observations, (slice(0, length), members)),
            actions=self.actions[:length, members],
            log_probs=self.log_probs[members, :length],
            rewards=self.rewards[members, :length],
            mask=self.mask[members, :length],
            returns=self.returns[members],
            lengths=self.lengths[members],
            success=self.success[members],
            reward_terms={key: value[members] for key, value in self.reward_terms.items()},
            seeds=self.seeds[keep],
            group_size=self.group_size,
        )


def concatenate_groups(parts: list[GroupedRollout]) -> GroupedRollout:
    """Join grouped rollouts (e.g. refills of dynamic sampling) along the group axis, padding ``L``."""
    if len(parts) == 1:
        return parts[0]
    length = max(part.mask.shape[1] for part in parts)

    def pad_time_major(array: np.ndarray) -> np.ndarray:
        widths = [(0, length - array.shape[0])] + [(0, 0)] * (array.ndim - 1)
        return np.pad(array, widths)

    def pad_member_major(array: np.ndarray) -> np.ndarray:
        return np.pad(array, [(0, 0), (0, length - array.shape[1])])

    def join_observations(items: list[Any]) -> Any:
        if isinstance(items[0], dict):
            return {key: np.concatenate([pad_time_major(item[key]) for item in items], axis=1) for key in items[0]}
        return np.concatenate([pad_time_major(item) for item in items], axis=1)

    return GroupedRollout(
        observations=join_observations([part.observations for part in parts]),
        actions=np.concatenate([pad_time_major(part.actions) for part in parts], axis=1),
        log_probs=np.concatenate([pad_member_major(part.log_probs) for part in parts]),
        rewards=np.concatenate([pad_member_major(part.rewards) for part in parts]),
        mask=np.concatenate([pad_member_major(part.mask) for part in parts]),
        returns=np.concatenate([part.returns for part in parts]),
        lengths=np.concatenate([part.lengths for part in parts]),
        success=np.concatenate([part.success for part in parts]),
        reward_terms={key: np.concatenate([part.reward_terms[key] for part in parts]) for key in parts[0].reward_terms},
        seeds=np.concatenate([part.seeds for part in parts]),
        group_size=parts[0].group_size,
    )


def collect_groups(
    env: gym.vector.VectorEnv,
    policy: Any,
    seeds: np.ndarray,
    group_size: int,
    max_steps: int,
    device: torch.device,
    deterministic: bool = False,
) -> GroupedRollout:
    """Run ``len(seeds)`` groups of ``group_size`` members to the end of their episodes.

    Args:
        env: a vector env of ``N = P * G`` envs with autoreset DISABLED.
        policy: an ``agents`` policy. A policy with recurrent state (the token transformer's KV cache) exposes
            ``initial_state(num_envs, device)`` and ``act_with_state(observation, state, indices, deterministic)
            -> (actions, log_probs, state)``; ``indices`` are the envs still running, whose rows of the state
            advance. Other policies expose ``act(observation, deterministic)``.
        seeds: ``(P,)`` start seeds; member ``p * G + g`` starts from ``seeds[p]``.
        group_size: ``G``.
        max_steps: a cap on the episode length (the env's time limit normally ends episodes first).
        device: where observations go for the policy.
        deterministic: greedy / mean actions instead of samples (evaluation).
    """
    num_groups = len(seeds)
    num_envs = num_groups * group_size
    if env.num_envs != num_envs:
        raise ValueError(f"the env has {env.num_envs} sub-envs but P * G = {num_groups} * {group_size} = {num_envs}")
    observation_space, action_space = env.single_observation_space, env.single_action_space
    member_seeds = [int(seed) for seed in np.repeat(seeds, group_size)]
    observation, _ = env.reset(seed=member_seeds)

    state = policy.initial_state(num_envs, device) if hasattr(policy, "initial_state") else None
    active = np.ones(num_envs, dtype=bool)
    observations, actions, log_probs, rewards, masks = [], [], [], [], []
    returns = np.zeros(num_envs)
    lengths = np.zeros(num_envs, dtype=np.int64)
    success = np.full(num_envs, np.nan)
    term_sums: dict[str, np.ndarray] = {}
    for _ in range(max_steps):
        indices = np.flatnonzero(active)
        everyone = len(indices) == num_envs
        # While every member runs (most steps of most rollouts) the env's batch is the policy's batch: no copy of
        # the active rows, no filler actions. Codes are not range-checked: the env produced these observations.
        running = observation if everyone else index_observations(observation, indices)
        observation_tensor = obs_to_tensor(running, observation_space, device, check_codes=False)
        with torch.no_grad():
            if state is None:
                sampled, sampled_log_probs = policy.act(observation_tensor, deterministic=deterministic)
            else:
                # numpy indices: the policy checks them on the host, without waiting for a GPU
                sampled, sampled_log_probs, state = policy.act_with_state(
                    observation_tensor, state, indices, deterministic=deterministic
                )
        sampled_np = sampled.cpu().numpy()
        sampled_log_probs_np = sampled_log_probs.cpu().numpy().astype(np.float32, copy=False)
        if everyone:
            step_actions, step_log_probs = sampled_np, sampled_log_probs_np
        else:
            step_actions = filler_actions(action_space, num_envs).astype(sampled_np.dtype, copy=False)
            step_actions[indices] = sampled_np
            step_log_probs = np.zeros(num_envs, dtype=np.float32)
            step_log_probs[indices] = sampled_log_probs_np
        env_actions = step_actions
        if isinstance(action_space, spaces.Box):
            env_actions = np.clip(step_actions, action_space.low, action_space.high).astype(action_space.dtype)

        observations.append(observation)
        actions.append(step_actions)
        log_probs.append(step_log_probs)
        masks.append(active.copy())
        observation, reward, terminated, truncated, info = env.step(env_actions)
        reward = np.where(active, reward, 0.0)
        rewards.append(reward)
        returns += reward
        lengths += active
        for term, values in info.get("reward_terms", {}).items():
            if not term.startswith("_"):
                term_sums.setdefault(term, np.zeros(num_envs))
                term_sums[term] += np.where(active, values, 0.0)
        ended = active & (terminated | truncated)
        if ended.any():
            success[ended] = success_signal(info, num_envs)[ended]
        active &= ~ended
        if not active.any():
            break
    # members still running at the cap count as truncated; their success stays as reported (NaN = unknown)

    return GroupedRollout(
        observations=stack_observations(observations),
        actions=np.stack(actions),
        log_probs=np.stack(log_probs, axis=1),
        rewards=np.stack(rewards, axis=1),
        mask=np.stack(masks, axis=1),
        returns=returns,
        lengths=lengths,
        success=success,
        reward_terms=term_sums,
        seeds=np.asarray(seeds),
        group_size=group_size,
    )


# --- fixed-length rollouts (PPO) ---------------------------------------------------------------------------------


@dataclass
class StepRollout:
    """``T`` steps of ``N`` envs with same-step autoreset.

    Attributes:
        observations: ``(T, N, ...)`` observations the actions were taken in.
        actions: ``(T, N, ...)``; log_probs, values, rewards: ``(T, N)``.
        terminated, truncated: ``(T, N)`` bool: the episode ended at this step, and how.
        final_values: ``(T, N)`` V(final observation) for truncated steps (0 elsewhere), for bootstrapping.
        next_value: ``(N,)`` V of the observation after the last step.
        episode_returns / episode_lengths / episode_success: one entry per episode that ended in the rollout.
    """

    observations: Any
    actions: np.ndarray
    log_probs: np.ndarray
    values: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_values: np.ndarray
    next_value: np.ndarray
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)
    episode_success: list[float] = field(default_factory=list)
    reward_terms: dict[str, list[float]] = field(default_factory=dict)


class StepCollector:
    """Keeps a SAME_STEP vector env running across PPO iterations and cuts ``(T, N)`` rollouts from it."""

    def __init__(self, env: gym.vector.VectorEnv, device: torch.device, seed: int) -> None:
        self.env = env
        self.device = device
        self.observation, _ = env.reset(seed=seed)
        self.num_envs = env.num_envs
        self.running_return = np.zeros(self.num_envs)
        self.running_length = np.zeros(self.num_envs, dtype=np.int64)
        self.running_terms: dict[str, np.ndarray] = {}

    def _to_tensor(self, observation: Any) -> Any:
        # only the env's own observations come through here, so their codes are not range-checked (see collect_groups)
        return obs_to_tensor(observation, self.env.single_observation_space, self.device, check_codes=False)

    def collect(self, policy: Any, num_steps: int) -> StepRollout:
        """Step all envs ``num_steps`` times with ``policy`` (an agents.ActorCritic with a value head)."""
        space = self.env.single_action_space
        observations, actions, log_probs, values, rewards = [], [], [], [], []
        terminated_list, truncated_list, final_values = [], [], []
        episode_returns, episode_lengths, episode_success = [], [], []
        episode_terms: dict[str, list[float]] = {}
        for _ in range(num_steps):
            with torch.no_grad():
                observation_tensor = self._to_tensor(self.observation)
                action, log_prob = policy.act(observation_tensor)
                value = policy.value(observation_tensor)
            observations.append(self.observation)
            actions.append(action.cpu().numpy())
            log_probs.append(log_prob.cpu().numpy())
            values.append(value.cpu().numpy())
            self.observation, reward, terminated, truncated, info = self.env.step(to_env_actions(action, space))
            rewards.append(reward)
            terminated_list.append(terminated)
            truncated_list.append(truncated)
            self.running_return += reward
            self.running_length += 1
            ended = terminated | truncated
            # an env that ended has its last step's terms in final_info (its top-level entries are the new
            # episode's reset info, Gymnasium's SAME_STEP layout)
            step_terms = info.get("reward_terms", {})
            final_terms = info.get("final_info", {}).get("reward_terms", {}) if ended.any() else {}
            for term in [*step_terms, *(name for name in final_terms if name not in step_terms)]:
                if term.startswith("_"):
                    continue
                term_values = np.asarray(step_terms.get(term, 0.0), dtype=np.float64)
                if term in final_terms:
                    term_values = np.where(ended & final_terms[f"_{term}"], final_terms[term], term_values)
                self.running_terms.setdefault(term, np.zeros(self.num_envs))
                self.running_terms[term] += term_values
            final_value = np.zeros(self.num_envs, dtype=np.float32)
            if ended.any():
                final_info = info.get("final_info", {})
                success = success_signal(final_info, self.num_envs)
                bootstrap = np.flatnonzero(truncated & ~terminated)
                if len(bootstrap):
                    final_obs = stack_observations([info["final_obs"][i] for i in bootstrap])
                    with torch.no_grad():
                        final_value[bootstrap] = policy.value(self._to_tensor(final_obs)).cpu().numpy()
                for i in np.flatnonzero(ended):
                    episode_returns.append(float(self.running_return[i]))
                    episode_lengths.append(int(self.running_length[i]))
                    episode_success.append(float(success[i]))
                    for term, sums in self.running_terms.items():
                        episode_terms.setdefault(term, []).append(float(sums[i]))
                        sums[i] = 0.0
                self.running_return[ended] = 0.0
                self.running_length[ended] = 0
            final_values.append(final_value)
        with torch.no_grad():
            next_value = policy.value(self._to_tensor(self.observation)).cpu().numpy()
        return StepRollout(
            observations=stack_observations(observations),
            actions=np.stack(actions),
            log_probs=np.stack(log_probs),
            values=np.stack(values),
            rewards=np.stack(rewards).astype(np.float32),
            terminated=np.stack(terminated_list),
            truncated=np.stack(truncated_list),
            final_values=np.stack(final_values),
            next_value=next_value,
            episode_returns=episode_returns,
            episode_lengths=episode_lengths,
            episode_success=episode_success,
            reward_terms=episode_terms,
        )

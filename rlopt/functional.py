"""The maths of GRPO and PPO as pure tensor functions: advantages, surrogate losses, KL estimators, aggregation.

Every function takes tensors, returns tensors (and, where stated, a metrics dict), and never logs or touches
global state. Shapes use the project alphabet: ``T`` steps, ``N`` envs, ``B`` flat batch, ``P`` prompts (start
states), ``G`` group size, ``L`` tokens/steps per episode. Shapes and dtypes are checked at the boundary and a
bad argument raises ``ValueError``/``TypeError`` naming the value and what is accepted.

References:
    * GRPO, outcome and process supervision advantages: Shao et al., "DeepSeekMath", arXiv:2402.03300, sec. 4.1.
    * Time-dependent baselines for the reward-to-go (``step_advantages``): Williams 1992 (REINFORCE); Greensmith,
      Bartlett & Baxter, "Variance Reduction Techniques for Gradient Estimates in RL", JMLR 5, 2004.
    * DAPO (clip-higher, token-mean loss, dynamic sampling): Yu et al., arXiv:2503.14476.
    * Dr. GRPO (constant loss normaliser, no std scaling): Liu et al., "Understanding R1-Zero-Like Training",
      arXiv:2503.20783.
    * PPO clipped surrogate and clipped value loss: Schulman et al., arXiv:1707.06347; the OpenAI baselines PPO2
      value clipping.
    * GAE: Schulman et al., "High-Dimensional Continuous Control Using Generalized Advantage Estimation",
      arXiv:1506.02438.
    * KL estimators k1/k2/k3: J. Schulman, "Approximating KL Divergence" (blog post, 2020).

Masks are ``bool`` tensors (True = valid step). Masked-out positions are excluded with ``torch.where`` rather
than multiplied by zero, so that garbage in padded positions (``inf``, ``nan``) never reaches a result.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "KL_ESTIMATORS",
    "LOSS_TYPES",
    "SCALE_REWARDS",
    "aggregate_loss",
    "loss_normaliser",
    "broadcast_group",
    "clipped_surrogate",
    "dynamic_sampling_mask",
    "explained_variance",
    "gae",
    "group_advantages",
    "kl_penalty",
    "masked_mean",
    "normalize",
    "process_advantages",
    "step_advantages",
    "value_loss",
]

SCALE_REWARDS: tuple[str, ...] = ("group", "batch", "none")
"""Accepted ``scale_rewards`` values of :func:`group_advantages`."""

KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")
"""Accepted ``estimator`` values of :func:`kl_penalty`."""

LOSS_TYPES: tuple[str, ...] = ("grpo", "dapo", "dr_grpo")
"""Accepted ``loss_type`` values of :func:`aggregate_loss`."""


# --- argument checks ---------------------------------------------------------------------------------------------


def _check_ndim(tensor: Tensor, ndim: int, name: str, layout: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape {layout}, got {type(tensor).__name__}")
    if tensor.ndim != ndim:
        raise ValueError(f"{name} must have shape {layout} ({ndim} dims), got shape {tuple(tensor.shape)}")


def _check_float(tensor: Tensor, name: str) -> None:
    if not isinstance(tensor, Tensor):
        raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(tensor).__name__}")
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {tensor.dtype}")


def _check_bool(mask: Tensor, name: str) -> None:
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a bool torch.Tensor, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = valid), got dtype {mask.dtype}; pass {name}.bool()")


def _check_same_shape(reference: Tensor, reference_name: str, **others: Tensor) -> None:
    for name, tensor in others.items():
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
        if tensor.shape != reference.shape:
            raise ValueError(
                f"{name} has shape {tuple(tensor.shape)} but {reference_name} has shape {tuple(reference.shape)}; "
                "they must match"
            )


def _check_choice(value: str, name: str, accepted: tuple[str, ...]) -> None:
    if value not in accepted:
        choices = ", ".join(repr(choice) for choice in accepted)
        raise ValueError(f"{name}={value!r} is not accepted; choose one of {choices}")


def _check_finite(tensor: Tensor, name: str) -> None:
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise ValueError(f"{name} holds {bad} non-finite value(s) (nan or inf); every valid entry must be finite")


def _check_coefficient(value: float, name: str, low: float, high: float) -> None:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ValueError(f"{name}={value!r} is outside the accepted range [{low}, {high}]")


def _unbiased_std(values: Tensor, dim: int | tuple[int, ...] | None = None, keepdim: bool = False) -> Tensor:
    """Unbiased (Bessel-corrected) std; 0 instead of nan when fewer than two values are reduced."""
    count = values.numel() if dim is None else math.prod(values.shape[d] for d in _dims(dim))
    if count < 2:
        shape_source = values.sum() if dim is None else values.sum(dim=dim, keepdim=keepdim)
        return torch.zeros_like(shape_source)
    if dim is None:
        return values.std(correction=1)
    return values.std(dim=dim, correction=1, keepdim=keepdim)


def _dims(dim: int | tuple[int, ...]) -> tuple[int, ...]:
    return (dim,) if isinstance(dim, int) else dim


# --- GRPO advantages ---------------------------------------------------------------------------------------------


def group_advantages(
    rewards: Tensor, scale_rewards: str = "group", eps: float = 1e-6
) -> tuple[Tensor, dict[str, float]]:
    """Group-relative outcome advantages (GRPO, DeepSeekMath arXiv:2402.03300 sec. 4.1.2).

    ``A_i = (r_i - mean_group(r)) / s`` where ``s`` is the group's std (``"group"``, the paper), the std over the
    whole batch (``"batch"``), or 1 (``"none"``, Dr. GRPO arXiv:2503.20783, which argues the std division
    up-weights too-easy/too-hard prompts). ``eps`` is added to the std, as in TRL's ``GRPOTrainer``.

    The std is the *unbiased* one (Bessel's correction, divide by ``G - 1``), which is ``torch.std``'s default and
    what TRL uses (``rewards.view(-1, G).std(dim=1)``), so our numbers match TRL's for the same rewards.

    A group whose rewards are all exactly equal carries no learning signal: its advantages are exactly 0 (never
    nan, also with ``eps=0``), and gradients through it are finite.

    Args:
        rewards: (P, G) float episode returns, one row per prompt/start state, ``G`` members per group.
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"``.
        eps: non-negative constant added to the std before dividing.

    Returns:
        advantages: (P, G), same dtype as ``rewards``.
        metrics: ``reward_mean`` (mean over all rewards), ``reward_std`` (mean over groups of the within-group
        unbiased std) and ``frac_reward_zero_std`` (fraction of groups whose rewards are all equal), python floats.
    """
    _check_ndim(rewards, 2, "rewards", "(P, G)")
    _check_float(rewards, "rewards")
    _check_choice(scale_rewards, "scale_rewards", SCALE_REWARDS)
    _check_coefficient(eps, "eps", 0.0, math.inf)
    num_prompts, group_size = rewards.shape
    if num_prompts == 0 or group_size == 0:
        raise ValueError(f"rewards must hold at least one group with one member, got shape {tuple(rewards.shape)}")
    if scale_rewards == "group" and group_size < 2:
        raise ValueError(
            f"scale_rewards='group' needs a group size G >= 2 to compute a group std, got rewards of shape "
            f"{tuple(rewards.shape)} (G={group_size}); use a larger group"
        )
    _check_finite(rewards, "rewards")

    # Exact equality, not std < tol: a group is dead only if no member differs from another at all.
    zero_std = (rewards == rewards[:, :1]).all(dim=1, keepdim=True)  # (P, 1)
    centered = rewards - rewards.mean(dim=1, keepdim=True)
    group_std = _unbiased_std(rewards, dim=1, keepdim=True)  # (P, 1)
    if scale_rewards == "group":
        scale = group_std + eps
    elif scale_rewards == "batch":
        scale = (_unbiased_std(rewards) + eps).expand_as(group_std)
    else:
        scale = torch.ones_like(group_std)
    # Dead groups divide by 1 so that neither the value nor its gradient can become 0/0; the floor at the smallest
    # normal float keeps a live group whose std underflows to 0 (rewards 1e-200 apart, eps=0) finite.
    scale = torch.where(zero_std, torch.ones_like(scale), scale).clamp_min(torch.finfo(rewards.dtype).tiny)
    advantages = torch.where(zero_std, torch.zeros_like(centered), centered / scale)

    with torch.no_grad():
        metrics = {
            "reward_mean": float(rewards.mean()),
            "reward_std": float(group_std.mean()),
            "frac_reward_zero_std": float(zero_std.float().mean()),
        }
    return advantages, metrics


def process_advantages(
    step_rewards: Tensor, mask: Tensor, eps: float = 1e-6, reward_mask: Tensor | None = None
) -> Tensor:
    """Process-supervision advantages (DeepSeekMath arXiv:2402.03300 sec. 4.1.3).

    The step rewards of a group (one per reasoning step of every member, where ``reward_mask`` is True) are
    normalised by the mean and unbiased std of all of them, as in the paper, and the advantage of token ``t`` is the
    sum of the member's normalised rewards at reward positions ``>= t``. Without ``reward_mask`` every valid step
    carries a reward (a dense-reward env such as the arm). With one reward per member this equals
    :func:`group_advantages` with ``scale_rewards="group"``.

    Args:
        step_rewards: (P, G, L) float per-step rewards; values outside ``reward_mask & mask`` are ignored.
        mask: (P, G, L) bool, True where the step is valid (gets an advantage).
        eps: non-negative constant added to the group std.
        reward_mask: (P, G, L) bool, True where a step reward is given (the end of a reasoning step); None: every
            valid step. Positions outside ``mask`` are ignored.

    Returns:
        (P, G, L) advantages; 0 at masked positions and for every step of a group whose step rewards are all
        equal (including groups with fewer than two).
    """
    _check_ndim(step_rewards, 3, "step_rewards", "(P, G, L)")
    _check_float(step_rewards, "step_rewards")
    _check_bool(mask, "mask")
    _check_same_shape(step_rewards, "step_rewards", mask=mask)
    _check_coefficient(eps, "eps", 0.0, math.inf)
    if reward_mask is None:
        events = mask
    else:
        _check_bool(reward_mask, "reward_mask")
        _check_same_shape(step_rewards, "step_rewards", reward_mask=reward_mask)
        events = reward_mask & mask

    rewards = torch.where(events, step_rewards, torch.zeros_like(step_rewards))
    _check_finite(rewards, "step_rewards (valid positions)")
    count = events.sum(dim=(1, 2))  # (P,)
    mean = rewards.sum(dim=(1, 2)) / count.clamp(min=1)
    centered = torch.where(events, rewards - mean[:, None, None], torch.zeros_like(rewards))
    variance = centered.square().sum(dim=(1, 2)) / (count - 1).clamp(min=1)
    # Dead group: all step rewards exactly equal (max == min), or fewer than two of them.
    high = torch.where(events, rewards, torch.full_like(rewards, -math.inf)).amax(dim=(1, 2))
    low = torch.where(events, rewards, torch.full_like(rewards, math.inf)).amin(dim=(1, 2))
    zero_std = (high == low) | (count < 2)
    # sqrt of a safe positive value: dead groups get 1, so sqrt's gradient never sees 0.
    tiny = torch.finfo(rewards.dtype).tiny
    std = torch.where(zero_std, torch.ones_like(variance), variance).clamp_min(tiny).sqrt()
    live_events = events & ~zero_std[:, None, None]
    normalized = torch.where(live_events, centered / (std + eps)[:, None, None], torch.zeros_like(rewards))
    # Reward-to-go along L: reverse cumulative sum.
    to_go = normalized.flip(-1).cumsum(dim=-1).flip(-1)
    return torch.where(mask & ~zero_std[:, None, None], to_go, torch.zeros_like(to_go))


def step_advantages(
    step_rewards: Tensor, mask: Tensor, scale_rewards: str = "group", eps: float = 1e-6
) -> tuple[Tensor, dict[str, float]]:
    """Group-relative reward-to-go advantages with a per-step group baseline (rlopt's ``advantage="step"``).

    The advantage of member ``i`` at step ``t`` is its undiscounted reward-to-go ``R_t^i = sum_{j >= t} r_j^i``
    minus the mean reward-to-go at step ``t`` over the group members still running at ``t``, divided by their
    (unbiased) std at ``t`` (``"group"``), by the std of every centred reward-to-go of the batch (``"batch"``; a raw
    std over all steps would measure how rewards change along the episode rather than between members), or by 1
    (``"none"``). It stays critic-free and group-relative: the baseline is the group itself, only indexed by
    time. Compared with outcome advantages, an action is no longer credited with the rewards earned *before* it,
    and compared with :func:`process_advantages` the baseline follows how rewards change along the episode (dense
    distance rewards shrink as an arm approaches its target, so a single group-wide mean makes late steps look good
    for every member); both are classic variance reductions of the policy gradient that keep it unbiased
    (Williams 1992; Greensmith et al. 2004). With one step per member it equals :func:`group_advantages`.

    Args:
        step_rewards: (P, G, L) float per-step rewards; values at masked positions are ignored.
        mask: (P, G, L) bool, True where the step is valid (a member's valid steps come first).
        scale_rewards: ``"group"``, ``"batch"`` or ``"none"``.
        eps: non-negative constant added to the std.

    Returns:
        advantages: (P, G, L); 0 at masked positions and at steps where fewer than two members of the group are
        running or where their rewards-to-go are all equal.
        metrics: ``frac_step_zero_std``, the fraction of (group, step) pairs with at least one running member that
        carry no signal.
    """
    _check_ndim(step_rewards, 3, "step_rewards", "(P, G, L)")
    _check_float(step_rewards, "step_rewards")
    _check_bool(mask, "mask")
    _check_same_shape(step_rewards, "step_rewards", mask=mask)
    _check_choice(scale_rewards, "scale_rewards", SCALE_REWARDS)
    _check_coefficient(eps, "eps", 0.0, math.inf)

    rewards = torch.where(mask, step_rewards, torch.zeros_like(step_rewards))
    _check_finite(rewards, "step_rewards (valid positions)")
    to_go = rewards.flip(-1).cumsum(dim=-1).flip(-1)  # (P, G, L); 0 past each member's end
    count = mask.sum(dim=1, keepdim=True)  # (P, 1, L) members running at each step
    mean = to_go.sum(dim=1, keepdim=True) / count.clamp(min=1)
    centered = torch.where(mask, to_go - mean, torch.zeros_like(to_go))
    high = torch.where(mask, to_go, torch.full_like(to_go, -math.inf)).amax(dim=1, keepdim=True)
    low = torch.where(mask, to_go, torch.full_like(to_go, math.inf)).amin(dim=1, keepdim=True)
    dead = (count < 2) | (high == low)  # (P, 1, L)
    live = mask & ~dead
    tiny = torch.finfo(rewards.dtype).tiny
    if scale_rewards == "group":
        variance = centered.square().sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
        scale = torch.where(dead, torch.ones_like(variance), variance).clamp_min(tiny).sqrt() + eps
    elif scale_rewards == "batch":
        valid = centered[live]
        batch_std = valid.std(correction=1) if valid.numel() > 1 else torch.zeros((), dtype=rewards.dtype)
        scale = (batch_std + eps).clamp_min(tiny).expand_as(count).to(rewards.dtype)
    else:
        scale = torch.ones_like(mean)
    advantages = torch.where(live, centered / scale, torch.zeros_like(centered))
    started = count > 0
    with torch.no_grad():
        pairs = int(started.sum())
        metrics = {"frac_step_zero_std": float((dead & started).sum()) / pairs if pairs else 0.0}
    return advantages, metrics


def dynamic_sampling_mask(signal: Tensor) -> Tensor:
    """Keep-mask of groups that carry signal (DAPO dynamic sampling, arXiv:2503.14476 sec. 3.2).

    DAPO over-samples and drops groups whose accuracy is all 0 or all 1, because their group-relative advantages
    are all zero.

    Args:
        signal: (P, G) raw per-member success/accuracy/reward (bool, integer or float).

    Returns:
        (P,) bool, True for groups whose members are not all equal. With ``G == 1`` every group is dropped.
    """
    _check_ndim(signal, 2, "signal", "(P, G)")
    _check_finite(signal, "signal")
    return (signal != signal[:, :1]).any(dim=1)


def broadcast_group(values: Tensor, mask: Tensor) -> Tensor:
    """Spread one value per group member over that member's valid steps.

    Member ``(p, g)`` is row ``p * G + g`` of ``mask``, the row-major flattening of ``(P, G)``, which is the order
    a grouped rollout lays prompts out in (each prompt's seed repeated ``G`` times in a row).

    Args:
        values: (P, G) per-member values, e.g. the output of :func:`group_advantages`.
        mask: (P*G, L) bool, True where the member's step is valid.

    Returns:
        (P*G, L) with ``values[p, g]`` at the valid steps of row ``p * G + g`` and 0 elsewhere.
    """
    _check_ndim(values, 2, "values", "(P, G)")
    _check_ndim(mask, 2, "mask", "(P*G, L)")
    _check_bool(mask, "mask")
    num_prompts, group_size = values.shape
    if mask.shape[0] != num_prompts * group_size:
        raise ValueError(
            f"mask has {mask.shape[0]} rows but values of shape {tuple(values.shape)} needs P*G = "
            f"{num_prompts}*{group_size} = {num_prompts * group_size} rows"
        )
    flat = values.reshape(num_prompts * group_size, 1).expand(-1, mask.shape[1])
    return torch.where(mask, flat, torch.zeros_like(flat))


# --- PPO advantages ----------------------------------------------------------------------------------------------


def gae(
    rewards: Tensor,
    values: Tensor,
    next_values: Tensor,
    terminated: Tensor,
    truncated: Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[Tensor, Tensor]:
    """Generalized advantage estimation over a fixed-length rollout (GAE, arXiv:1506.02438, eq. 16).

    ``delta_t = r_t + gamma * (1 - terminated_t) * next_values_t - values_t`` and
    ``A_t = delta_t + gamma * lambda * (1 - done_t) * A_{t+1}`` with ``done = terminated | truncated``.

    Bootstrapping is decided per step by *why* it ended: a terminated step has no future (``next_values`` is
    ignored), a truncated one (time limit) does, so for it the caller passes ``V(final observation)`` in
    ``next_values``. Either way the lambda-recursion is cut, so advantages never leak across an episode boundary.
    A step both terminated and truncated counts as terminated. For an ongoing step ``next_values[t]`` is normally
    ``values[t + 1]``, and in the last row ``V(s_T)``, the bootstrap of the unfinished rollout.

    Args:
        rewards: (T, N) float.
        values: (T, N) float, ``V(s_t)``.
        next_values: (T, N) float, ``V(s_{t+1})`` (for a truncated step: V of the final observation).
        terminated: (T, N) bool.
        truncated: (T, N) bool.
        gamma: discount in [0, 1].
        gae_lambda: GAE lambda in [0, 1].

    Returns:
        advantages: (T, N); returns: (T, N) = advantages + values (the value-function targets).
    """
    _check_ndim(rewards, 2, "rewards", "(T, N)")
    _check_float(rewards, "rewards")
    _check_float(values, "values")
    _check_float(next_values, "next_values")
    _check_bool(terminated, "terminated")
    _check_bool(truncated, "truncated")
    _check_same_shape(
        rewards, "rewards", values=values, next_values=next_values, terminated=terminated, truncated=truncated
    )
    _check_coefficient(gamma, "gamma", 0.0, 1.0)
    _check_coefficient(gae_lambda, "gae_lambda", 0.0, 1.0)
    if rewards.shape[0] == 0:
        raise ValueError(f"rewards must hold at least one step, got shape {tuple(rewards.shape)}")

    not_terminated = (~terminated).to(rewards.dtype)
    not_done = (~(terminated | truncated)).to(rewards.dtype)
    deltas = rewards + gamma * not_terminated * next_values - values
    steps: list[Tensor] = []
    running = torch.zeros_like(deltas[0])
    for t in range(rewards.shape[0] - 1, -1, -1):
        running = deltas[t] + gamma * gae_lambda * not_done[t] * running
        steps.append(running)
    advantages = torch.stack(steps[::-1])
    return advantages, advantages + values


# --- losses ------------------------------------------------------------------------------------------------------


def clipped_surrogate(
    log_prob: Tensor,
    old_log_prob: Tensor,
    advantages: Tensor,
    clip_coef: float,
    clip_coef_high: float | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Elementwise clipped surrogate loss of PPO (arXiv:1707.06347) and GRPO, with DAPO's clip-higher.

    ``loss = -min(r * A, clip(r, 1 - clip_coef, 1 + clip_coef_high) * A)`` with ``r = exp(log_prob -
    old_log_prob)``. DAPO (arXiv:2503.14476 sec. 3.1) raises the upper bound (``clip_coef_high`` > ``clip_coef``)
    so that unlikely tokens can still gain probability. ``old_log_prob`` and ``advantages`` are detached: they are
    constants of the update, and this keeps ``old_log_prob=log_prob`` (one update per rollout) from zeroing the
    gradient.

    Args:
        log_prob: (B,) or (B, L) float log-probabilities under the current policy.
        old_log_prob: same shape, under the policy that sampled the rollout.
        advantages: same shape (use :func:`broadcast_group` for per-member advantages).
        clip_coef: lower clip epsilon, > 0.
        clip_coef_high: upper clip epsilon, > 0; ``None`` uses ``clip_coef`` (symmetric PPO clip).

    Returns:
        loss: elementwise, same shape as the inputs (aggregate with :func:`aggregate_loss` or :func:`masked_mean`).
        metrics: elementwise detached float tensors of the same shape: ``ratio``; ``clipped_low`` (r < 1 - eps and
        A < 0: the clip binds on the low side); ``clipped_high`` (r > 1 + eps_high and A > 0); ``clipped``
        (either); ``approx_kl`` = ``(r - 1) - log r``, the k3 estimator of KL(old || new).
    """
    _check_float(log_prob, "log_prob")
    _check_float(old_log_prob, "old_log_prob")
    _check_float(advantages, "advantages")
    if log_prob.ndim not in (1, 2):
        raise ValueError(f"log_prob must have shape (B,) or (B, L), got shape {tuple(log_prob.shape)}")
    _check_same_shape(log_prob, "log_prob", old_log_prob=old_log_prob, advantages=advantages)
    _check_coefficient(clip_coef, "clip_coef", 0.0, math.inf)
    if clip_coef == 0:
        raise ValueError("clip_coef=0 is not accepted; it must be > 0 (typically 0.2)")
    clip_high = clip_coef if clip_coef_high is None else clip_coef_high
    _check_coefficient(clip_high, "clip_coef_high", 0.0, math.inf)
    if clip_high == 0:
        raise ValueError("clip_coef_high=0 is not accepted; it must be > 0 (DAPO uses 0.28) or None")

    advantages = advantages.detach()
    log_ratio = log_prob - old_log_prob.detach()
    ratio = log_ratio.exp()
    unclipped = ratio * advantages
    clipped_objective = ratio.clamp(1.0 - clip_coef, 1.0 + clip_high) * advantages
    loss = -torch.min(unclipped, clipped_objective)

    with torch.no_grad():
        clipped_low = (ratio < 1.0 - clip_coef) & (advantages < 0)
        clipped_high = (ratio > 1.0 + clip_high) & (advantages > 0)
        metrics = {
            "ratio": ratio.detach(),
            "clipped_low": clipped_low.to(ratio.dtype),
            "clipped_high": clipped_high.to(ratio.dtype),
            "clipped": (clipped_low | clipped_high).to(ratio.dtype),
            "approx_kl": ((ratio - 1.0) - log_ratio).detach(),
        }
    return loss, metrics


def kl_penalty(log_prob: Tensor, ref_log_prob: Tensor, estimator: str = "k3") -> Tensor:
    """Elementwise estimate of KL(pi || pi_ref) from actions sampled from pi (Schulman, "Approximating KL").

    With ``log_r = ref_log_prob - log_prob``:

    * ``k1 = -log_r``: unbiased, high variance, can be negative.
    * ``k2 = 0.5 * log_r**2``: biased, low variance, non-negative.
    * ``k3 = exp(log_r) - log_r - 1``: unbiased, low variance, non-negative; DeepSeekMath eq. 4 uses this one.

    ``ref_log_prob`` is detached (the reference policy is frozen). k3 is not clamped: a huge ``log_r`` gives a
    huge penalty, which is the honest value.

    Args:
        log_prob: float tensor of any shape, log-probabilities under pi.
        ref_log_prob: same shape, under the reference policy.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"``.

    Returns:
        Tensor of the same shape.
    """
    _check_float(log_prob, "log_prob")
    _check_float(ref_log_prob, "ref_log_prob")
    _check_same_shape(log_prob, "log_prob", ref_log_prob=ref_log_prob)
    _check_choice(estimator, "estimator", KL_ESTIMATORS)
    log_r = ref_log_prob.detach() - log_prob
    if estimator == "k1":
        return -log_r
    if estimator == "k2":
        return 0.5 * log_r.square()
    # expm1 keeps precision when log_r is small (the usual case: pi close to pi_ref); the clamp only removes a
    # last-ulp rounding below 0, since the exact value is >= 0.
    return (torch.expm1(log_r) - log_r).clamp_min(0.0)


def aggregate_loss(
    per_element: Tensor,
    mask: Tensor,
    loss_type: str,
    max_length: int | None = None,
) -> Tensor:
    """Reduce an elementwise (B, L) loss to a scalar the way each GRPO variant does.

    * ``"grpo"`` (DeepSeekMath eq. 3): mean over each sequence's valid steps, then mean over the sequences that
      have at least one valid step. Long sequences get a smaller weight per token.
    * ``"dapo"`` (DAPO sec. 3.3, token-level loss): sum over all valid steps / number of valid steps in the batch.
    * ``"dr_grpo"`` (Dr. GRPO sec. 3.1): sum over all valid steps / (B * max_length), a constant normaliser, so
      the per-token weight depends neither on the sequence length nor on the batch's lengths.

    Args:
        per_element: (B, L) float elementwise loss.
        mask: (B, L) bool, True where the step is valid.
        loss_type: ``"grpo"``, ``"dapo"`` or ``"dr_grpo"``.
        max_length: the longest possible sequence (e.g. the max number of generated tokens); required by
            ``"dr_grpo"`` and ignored otherwise.

    Returns:
        0-dim tensor; 0 (not nan) when no step is valid.
    """
    _check_ndim(per_element, 2, "per_element", "(B, L)")
    _check_float(per_element, "per_element")
    _check_bool(mask, "mask")
    _check_same_shape(per_element, "per_element", mask=mask)
    _check_choice(loss_type, "loss_type", LOSS_TYPES)

    valid = torch.where(mask, per_element, torch.zeros_like(per_element))
    if loss_type == "grpo":
        steps_per_sequence = mask.sum(dim=1)  # (B,)
        has_steps = steps_per_sequence > 0
        sequence_mean = valid.sum(dim=1) / steps_per_sequence.clamp(min=1)
        return sequence_mean.sum() / has_steps.sum().clamp(min=1)
    if loss_type == "dapo":
        return valid.sum() / mask.sum().clamp(min=1)
    if max_length is None or isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(
            f"loss_type='dr_grpo' needs max_length, a positive int (the longest possible sequence); got {max_length!r}"
        )
    # Only a row with more valid steps than max_length breaks the constant-normaliser invariant; checking the
    # static width first avoids a device sync in the usual case (L <= max_length).
    if mask.shape[1] > max_length:
        longest = int(mask.sum(dim=1).max()) if mask.shape[0] else 0
        if longest > max_length:
            raise ValueError(f"a sequence has {longest} valid steps, more than max_length={max_length}")
    # max(B, 1): an empty batch gives 0, not 0/0.
    return valid.sum() / (max(per_element.shape[0], 1) * max_length)


def loss_normaliser(mask: Tensor, loss_type: str, max_length: int | None = None) -> Tensor:
    """The denominator :func:`aggregate_loss` divides by for ``mask`` (B, L), at least 1: the sequences with a valid
    step (``"grpo"``), the valid steps (``"dapo"``) or ``B * max_length`` (``"dr_grpo"``).

    Rows whose loss terms are all 0 add nothing to the numerator, so the loss of a batch equals the loss of its
    other rows times ``loss_normaliser(other rows) / loss_normaliser(batch)``. An update that leaves zero-advantage
    episodes out keeps the whole batch's gradient that way.

    Returns:
        0-dim float tensor on ``mask``'s device.
    """
    _check_ndim(mask, 2, "mask", "(B, L)")
    _check_bool(mask, "mask")
    _check_choice(loss_type, "loss_type", LOSS_TYPES)
    if loss_type == "grpo":
        return (mask.sum(dim=1) > 0).sum().clamp(min=1).float()
    if loss_type == "dapo":
        return mask.sum().clamp(min=1).float()
    if max_length is None or isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
        raise ValueError(
            f"loss_type='dr_grpo' needs max_length, a positive int (the longest possible sequence); got {max_length!r}"
        )
    return torch.tensor(float(max(mask.shape[0], 1) * max_length), device=mask.device)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values`` over the positions where ``mask`` is True.

    Args:
        values: float tensor of any shape.
        mask: bool tensor of the same shape.

    Returns:
        0-dim tensor; 0 when the mask is empty (never nan).
    """
    _check_float(values, "values")
    _check_bool(mask, "mask")
    _check_same_shape(values, "values", mask=mask)
    valid = torch.where(mask, values, torch.zeros_like(values))
    return valid.sum() / mask.sum().clamp(min=1)


def value_loss(values: Tensor, old_values: Tensor, returns: Tensor, clip_coef: float | None = None) -> Tensor:
    """Elementwise value-function loss of PPO.

    ``0.5 * (V - R)^2``, or with ``clip_coef`` the PPO2 clipped form ``0.5 * max((V - R)^2, (V_clip - R)^2)``
    where ``V_clip = V_old + clip(V - V_old, -clip_coef, clip_coef)``. ``old_values`` and ``returns`` are
    detached (targets of the regression).

    Args:
        values: (B,) or any shape, float, current value predictions.
        old_values: same shape, predictions at rollout time (used only when clipping).
        returns: same shape, regression targets (e.g. from :func:`gae`).
        clip_coef: value clip range, > 0, or ``None`` for the unclipped loss.

    Returns:
        Tensor of the same shape.
    """
    _check_float(values, "values")
    _check_float(old_values, "old_values")
    _check_float(returns, "returns")
    _check_same_shape(values, "values", old_values=old_values, returns=returns)
    returns = returns.detach()
    unclipped = (values - returns).square()
    if clip_coef is None:
        return 0.5 * unclipped
    _check_coefficient(clip_coef, "clip_coef", 0.0, math.inf)
    if clip_coef == 0:
        raise ValueError("clip_coef=0 is not accepted for value_loss; pass a value > 0 or None for no clipping")
    old_values = old_values.detach()
    clipped_values = old_values + (values - old_values).clamp(-clip_coef, clip_coef)
    return 0.5 * torch.max(unclipped, (clipped_values - returns).square())


def explained_variance(predictions: Tensor, targets: Tensor, mask: Tensor | None = None) -> float:
    """``1 - Var[y - y_hat] / Var[y]``: 1 is a perfect value function, 0 predicts no better than a constant.

    Uses the biased (population) variance like SB3's ``explained_variance``; the ratio is the same either way.

    Args:
        predictions: float tensor, ``y_hat``.
        targets: same shape, ``y``.
        mask: optional bool tensor of the same shape selecting the elements to use.

    Returns:
        python float; nan when ``Var[y] == 0`` (or no element is selected).
    """
    _check_float(predictions, "predictions")
    _check_float(targets, "targets")
    _check_same_shape(predictions, "predictions", targets=targets)
    with torch.no_grad():
        if mask is not None:
            _check_bool(mask, "mask")
            _check_same_shape(predictions, "predictions", mask=mask)
            predictions, targets = predictions[mask], targets[mask]
        if targets.numel() == 0:
            return math.nan
        variance = float(targets.var(correction=0))
        if variance == 0.0:
            return math.nan
        return 1.0 - float((targets - predictions).var(correction=0)) / variance


def normalize(advantages: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
    """PPO advantage normalisation: ``(A - mean) / (std + eps)`` over the valid elements.

    The std is unbiased, like SB3 and CleanRL (``advantages.std()``). Fewer than two valid elements give 0.

    Args:
        advantages: float tensor of any shape, e.g. a (B,) minibatch.
        mask: optional bool tensor of the same shape; the statistics use only the True elements.
        eps: non-negative constant added to the std.

    Returns:
        Tensor of the same shape; 0 at masked positions.
    """
    _check_float(advantages, "advantages")
    _check_coefficient(eps, "eps", 0.0, math.inf)
    if mask is None:
        mask = torch.ones_like(advantages, dtype=torch.bool)
    _check_bool(mask, "mask")
    _check_same_shape(advantages, "advantages", mask=mask)
    valid = torch.where(mask, advantages, torch.zeros_like(advantages))
    count = mask.sum()
    mean = valid.sum() / count.clamp(min=1)
    centered = torch.where(mask, advantages - mean, torch.zeros_like(advantages))
    variance = centered.square().sum() / (count - 1).clamp(min=1)
    # With < 2 values, or all equal, every centered value is 0: dividing by a safe 1 keeps value and gradient 0.
    degenerate = variance <= 0
    std = torch.where(degenerate, torch.ones_like(variance), variance).sqrt()
    scale = torch.where(degenerate, torch.ones_like(std), std + eps)
    return centered / scale

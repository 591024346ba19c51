"""rlopt.functional against numbers computed by hand (the arithmetic is written next to each expectation)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlopt.functional import (
    aggregate_loss,
    broadcast_group,
    clipped_surrogate,
    dynamic_sampling_mask,
    explained_variance,
    gae,
    group_advantages,
    kl_penalty,
    loss_normaliser,
    masked_mean,
    normalize,
    process_advantages,
    step_advantages,
    value_loss,
)

T_ = True
F_ = False


def close(actual: torch.Tensor, expected: list | float, atol: float = 1e-5) -> None:
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=actual.dtype), atol=atol, rtol=0)


# --- group_advantages --------------------------------------------------------------------------------------------


def test_group_advantages_group_scale_by_hand():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    advantages, metrics = group_advantages(rewards, "group", eps=0.0)
    # group 0: mean 0.5, unbiased var = 4 * 0.25 / 3 = 1/3, std = 0.57735; 0.5 / 0.57735 = 0.866025
    close(advantages, [[0.866025, -0.866025, -0.866025, 0.866025], [0.0, 0.0, 0.0, 0.0]])
    assert metrics == pytest.approx({"reward_mean": 0.75, "reward_std": 0.57735 / 2, "frac_reward_zero_std": 0.5})
    assert all(isinstance(value, float) for value in metrics.values())
    # the default eps = 1e-6 is added to the std: 0.5 / 0.577351 = 0.8660240
    advantages, _ = group_advantages(rewards)
    close(advantages[0], [0.866024, -0.866024, -0.866024, 0.866024], atol=2e-6)


def test_group_advantages_two_members():
    # mean 2, unbiased std = sqrt((1 + 1) / 1) = 1.414214; +-1 / 1.414214 = +-0.707107
    advantages, metrics = group_advantages(torch.tensor([[3.0, 1.0]]), eps=0.0)
    close(advantages, [[0.707107, -0.707107]])
    assert metrics["reward_std"] == pytest.approx(1.414214, abs=1e-5)
    assert metrics["frac_reward_zero_std"] == 0.0


def test_group_advantages_batch_and_none_scale():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]])
    # batch: mean 0.75, squared deviations 6 * 0.0625 + 2 * 0.5625 = 1.5, / 7 = 0.2142857, std = 0.462910
    # group 0: +-0.5 / 0.462910 = +-1.080123; the zero-std group stays exactly 0
    advantages, _ = group_advantages(rewards, "batch", eps=0.0)
    close(advantages, [[1.080123, -1.080123, -1.080123, 1.080123], [0.0, 0.0, 0.0, 0.0]])
    # none (Dr. GRPO): only centred
    advantages, _ = group_advantages(rewards, "none")
    close(advantages, [[0.5, -0.5, -0.5, 0.5], [0.0, 0.0, 0.0, 0.0]], atol=0.0)


def test_group_advantages_zero_std_group_is_exactly_zero():
    # 0.1 is not exactly representable: mean(0.1, 0.1, 0.1) may round, the result must still be exactly 0.
    rewards = torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.3, 0.3]], dtype=torch.float64)
    for scale in ("group", "batch", "none"):
        advantages, metrics = group_advantages(rewards, scale, eps=0.0)
        assert torch.equal(advantages, torch.zeros_like(rewards))
        assert metrics["frac_reward_zero_std"] == 1.0
        assert metrics["reward_std"] == 0.0


def test_group_advantages_gradients_finite_for_zero_std_groups():
    rewards = torch.tensor([[2.0, 2.0, 2.0], [1.0, 0.0, 2.0]], requires_grad=True)
    for scale in ("group", "batch", "none"):
        rewards.grad = None
        advantages, _ = group_advantages(rewards, scale, eps=0.0)
        (advantages * torch.arange(6.0).reshape(2, 3)).sum().backward()
        assert torch.isfinite(rewards.grad).all()
        if scale != "batch":  # with "batch", the dead group's rewards still move the batch std of the live one
            assert torch.equal(rewards.grad[0], torch.zeros(3))
    # and the policy gradient through a dead group's zero advantages is finite and zero
    advantages, _ = group_advantages(torch.tensor([[1.0, 1.0]]))
    log_prob = torch.zeros(1, 2, requires_grad=True)
    loss, _ = clipped_surrogate(log_prob, torch.zeros(1, 2), advantages, clip_coef=0.2)
    loss.sum().backward()
    assert torch.equal(log_prob.grad, torch.zeros(1, 2))


def test_group_advantages_group_size_one():
    with pytest.raises(ValueError, match="G >= 2"):
        group_advantages(torch.tensor([[1.0], [0.0]]), "group")
    advantages, metrics = group_advantages(torch.tensor([[1.0], [0.0]]), "none")
    assert torch.equal(advantages, torch.zeros(2, 1))
    assert metrics["frac_reward_zero_std"] == 1.0


def test_group_advantages_bad_input():
    with pytest.raises(ValueError, match=r"scale_rewards='std'.*'group', 'batch', 'none'"):
        group_advantages(torch.zeros(2, 2), "std")
    with pytest.raises(ValueError, match=r"\(P, G\)"):
        group_advantages(torch.zeros(4))
    with pytest.raises(TypeError, match="floating-point"):
        group_advantages(torch.zeros(2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="non-finite"):
        group_advantages(torch.tensor([[1.0, math.nan]]))
    with pytest.raises(ValueError, match="eps"):
        group_advantages(torch.zeros(2, 2), eps=-1.0)


# --- process_advantages ------------------------------------------------------------------------------------------


def test_process_advantages_by_hand():
    nan = math.nan
    step_rewards = torch.tensor(
        [
            [[1.0, 0.0, 1.0], [0.0, 1.0, nan]],  # group 0: ragged, garbage at the masked step
            [[2.0, 2.0, 2.0], [2.0, 2.0, 5.0]],  # group 1: every valid step reward equal
            [[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # group 2: a single valid step
        ]
    )
    mask = torch.tensor(
        [
            [[T_, T_, T_], [T_, T_, F_]],
            [[T_, T_, T_], [T_, T_, F_]],
            [[T_, F_, F_], [F_, F_, F_]],
        ]
    )
    advantages = process_advantages(step_rewards, mask, eps=0.0)
    # group 0 valid rewards 1, 0, 1, 0, 1: mean 0.6, squared deviations 3 * 0.16 + 2 * 0.36 = 1.2, / 4 = 0.3,
    # std = 0.547723; normalised 1 -> 0.4 / 0.547723 = 0.730297, 0 -> -0.6 / 0.547723 = -1.095445
    # member 0 to-go: [0.730297 - 1.095445 + 0.730297, -1.095445 + 0.730297, 0.730297]
    # member 1 to-go: [-1.095445 + 0.730297, 0.730297, masked]
    expected = [
        [[0.365148, -0.365148, 0.730297], [-0.365148, 0.730297, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
    ]
    close(advantages, expected)


def test_process_advantages_gradients_finite():
    step_rewards = torch.tensor([[[1.0, 1.0], [1.0, 1.0]], [[0.0, 1.0], [1.0, 3.0]]], requires_grad=True)
    mask = torch.tensor([[[T_, T_], [T_, F_]], [[T_, T_], [T_, F_]]])
    process_advantages(step_rewards, mask).sum().backward()
    assert torch.isfinite(step_rewards.grad).all()


def test_process_advantages_bad_input():
    with pytest.raises(TypeError, match="bool"):
        process_advantages(torch.zeros(1, 2, 3), torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="shape"):
        process_advantages(torch.zeros(1, 2, 3), torch.ones(1, 2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(P, G, L\)"):
        process_advantages(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))


def _step_example() -> tuple[torch.Tensor, torch.Tensor]:
    nan = math.nan
    step_rewards = torch.tensor(
        [
            [[1.0, 0.0, 2.0], [0.0, 1.0, nan], [3.0, nan, nan]],  # ragged group, garbage at masked steps
            [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [5.0, 5.0, 5.0]],  # equal rewards-to-go; third member masked out
        ]
    )
    mask = torch.tensor(
        [
            [[T_, T_, T_], [T_, T_, F_], [T_, F_, F_]],
            [[T_, T_, F_], [T_, T_, F_], [F_, F_, F_]],
        ]
    )
    return step_rewards, mask


def test_step_advantages_by_hand():
    step_rewards, mask = _step_example()
    advantages, metrics = step_advantages(step_rewards, mask, "group", eps=0.0)
    # group 0 rewards-to-go: member 0 [3, 2, 2], member 1 [1, 1, -], member 2 [3, -, -]
    # t=0: 3, 1, 3 -> mean 7/3, centred [2/3, -4/3, 2/3], unbiased std sqrt(4/3) = 1.154701
    # t=1: 2, 1 -> mean 1.5, centred [0.5, -0.5], std sqrt(0.5) = 0.707107
    # t=2: only member 0 runs -> no signal
    expected = [
        [[0.577350, 0.707107, 0.0], [-1.154701, -0.707107, 0.0], [0.577350, 0.0, 0.0]],
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]],  # group 1: equal at every step
    ]
    close(advantages, expected)
    # (group, step) pairs with a running member: 3 in group 0 (1 dead), 2 in group 1 (both dead)
    assert metrics["frac_step_zero_std"] == pytest.approx(3 / 5)

    centred = [[[2 / 3, 0.5, 0.0], [-4 / 3, -0.5, 0.0], [2 / 3, 0.0, 0.0]], [[0.0] * 3] * 3]
    unscaled, _ = step_advantages(step_rewards, mask, "none", eps=0.0)
    close(unscaled, centred)
    batch, _ = step_advantages(step_rewards, mask, "batch", eps=0.0)
    live = torch.tensor([2 / 3, -4 / 3, 2 / 3, 0.5, -0.5])
    close(batch, (torch.tensor(centred) / live.std(correction=1)).tolist())


def test_step_advantages_gradients_finite_and_bad_input():
    step_rewards, mask = _step_example()
    step_rewards = torch.nan_to_num(step_rewards).requires_grad_(True)
    for scale in ("group", "batch", "none"):
        step_advantages(step_rewards, mask, scale, eps=0.0)[0].sum().backward()
        assert torch.isfinite(step_rewards.grad).all()
    with pytest.raises(TypeError, match="bool"):
        step_advantages(torch.zeros(1, 2, 3), torch.ones(1, 2, 3))
    with pytest.raises(ValueError, match="scale_rewards"):
        step_advantages(torch.zeros(1, 2, 3), torch.ones(1, 2, 3, dtype=torch.bool), "median")


# --- dynamic sampling, broadcast ---------------------------------------------------------------------------------


def test_dynamic_sampling_mask():
    signal = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.5]])
    assert dynamic_sampling_mask(signal).tolist() == [True, False, False, True]
    assert dynamic_sampling_mask(torch.tensor([[True, True], [False, True]])).tolist() == [False, True]
    with pytest.raises(ValueError, match=r"\(P, G\)"):
        dynamic_sampling_mask(torch.zeros(3))


def test_broadcast_group():
    values = torch.tensor([[0.5, -0.5], [1.0, 2.0]])
    mask = torch.tensor([[T_, T_, T_], [T_, F_, F_], [T_, T_, F_], [F_, F_, F_]])
    expected = [[0.5, 0.5, 0.5], [-0.5, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    close(broadcast_group(values, mask), expected, atol=0.0)
    with pytest.raises(ValueError, match=r"P\*G = 2\*2 = 4"):
        broadcast_group(values, torch.ones(3, 3, dtype=torch.bool))


# --- gae ---------------------------------------------------------------------------------------------------------


def test_gae_termination_truncation_and_boundaries():
    gamma, gae_lambda = 0.5, 0.5  # gamma * lambda = 0.25
    # env 0: terminates at t=1 (next_values[1] = 7 is garbage and must be ignored), new episode from t=2,
    #        rollout cut at t=3 with bootstrap V(s_4) = 4.
    # env 1: truncated at t=2 with V(final observation) = 10, new episode at t=3 with bootstrap 6.
    rewards = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [1.0, 2.0]])
    values = torch.tensor([[0.5, 1.0], [1.0, 2.0], [2.0, 3.0], [1.0, 0.0]])
    next_values = torch.tensor([[1.0, 2.0], [7.0, 3.0], [1.0, 10.0], [4.0, 6.0]])
    terminated = torch.tensor([[F_, F_], [T_, F_], [F_, F_], [F_, F_]])
    truncated = torch.tensor([[F_, F_], [F_, F_], [F_, T_], [F_, F_]])
    advantages, returns = gae(rewards, values, next_values, terminated, truncated, gamma, gae_lambda)
    # env 0 deltas: 1 + .5*1 - .5 = 1; 2 - 1 = 1 (no bootstrap); 0 + .5*1 - 2 = -1.5; 1 + .5*4 - 1 = 2
    #   A3 = 2; A2 = -1.5 + .25*2 = -1; A1 = 1 (cut); A0 = 1 + .25*1 = 1.25
    # env 1 deltas: 0 + .5*2 - 1 = 0; 0 + .5*3 - 2 = -.5; 1 + .5*10 - 3 = 3 (bootstrap); 2 + .5*6 - 0 = 5
    #   A3 = 5; A2 = 3 (cut); A1 = -.5 + .25*3 = .25; A0 = 0 + .25*.25 = .0625
    close(advantages, [[1.25, 0.0625], [1.0, 0.25], [-1.0, 3.0], [2.0, 5.0]], atol=1e-6)
    close(returns, [[1.75, 1.0625], [2.0, 2.25], [1.0, 6.0], [3.0, 5.0]], atol=1e-6)


def test_gae_terminated_and_truncated_counts_as_terminated():
    ones = torch.ones(1, 1)
    flag = torch.ones(1, 1, dtype=torch.bool)
    advantages, _ = gae(ones, torch.zeros(1, 1), 100 * ones, flag, flag, 0.9, 0.95)
    close(advantages, [[1.0]], atol=0.0)


def test_gae_bad_input():
    zeros = torch.zeros(3, 2)
    flags = torch.zeros(3, 2, dtype=torch.bool)
    with pytest.raises(TypeError, match="terminated must be a bool"):
        gae(zeros, zeros, zeros, zeros, flags, 0.99, 0.95)
    with pytest.raises(ValueError, match="next_values has shape"):
        gae(zeros, zeros, torch.zeros(3, 3), flags, flags, 0.99, 0.95)
    with pytest.raises(ValueError, match=r"gamma=1.5.*\[0.0, 1.0\]"):
        gae(zeros, zeros, zeros, flags, flags, 1.5, 0.95)
    with pytest.raises(ValueError, match=r"\(T, N\)"):
        gae(torch.zeros(3), torch.zeros(3), torch.zeros(3), flags[:, 0], flags[:, 0], 0.99, 0.95)


# --- clipped surrogate -------------------------------------------------------------------------------------------


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1, 1.25])
    advantages = torch.tensor([1.0, -1.0, -1.0, 1.0, 2.0, 1.0])
    log_prob = ratio.log().requires_grad_()
    loss, metrics = clipped_surrogate(log_prob, torch.zeros(6), advantages, clip_coef=0.2, clip_coef_high=0.28)
    # 1: min(1.5, 1.28) -> -1.28 (high clip binds)  2: min(-1.5, -1.28) -> 1.5 (no clip binds)
    # 3: min(-0.5, -0.8) -> 0.8 (low clip binds)    4: min(0.5, 0.8) -> -0.5 (no clip binds)
    # 5: inside -> -2.2                            6: 1.25 < 1.28 inside -> -1.25
    close(loss, [-1.28, 1.5, 0.8, -0.5, -2.2, -1.25])
    close(metrics["ratio"], ratio.tolist())
    close(metrics["clipped_high"], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0], atol=0.0)
    close(metrics["clipped_low"], [0.0, 0.0, 1.0, 0.0, 0.0, 0.0], atol=0.0)
    close(metrics["clipped"], [1.0, 0.0, 1.0, 0.0, 0.0, 0.0], atol=0.0)
    # (r - 1) - ln r: 0.5 - 0.405465; -0.5 + 0.693147; 0.1 - 0.095310; 0.25 - 0.223144
    close(metrics["approx_kl"], [0.094535, 0.094535, 0.193147, 0.193147, 0.004690, 0.026856])
    # d loss / d log_prob = -r * A where the clip does not bind, 0 where it does
    loss.sum().backward()
    close(log_prob.grad, [0.0, 1.5, 0.0, -0.5, -2.2, -1.25])
    # symmetric clip (clip_coef_high=None): case 6 is now clipped at 1.2
    loss, metrics = clipped_surrogate(ratio.log(), torch.zeros(6), advantages, clip_coef=0.2)
    assert loss[5].item() == pytest.approx(-1.2)
    assert metrics["clipped_high"][5].item() == 1.0
    assert not any(value.requires_grad for value in metrics.values())


def test_clipped_surrogate_token_shape_and_detached_old():
    log_prob = torch.zeros(2, 3, requires_grad=True)
    advantages = torch.tensor([[1.0, 1.0, 1.0], [-2.0, -2.0, 0.0]])
    # one update per rollout: old_log_prob is the same tensor; the gradient must still be -A
    loss, metrics = clipped_surrogate(log_prob, log_prob, advantages, clip_coef=0.2)
    assert loss.shape == (2, 3) and metrics["ratio"].shape == (2, 3)
    loss.sum().backward()
    close(log_prob.grad, (-advantages).tolist(), atol=0.0)


def test_clipped_surrogate_bad_input():
    zeros = torch.zeros(4)
    with pytest.raises(ValueError, match="advantages has shape"):
        clipped_surrogate(zeros, zeros, torch.zeros(4, 1), clip_coef=0.2)
    with pytest.raises(ValueError, match=r"\(B,\) or \(B, L\)"):
        clipped_surrogate(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2), torch.zeros(2, 2, 2), clip_coef=0.2)
    with pytest.raises(ValueError, match="clip_coef=0"):
        clipped_surrogate(zeros, zeros, zeros, clip_coef=0.0)
    with pytest.raises(ValueError, match="clip_coef_high=-0.1"):
        clipped_surrogate(zeros, zeros, zeros, clip_coef=0.2, clip_coef_high=-0.1)


# --- kl ----------------------------------------------------------------------------------------------------------


def test_kl_penalty_by_hand():
    log_prob = torch.tensor([math.log(0.5), math.log(0.25), math.log(0.3)], dtype=torch.float64)
    ref_log_prob = torch.tensor([math.log(0.25), math.log(0.5), math.log(0.3)], dtype=torch.float64)
    # log_r = ref - logp = [-ln 2, ln 2, 0]
    close(kl_penalty(log_prob, ref_log_prob, "k1"), [0.693147, -0.693147, 0.0])
    close(kl_penalty(log_prob, ref_log_prob, "k2"), [0.240227, 0.240227, 0.0])  # 0.5 * 0.693147^2
    # k3 = q/p - ln(q/p) - 1: 0.5 + 0.693147 - 1; 2 - 0.693147 - 1; 0
    close(kl_penalty(log_prob, ref_log_prob), [0.193147, 0.306853, 0.0])


def test_kl_estimators_expectations_equal_true_kl():
    # p = [0.5, 0.25, 0.25], q = [0.25, 0.25, 0.5]: KL(p || q) = 0.5 ln 2 + 0.25 ln 0.5 = 0.25 ln 2
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.5], dtype=torch.float64)
    for estimator in ("k1", "k3"):  # the unbiased ones: E_p[k] = KL exactly
        expectation = (p * kl_penalty(p.log(), q.log(), estimator)).sum()
        assert expectation.item() == pytest.approx(0.25 * math.log(2), abs=1e-12)


def test_kl_penalty_bad_input():
    with pytest.raises(ValueError, match=r"estimator='k4'.*'k1', 'k2', 'k3'"):
        kl_penalty(torch.zeros(2), torch.zeros(2), "k4")
    with pytest.raises(ValueError, match="ref_log_prob has shape"):
        kl_penalty(torch.zeros(2), torch.zeros(3))


# --- aggregation -------------------------------------------------------------------------------------------------

RAGGED_LOSS = [[1.0, 2.0, 3.0, 4.0], [5.0, math.nan, math.inf, 7.0], [9.0, 9.0, 9.0, 9.0]]
RAGGED_MASK = [[T_, T_, T_, T_], [T_, F_, F_, F_], [F_, F_, F_, F_]]


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_a_batch_loss_is_its_nonzero_rows_loss_rescaled_by_the_normalisers(loss_type: str) -> None:
    generator = torch.Generator().manual_seed(0)
    per_element = torch.randn(6, 5, generator=generator)
    mask = torch.arange(5) < torch.tensor([5, 3, 1, 4, 0, 2])[:, None]  # ragged, one row without a valid step
    per_element[[1, 3, 4]] = 0.0  # zero-advantage rows: their loss terms are 0
    kept = torch.tensor([0, 2, 5])
    whole = aggregate_loss(per_element, mask, loss_type, max_length=5)
    part = aggregate_loss(per_element[kept], mask[kept], loss_type, max_length=5)
    scale = loss_normaliser(mask[kept], loss_type, 5) / loss_normaliser(mask, loss_type, 5)
    torch.testing.assert_close(part * scale, whole)
    expected = {"grpo": 5.0, "dapo": 15.0, "dr_grpo": 30.0}[loss_type]  # rows with a step; steps; B * max_length
    assert loss_normaliser(mask, loss_type, 5).item() == expected
    assert loss_normaliser(mask[:0], loss_type, 5).item() >= 1.0  # never 0
    with pytest.raises(TypeError, match="bool"):
        loss_normaliser(mask.float(), loss_type, 5)


def test_aggregate_loss_on_ragged_mask():
    per_element = torch.tensor(RAGGED_LOSS, requires_grad=True)
    mask = torch.tensor(RAGGED_MASK)
    # grpo: row means 10/4 = 2.5 and 5/1 = 5, row 2 has no valid step and is skipped: (2.5 + 5) / 2 = 3.75
    grpo = aggregate_loss(per_element, mask, "grpo")
    assert grpo.ndim == 0 and grpo.item() == pytest.approx(3.75)
    # dapo: (1 + 2 + 3 + 4 + 5) / 5 valid steps = 3
    assert aggregate_loss(per_element, mask, "dapo").item() == pytest.approx(3.0)
    # dr_grpo: 15 / (B * max_length) = 15 / (3 * 4) = 1.25, and 15 / (3 * 5) = 1
    assert aggregate_loss(per_element, mask, "dr_grpo", max_length=4).item() == pytest.approx(1.25)
    assert aggregate_loss(per_element, mask, "dr_grpo", max_length=5).item() == pytest.approx(1.0)
    # gradient of grpo: row 0 gets 1/4 * 1/2 per step, row 1's single step 1/2; nan/inf padding gets 0
    grpo.backward()
    close(per_element.grad, [[0.125] * 4, [0.5, 0.0, 0.0, 0.0], [0.0] * 4], atol=0.0)


def test_aggregate_loss_empty_mask_is_zero():
    per_element = torch.ones(2, 3)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    for loss_type in ("grpo", "dapo", "dr_grpo"):
        assert aggregate_loss(per_element, mask, loss_type, max_length=3).item() == 0.0


def test_aggregate_loss_bad_input():
    per_element = torch.zeros(3, 4)
    mask = torch.tensor(RAGGED_MASK)
    with pytest.raises(ValueError, match=r"loss_type='sum'.*'grpo', 'dapo', 'dr_grpo'"):
        aggregate_loss(per_element, mask, "sum")
    with pytest.raises(ValueError, match="max_length"):
        aggregate_loss(per_element, mask, "dr_grpo")
    with pytest.raises(ValueError, match="4 valid steps, more than max_length=3"):
        aggregate_loss(per_element, mask, "dr_grpo", max_length=3)
    with pytest.raises(ValueError, match="mask has shape"):
        aggregate_loss(per_element, mask[:, :3], "dapo")
    with pytest.raises(TypeError, match="bool"):
        aggregate_loss(per_element, mask.float(), "dapo")


def test_masked_mean():
    values = torch.tensor([1.0, 2.0, 3.0, math.nan])
    assert masked_mean(values, torch.tensor([T_, T_, F_, F_])).item() == pytest.approx(1.5)
    empty = masked_mean(values, torch.zeros(4, dtype=torch.bool))
    assert empty.ndim == 0 and empty.item() == 0.0
    with pytest.raises(ValueError, match="mask has shape"):
        masked_mean(values, torch.ones(3, dtype=torch.bool))


# --- value loss, explained variance, normalisation ---------------------------------------------------------------


def test_value_loss_by_hand():
    values = torch.tensor([1.0, 2.0, 0.0])
    old_values = torch.tensor([0.5, 2.5, 0.0])
    returns = torch.tensor([2.0, 0.0, 1.0])
    # 0.5 * [(1-2)^2, (2-0)^2, (0-1)^2]
    close(value_loss(values, old_values, returns), [0.5, 2.0, 0.5], atol=0.0)
    # clipped values old + clip(v - old, +-0.2) = [0.7, 2.3, 0.0]; squared errors [1.69, 5.29, 1.0];
    # 0.5 * max([1, 4, 1], [1.69, 5.29, 1.0])
    close(value_loss(values, old_values, returns, clip_coef=0.2), [0.845, 2.645, 0.5])
    with pytest.raises(ValueError, match="returns has shape"):
        value_loss(values, old_values, torch.zeros(4))


def test_explained_variance_by_hand():
    targets = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(targets.clone(), targets) == pytest.approx(1.0)
    assert explained_variance(torch.full((4,), 2.5), targets) == pytest.approx(0.0)
    # residuals [1, 0, 0, -1]: var 0.5; var(y) = 1.25; 1 - 0.5 / 1.25 = 0.6
    assert explained_variance(torch.tensor([0.0, 2.0, 3.0, 5.0]), targets) == pytest.approx(0.6)
    assert math.isnan(explained_variance(torch.zeros(3), torch.ones(3)))
    # masked: y = [1, 2, 3], y_hat = [1, 2, 3] (the 100 is excluded) -> 1
    mask = torch.tensor([T_, T_, T_, F_])
    assert explained_variance(torch.tensor([1.0, 2.0, 3.0, 100.0]), targets, mask) == pytest.approx(1.0)


def test_normalize_by_hand():
    # mean 2.5, unbiased std sqrt(5 / 3) = 1.290994: [-1.5, -0.5, 0.5, 1.5] / 1.290994
    close(normalize(torch.tensor([1.0, 2.0, 3.0, 4.0])), [-1.161895, -0.387298, 0.387298, 1.161895])
    # masked: valid [1, 2, 3] -> mean 2, std 1; the masked 100 becomes 0
    mask = torch.tensor([T_, T_, T_, F_])
    close(normalize(torch.tensor([1.0, 2.0, 3.0, 100.0]), mask), [-1.0, 0.0, 1.0, 0.0])
    assert torch.equal(normalize(torch.tensor([5.0, 5.0])), torch.zeros(2))
    assert torch.equal(normalize(torch.tensor([5.0, 1.0]), torch.tensor([T_, F_])), torch.zeros(2))


# --- properties --------------------------------------------------------------------------------------------------

PROPERTY = settings(max_examples=60, deadline=None)
finite_reward = st.floats(min_value=-100.0, max_value=100.0, allow_nan=False, allow_infinity=False)
# Realistic rewards (binary successes and quarter steps): no 1e-300-apart values that make any std underflow.
plain_reward = st.sampled_from([0.0, 1.0]) | st.integers(-400, 400).map(lambda k: k / 4)


@st.composite
def reward_groups(draw: st.DrawFn, reward: st.SearchStrategy[float] = plain_reward) -> torch.Tensor:
    num_prompts = draw(st.integers(1, 4))
    group_size = draw(st.integers(2, 6))
    rows = [[draw(reward) for _ in range(group_size)] for _ in range(num_prompts)]
    return torch.tensor(rows, dtype=torch.float64)


@PROPERTY
@given(rewards=reward_groups(), scale=st.sampled_from(["group", "batch", "none"]))
def test_group_advantages_zero_mean_per_group(rewards: torch.Tensor, scale: str):
    advantages, metrics = group_advantages(rewards, scale, eps=0.0)
    assert torch.isfinite(advantages).all()
    torch.testing.assert_close(advantages.mean(dim=1), torch.zeros(rewards.shape[0], dtype=rewards.dtype))
    live = dynamic_sampling_mask(rewards)
    if scale == "group" and live.any():  # live groups have unit (unbiased) std
        torch.testing.assert_close(advantages[live].std(dim=1), torch.ones(int(live.sum()), dtype=rewards.dtype))
    assert 0.0 <= metrics["frac_reward_zero_std"] <= 1.0


@PROPERTY
@given(
    rewards=reward_groups(st.sampled_from([0.0, 1.0]) | finite_reward),
    scale=st.sampled_from(["group", "batch", "none"]),
    eps=st.sampled_from([0.0, 1e-6]),
)
def test_group_advantages_finite_and_dead_groups_zero(rewards: torch.Tensor, scale: str, eps: float):
    # any finite rewards, subnormal differences included, and eps=0: never inf/nan, dead groups exactly 0
    for dtype in (torch.float64, torch.float32):
        advantages, _ = group_advantages(rewards.to(dtype), scale, eps=eps)
        assert torch.isfinite(advantages).all()
        dead = ~dynamic_sampling_mask(rewards.to(dtype))
        assert (advantages[dead] == 0).all()


@PROPERTY
@given(rewards=reward_groups())
def test_process_with_one_step_equals_group_advantages(rewards: torch.Tensor):
    expected, _ = group_advantages(rewards, "group")
    actual = process_advantages(rewards[..., None], torch.ones(*rewards.shape, 1, dtype=torch.bool))
    torch.testing.assert_close(actual[..., 0], expected)


@PROPERTY
@given(rewards=reward_groups())
def test_step_with_one_step_equals_group_advantages(rewards: torch.Tensor):
    # "batch" differs on purpose: step_advantages divides by the std of the centred rewards-to-go (a raw std over
    # all steps would measure how rewards change along the episode), group_advantages by the raw reward std (TRL)
    for scale in ("group", "none"):
        expected, _ = group_advantages(rewards, scale)
        actual, _ = step_advantages(rewards[..., None], torch.ones(*rewards.shape, 1, dtype=torch.bool), scale)
        torch.testing.assert_close(actual[..., 0], expected)


@settings(max_examples=100, deadline=None)
@given(
    log_probs=st.lists(st.tuples(finite_reward, finite_reward), min_size=1, max_size=20),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_k3_is_non_negative(log_probs: list[tuple[float, float]], dtype: torch.dtype):
    log_prob = torch.tensor([pair[0] for pair in log_probs], dtype=dtype) / 10
    ref_log_prob = torch.tensor([pair[1] for pair in log_probs], dtype=dtype) / 10
    assert (kl_penalty(log_prob, ref_log_prob, "k3") >= 0).all()
    assert (kl_penalty(log_prob, ref_log_prob, "k2") >= 0).all()


@settings(max_examples=40, deadline=None)
@given(
    steps=st.integers(1, 6),
    rewards=st.lists(finite_reward, min_size=6, max_size=6),
    values=st.lists(finite_reward, min_size=7, max_size=7),
    gamma=st.floats(0.0, 1.0),
)
def test_gae_lambda_one_is_discounted_return(steps: int, rewards: list[float], values: list[float], gamma: float):
    # one env, no episode end, next_values consistent with values: A + V = sum_k gamma^k r_{t+k} + gamma^(T-t) V_T
    reward = torch.tensor(rewards[:steps], dtype=torch.float64)[:, None]
    value = torch.tensor(values[: steps + 1], dtype=torch.float64)[:, None]
    flags = torch.zeros(steps, 1, dtype=torch.bool)
    _, returns = gae(reward, value[:-1], value[1:], flags, flags, gamma, 1.0)
    expected = [
        sum(gamma**k * rewards[t + k] for k in range(steps - t)) + gamma ** (steps - t) * values[steps]
        for t in range(steps)
    ]
    torch.testing.assert_close(returns[:, 0], torch.tensor(expected, dtype=torch.float64), atol=1e-9, rtol=1e-9)


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 5),
    length=st.integers(1, 5),
    data=st.data(),
)
def test_grpo_equals_dapo_when_lengths_are_equal(batch: int, length: int, data: st.DataObject):
    values = data.draw(st.lists(finite_reward, min_size=batch * length, max_size=batch * length))
    per_element = torch.tensor(values, dtype=torch.float64).reshape(batch, length)
    mask = torch.ones(batch, length, dtype=torch.bool)
    grpo = aggregate_loss(per_element, mask, "grpo")
    torch.testing.assert_close(grpo, aggregate_loss(per_element, mask, "dapo"))
    torch.testing.assert_close(grpo, aggregate_loss(per_element, mask, "dr_grpo", max_length=length))

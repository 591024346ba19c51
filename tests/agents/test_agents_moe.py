"""Mixture-of-Experts layer: routing, sparsity, the Switch load-balancing loss by hand, and a small fit."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.layers import MLPTrunk
from agents.moe import MoEFeedForward, MoETrunk


def _moe(num_experts: int = 4, top_k: int = 2, in_dim: int = 3, out_dim: int = 2, hidden=(5,)) -> MoEFeedForward:
    torch.manual_seed(0)
    return MoEFeedForward(in_dim, out_dim, hidden, num_experts, top_k)


def test_gates_sum_to_one_and_keep_exactly_top_k() -> None:
    moe = _moe(num_experts=5, top_k=2)
    x = torch.randn(64, 3)
    route = moe.route(x)
    torch.testing.assert_close(route.probs.sum(-1), torch.ones(64))
    torch.testing.assert_close(route.gates.sum(-1), torch.ones(64))
    assert ((route.gates > 0).sum(-1) == 2).all()
    # The kept experts are the two most probable, with weights in the same ratio as their probabilities.
    top_two = route.probs.topk(2, dim=-1).indices.sort(-1).values
    kept = route.gates.nonzero()[:, 1].reshape(64, 2).sort(-1).values
    assert torch.equal(top_two, kept)
    chosen_probs = route.probs.gather(-1, top_two)
    torch.testing.assert_close(route.gates.gather(-1, top_two), chosen_probs / chosen_probs.sum(-1, keepdim=True))


def test_output_is_gate_weighted_sum_of_selected_experts() -> None:
    moe = _moe(num_experts=3, top_k=2, hidden=(4, 6))
    x = torch.randn(10, 3)
    out = moe(x)
    expected = torch.zeros(10, 2)
    for row in range(10):
        for expert in range(3):
            gate = out.gates[row, expert]
            if gate == 0:
                continue
            h = x[row]
            for layer in range(3):
                h = h @ moe.weights[layer][expert] + moe.biases[layer][expert, 0]
                if layer < 2:
                    h = torch.tanh(h)
            expected[row] += gate * h
    torch.testing.assert_close(out.output, expected)


def test_unselected_experts_get_no_gradient() -> None:
    moe = _moe(num_experts=4, top_k=1)
    x = torch.randn(3, 3)
    out = moe(x)
    out.output.sum().backward()
    used = set(out.gates.nonzero()[:, 1].tolist())
    for expert in range(4):
        grad_norm = moe.weights[0].grad[expert].abs().sum()
        assert (grad_norm > 0) == (expert in used)


@pytest.mark.parametrize("top_k", [1, 2])
def test_load_balancing_loss_matches_hand_computation(top_k: int) -> None:
    moe = MoEFeedForward(2, 1, (), num_experts=3, top_k=top_k)
    router_weight = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    router_bias = np.array([0.0, 0.5, 0.0])
    with torch.no_grad():
        moe.router.weight.copy_(torch.as_tensor(router_weight, dtype=torch.float32))
        moe.router.bias.copy_(torch.as_tensor(router_bias, dtype=torch.float32))
    x = np.array([[2.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [1.0, 0.2]])
    logits = x @ router_weight.T + router_bias
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    chosen = np.argsort(-probs, axis=1)[:, :top_k]
    counts = np.zeros(3)
    for row in chosen:
        counts[row] += 1
    fraction = counts / (len(x) * top_k)  # f_e: share of the B * top_k assignments
    mean_prob = probs.mean(axis=0)  # P_e
    expected_loss = 3 * np.sum(fraction * mean_prob)

    out = moe(torch.as_tensor(x, dtype=torch.float32))
    assert out.aux_loss.item() == pytest.approx(expected_loss, rel=1e-6)
    np.testing.assert_allclose(out.expert_load.numpy(), fraction, rtol=1e-6)
    assert out.expert_load.sum().item() == pytest.approx(1.0)
    # The loss trains the router through P_e; f_e carries no gradient.
    out.aux_loss.backward()
    assert moe.router.weight.grad.abs().sum() > 0


def test_balanced_routing_gives_loss_one() -> None:
    # Two experts, each input routed with certainty to a different one: f = P = (1/2, 1/2), loss = 2 * 1/2 = 1.
    moe = MoEFeedForward(1, 1, (), num_experts=2, top_k=1)
    with torch.no_grad():
        moe.router.weight.copy_(torch.tensor([[50.0], [-50.0]]))
        moe.router.bias.zero_()
    out = moe(torch.tensor([[1.0], [-1.0]]))
    assert out.aux_loss.item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(out.expert_load, torch.tensor([0.5, 0.5]))


def test_single_expert_trunk_equals_dense_trunk() -> None:
    torch.manual_seed(1)
    dense = MLPTrunk(4, (8, 6), "relu")
    moe = MoETrunk(4, (8, 6), "relu", num_experts=1, top_k=1)
    with torch.no_grad():
        linears = [layer for layer in dense.net if isinstance(layer, torch.nn.Linear)]
        for layer, (weight, bias) in zip(linears, zip(moe.moe.weights, moe.moe.biases, strict=True), strict=True):
            weight[0].copy_(layer.weight.T)
            bias[0, 0].copy_(layer.bias)
    x = torch.randn(7, 4)
    dense_out, moe_out = dense(x), moe(x)
    torch.testing.assert_close(moe_out.features, dense_out.features)
    assert moe_out.aux_loss.item() == pytest.approx(1.0)
    assert dense_out.aux_loss.item() == 0.0 and dense_out.expert_load is None


def test_moe_fits_a_toy_regression() -> None:
    torch.manual_seed(0)
    x = torch.rand(256, 2) * 4 - 2
    # A target with two regimes, the kind of function experts can split between them.
    y = torch.where(x[:, :1] > 0, torch.sin(3 * x[:, 1:]), 0.5 * x[:, 1:] ** 2 - 1)
    moe = MoEFeedForward(2, 1, (32,), num_experts=4, top_k=2)
    optimizer = torch.optim.Adam(moe.parameters(), lr=1e-2)
    initial = torch.mean((moe(x).output - y) ** 2).item()
    for _ in range(300):
        out = moe(x)
        loss = torch.mean((out.output - y) ** 2) + 0.01 * out.aux_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    out = moe(x)
    final = torch.mean((out.output - y) ** 2).item()
    assert final < 0.1 * initial, (initial, final)
    assert torch.isfinite(out.aux_loss)
    assert (out.expert_load > 0).sum() >= 2  # the load-balancing term keeps several experts in use


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_experts": 0, "top_k": 1}, "num_experts"),
        ({"num_experts": 2, "top_k": 3}, "top_k"),
        ({"num_experts": 2, "top_k": 0}, "top_k"),
        ({"num_experts": 2, "top_k": 1, "hidden": (0,)}, "hidden"),
        ({"num_experts": 2, "top_k": 1, "activation": "sigmoid"}, "sigmoid"),
    ],
)
def test_bad_arguments_raise(kwargs: dict, message: str) -> None:
    arguments = {"in_dim": 3, "out_dim": 2, "hidden": (4,), **kwargs}
    with pytest.raises(ValueError, match=message):
        MoEFeedForward(**arguments)


def test_wrong_input_shape_raises() -> None:
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        _moe()(torch.randn(4, 5))

"""Mixture-of-Experts feed-forward layer with top-k routing and the Switch-Transformer load-balancing loss.

References:
    Shazeer et al. 2017, "Outrageously Large Neural Networks: The Sparsely-Gated Mixture-of-Experts Layer"
    (top-k gating). Fedus, Zoph and Shazeer 2022, "Switch Transformers: Scaling to Trillion Parameter Models with
    Simple and Efficient Sparsity", JMLR 23, eq. (4)-(6) (auxiliary load-balancing loss ``E * sum_e f_e * P_e``).
    Jiang et al. 2024, "Mixtral of Experts" (softmax over the selected experts, i.e. renormalised top-k weights).

Departures, all deliberate at policy scale:
    1. Every expert runs on every input (one batched matmul per layer over stacked expert weights) and the sparse
       gates zero out the unselected ones. The output and the gradients are exactly those of top-k dispatch; only
       the compute is dense, which at E <= 16 experts of width <= 256 is faster than gather/scatter dispatch.
    2. No expert capacity and no token dropping: nothing overflows when every expert sees the whole batch.
    3. For ``top_k > 1`` the dispatch fraction ``f_e`` counts all ``B * top_k`` assignments, so ``sum_e f_e = 1``
       and the loss is 1 under perfectly uniform routing for any ``top_k``, as in the top-1 paper setting.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.layers import HIDDEN_GAIN, TrunkOutput, activation_class

__all__ = ["MoEFeedForward", "MoEOutput", "MoETrunk", "RouterOutput"]

# Small router gain so routing starts close to uniform (every expert gets traffic) yet input-dependent.
ROUTER_GAIN = 0.01


class RouterOutput(NamedTuple):
    """Routing decision for a batch.

    Attributes:
        probs: ``(B, E)`` softmax router probabilities (rows sum to 1).
        gates: ``(B, E)`` combine weights: the top-k probabilities renormalised to sum to 1, zero elsewhere.
        indices: ``(B, top_k)`` selected experts, best first.
    """

    probs: Tensor
    gates: Tensor
    indices: Tensor


class MoEOutput(NamedTuple):
    """Result of :meth:`MoEFeedForward.forward`.

    Attributes:
        output: ``(B, out_dim)`` gate-weighted sum of the selected experts' outputs.
        aux_loss: scalar Switch load-balancing loss ``E * sum_e f_e * P_e`` (1 when routing is uniform).
        expert_load: ``(E,)`` fraction of the ``B * top_k`` routing assignments sent to each expert (sums to 1).
        gates: ``(B, E)`` combine weights, for inspection and tests.
    """

    output: Tensor
    aux_loss: Tensor
    expert_load: Tensor
    gates: Tensor


class MoEFeedForward(nn.Module):
    """Top-k routed mixture of small MLP experts: ``(B, in_dim) -> (B, out_dim)``.

    Each expert is ``Linear -> act -> ... -> Linear`` through ``hidden`` (no activation after the last layer, as
    in a transformer feed-forward block). The load-balancing loss is returned by :meth:`forward`, never stored.

    Args:
        in_dim: input width.
        out_dim: output width.
        hidden: hidden width(s) of each expert; an int or a sequence (empty = linear experts).
        num_experts: number of experts ``E`` (>= 1).
        top_k: experts used per input (1 <= top_k <= E).
        activation: ``"tanh"``, ``"relu"`` or ``"gelu"``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int | Sequence[int],
        num_experts: int,
        top_k: int,
        activation: str = "tanh",
    ) -> None:
        super().__init__()
        hidden_sizes = (hidden,) if isinstance(hidden, int) else tuple(hidden)
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("num_experts", num_experts)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"MoEFeedForward {name} must be a positive int, got {value!r}")
        if any(not isinstance(size, int) or size < 1 for size in hidden_sizes):
            raise ValueError(f"MoEFeedForward hidden sizes must be positive ints, got {hidden!r}")
        if not isinstance(top_k, int) or not 1 <= top_k <= num_experts:
            raise ValueError(f"MoEFeedForward top_k must be an int in [1, num_experts={num_experts}], got {top_k!r}")
        self.in_dim, self.out_dim = in_dim, out_dim
        self.num_experts, self.top_k = num_experts, top_k
        self.activation = activation_class(activation)()
        self.router = nn.Linear(in_dim, num_experts)
        sizes = (in_dim, *hidden_sizes, out_dim)
        # Stacked expert weights (E, fan_in, fan_out) so one baddbmm runs a layer of every expert at once.
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(num_experts, fan_in, fan_out))
            for fan_in, fan_out in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(num_experts, 1, fan_out)) for fan_out in sizes[1:])
        self.reset_parameters(orthogonal=False)

    def reset_parameters(self, orthogonal: bool, gain: float = HIDDEN_GAIN) -> None:
        """Re-initialise experts and router.

        Args:
            orthogonal: orthogonal expert weights with ``gain`` (router gain :data:`ROUTER_GAIN`) and zero biases;
                otherwise PyTorch's ``nn.Linear`` default (uniform in ``+-1/sqrt(fan_in)``) for everything.
            gain: expert weight gain when ``orthogonal``.
        """
        for weight, bias in zip(self.weights, self.biases, strict=True):
            fan_in = weight.shape[1]
            for expert in range(self.num_experts):
                if orthogonal:
                    # (fan_in, fan_out) is the transpose of nn.Linear's layout; orthogonality is the same.
                    nn.init.orthogonal_(weight.data[expert], gain=gain)
                else:
                    bound = 1.0 / math.sqrt(fan_in)
                    nn.init.uniform_(weight.data[expert], -bound, bound)
            if orthogonal:
                nn.init.zeros_(bias)
            else:
                bound = 1.0 / math.sqrt(fan_in)
                nn.init.uniform_(bias, -bound, bound)
        if orthogonal:
            nn.init.orthogonal_(self.router.weight, gain=ROUTER_GAIN)
            nn.init.zeros_(self.router.bias)
        else:
            self.router.reset_parameters()

    def route(self, x: Tensor) -> RouterOutput:
        """Router probabilities, renormalised top-k gates and selected indices for ``x`` of shape ``(B, in_dim)``."""
        probs = torch.softmax(self.router(x), dim=-1)
        top_probs, indices = probs.topk(self.top_k, dim=-1)
        weights = top_probs / top_probs.sum(dim=-1, keepdim=True)
        gates = torch.zeros_like(probs).scatter(-1, indices, weights)
        return RouterOutput(probs, gates, indices)

    def load_balancing(self, route: RouterOutput) -> tuple[Tensor, Tensor]:
        """Switch-Transformer auxiliary loss and expert load for one routing decision.

        ``f_e`` (expert load, no gradient) is the fraction of the ``B * top_k`` assignments sent to expert ``e``;
        ``P_e`` is the mean router probability of ``e`` over the batch (differentiable). Loss ``E * sum_e f_e P_e``.

        Returns:
            ``(aux_loss, expert_load)``: a scalar and an ``(E,)`` tensor summing to 1.
        """
        assignments = F.one_hot(route.indices, self.num_experts).to(route.probs.dtype)  # (B, k, E)
        expert_load = assignments.sum(dim=(0, 1)) / assignments.shape[0] / self.top_k
        mean_probs = route.probs.mean(dim=0)
        aux_loss = self.num_experts * torch.sum(expert_load * mean_probs)
        return aux_loss, expert_load

    def experts(self, x: Tensor) -> Tensor:
        """Every expert applied to ``x`` of shape ``(B, in_dim)``: returns ``(E, B, out_dim)``."""
        h = x.unsqueeze(0).expand(self.num_experts, -1, -1)
        last = len(self.weights) - 1
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(bias, h, weight)
            if layer < last:
                h = self.activation(h)
        return h

    def forward(self, x: Tensor) -> MoEOutput:
        """Route ``x`` ``(B, in_dim)`` to its top-k experts and mix their outputs; see :class:`MoEOutput`."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"MoEFeedForward expects input of shape (B, {self.in_dim}), got {tuple(x.shape)}")
        route = self.route(x)
        output = torch.einsum("be,ebo->bo", route.gates, self.experts(x))
        aux_loss, expert_load = self.load_balancing(route)
        return MoEOutput(output, aux_loss, expert_load, route.gates)


class MoETrunk(nn.Module):
    """Drop-in Mixture-of-Experts replacement for :class:`agents.layers.MLPTrunk`.

    Each expert has the dense trunk's shape (``in_dim -> hidden_sizes[:-1] -> hidden_sizes[-1]``) and the mixed
    output goes through the same activation, so with one expert it computes exactly what the dense trunk does.
    """

    def __init__(self, in_dim: int, hidden_sizes: Sequence[int], activation: str, num_experts: int, top_k: int):
        super().__init__()
        if not hidden_sizes:
            raise ValueError("MoETrunk needs at least one hidden size")
        self.moe = MoEFeedForward(in_dim, hidden_sizes[-1], hidden_sizes[:-1], num_experts, top_k, activation)
        self.activation = activation_class(activation)()
        self.out_dim = hidden_sizes[-1]

    def forward(self, features: Tensor) -> TrunkOutput:
        """Features ``(B, F)`` -> :class:`TrunkOutput` with ``(B, H)`` features, aux loss and ``(E,)`` load."""
        out = self.moe(features)
        return TrunkOutput(self.activation(out.output), out.aux_loss, out.expert_load)

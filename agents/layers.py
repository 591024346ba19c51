"""Small building blocks shared by encoders, trunks and heads: activations, dense MLPs and orthogonal init."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

__all__ = [
    "ACTIVATIONS",
    "HIDDEN_GAIN",
    "MLPTrunk",
    "TrunkOutput",
    "activation_class",
    "build_mlp",
    "orthogonal_init_",
]

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU}

# Gain for hidden layers in the CleanRL / SB3 PPO recipe (Huang et al. 2022, "The 37 implementation details of
# PPO", detail 2); the policy head uses 0.01 and the value head 1.0.
HIDDEN_GAIN = math.sqrt(2.0)


def activation_class(name: str) -> type[nn.Module]:
    """The ``nn.Module`` class for an activation name.

    Raises:
        ValueError: if ``name`` is not one of :data:`ACTIVATIONS`.
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; accepted: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def build_mlp(in_dim: int, hidden_sizes: Sequence[int], activation: str) -> nn.Sequential:
    """``Linear -> activation`` for each hidden size: maps ``(B, in_dim)`` to ``(B, hidden_sizes[-1])``."""
    layers: list[nn.Module] = []
    width = in_dim
    for size in hidden_sizes:
        layers += [nn.Linear(width, size), activation_class(activation)()]
        width = size
    return nn.Sequential(*layers)


def orthogonal_init_(module: nn.Module, gain: float) -> None:
    """Orthogonal weights with ``gain`` and zero biases for every Linear / Conv layer inside ``module``."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class TrunkOutput(NamedTuple):
    """What a trunk returns: features ``(B, H)``, its auxiliary loss (scalar, 0 for dense) and expert load.

    ``expert_load`` is ``(E,)`` for a Mixture-of-Experts trunk and ``None`` for a dense one.
    """

    features: Tensor
    aux_loss: Tensor
    expert_load: Tensor | None


class MLPTrunk(nn.Module):
    """Dense feature trunk: an MLP from encoder features ``(B, F)`` to ``(B, hidden_sizes[-1])``."""

    def __init__(self, in_dim: int, hidden_sizes: Sequence[int], activation: str) -> None:
        super().__init__()
        self.net = build_mlp(in_dim, hidden_sizes, activation)
        self.out_dim = hidden_sizes[-1] if hidden_sizes else in_dim

    def forward(self, features: Tensor) -> TrunkOutput:
        """Features ``(B, F)`` -> :class:`TrunkOutput` with ``(B, H)`` features and a zero auxiliary loss."""
        out = self.net(features)
        return TrunkOutput(out, torch.zeros((), device=out.device, dtype=out.dtype), None)

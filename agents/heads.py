"""Action heads: trunk features ``(B, H)`` -> a distribution over actions of the action space.

Each head turns features into a ``torch.distributions.Distribution`` over its *internal* representation (indices
from 0, floats for Bernoulli), and converts between that and environment actions (``to_env`` / ``from_env``), so
``Discrete(n, start)`` with a non-zero start and ``MultiBinary`` work without special cases in the policy.

| action space      | head                          | actions returned by ``act``      |
|-------------------|-------------------------------|----------------------------------|
| ``Discrete``      | :class:`CategoricalHead`      | ``(B,)`` long                    |
| ``Box``           | :class:`GaussianHead`         | ``(B, *shape)`` float, unclipped |
| ``MultiDiscrete`` | :class:`MultiCategoricalHead` | ``(B, *shape)`` long             |
| ``MultiBinary``   | :class:`BernoulliHead`        | ``(B, *shape)`` long (0/1)       |
"""

from __future__ import annotations

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Bernoulli, Categorical, Distribution, Independent, Normal, constraints

__all__ = [
    "BernoulliHead",
    "CategoricalHead",
    "GaussianHead",
    "MultiCategorical",
    "MultiCategoricalHead",
    "make_head",
]

# Gain of the last policy layer: near-zero logits / means, so the initial policy is close to uniform / centred.
POLICY_GAIN = 0.01


class MultiCategorical(Distribution):
    """Independent categoricals with different sizes: batch ``(B,)``, event ``(K,)`` (one index per component).

    Args:
        logits: ``(B, sum(nvec))`` unnormalised log-probabilities, components side by side.
        nvec: number of choices of each of the ``K`` components.
    """

    arg_constraints: dict[str, constraints.Constraint] = {}

    def __init__(self, logits: Tensor, nvec: list[int]) -> None:
        self.components = [Categorical(logits=chunk, validate_args=False) for chunk in logits.split(nvec, dim=-1)]
        super().__init__(logits.shape[:-1], torch.Size([len(nvec)]), validate_args=False)

    def sample(self, sample_shape: torch.Size = torch.Size()) -> Tensor:  # noqa: B008 (torch's own signature)
        """``(*sample_shape, B, K)`` indices."""
        return torch.stack([component.sample(sample_shape) for component in self.components], dim=-1)

    def log_prob(self, value: Tensor) -> Tensor:
        """Sum of component log-probabilities of ``value`` ``(..., B, K)`` -> ``(..., B)``."""
        return sum(component.log_prob(value[..., k]) for k, component in enumerate(self.components))

    def entropy(self) -> Tensor:
        """Sum of component entropies ``(B,)``."""
        return sum(component.entropy() for component in self.components)

    @property
    def mode(self) -> Tensor:
        """Most likely index of each component ``(B, K)``."""
        return torch.stack([component.logits.argmax(dim=-1) for component in self.components], dim=-1)


class CategoricalHead(nn.Module):
    """``Discrete(n, start)``: linear logits, ``Categorical`` over indices ``0..n-1``; env action = index + start."""

    def __init__(self, in_dim: int, space: spaces.Discrete) -> None:
        super().__init__()
        self.logits = nn.Linear(in_dim, int(space.n))
        self.start = int(space.start)

    def forward(self, features: Tensor) -> Categorical:
        """``(B, H)`` -> ``Categorical`` with batch shape ``(B,)``."""
        return Categorical(logits=self.logits(features), validate_args=False)

    def deterministic(self, distribution: Categorical) -> Tensor:
        """Argmax index ``(B,)``."""
        return distribution.logits.argmax(dim=-1)

    def to_env(self, sample: Tensor) -> Tensor:
        """Indices ``(B,)`` -> env actions ``(B,)`` long."""
        return sample + self.start

    def from_env(self, actions: Tensor) -> Tensor:
        """Env actions ``(B,)`` (or ``(B, 1)``) -> indices ``(B,)`` long."""
        return actions.reshape(actions.shape[0]).long() - self.start


class GaussianHead(nn.Module):
    """``Box``: diagonal Gaussian with a linear mean and a state-independent log-std parameter ``(A,)``.

    Samples are unclipped; their log-probabilities are of the raw sample. Clipping to the Box is the job of
    :meth:`agents.policy.ActorCritic.predict` (and of the trainer before ``env.step``).
    """

    def __init__(self, in_dim: int, space: spaces.Box, log_std_init: float) -> None:
        super().__init__()
        self.shape = tuple(space.shape)
        action_dim = int(np.prod(self.shape, dtype=np.int64))
        self.mean = nn.Linear(in_dim, action_dim)
        self.log_std = nn.Parameter(torch.full((action_dim,), float(log_std_init)))

    def forward(self, features: Tensor) -> Independent:
        """``(B, H)`` -> ``Independent(Normal)`` with batch ``(B,)`` and event ``shape``."""
        mean = self.mean(features).reshape(features.shape[0], *self.shape)
        std = self.log_std.exp().reshape(self.shape).expand_as(mean)
        return Independent(Normal(mean, std, validate_args=False), len(self.shape), validate_args=False)

    def deterministic(self, distribution: Independent) -> Tensor:
        """The mean ``(B, *shape)``."""
        return distribution.mean

    def to_env(self, sample: Tensor) -> Tensor:
        """Identity (unclipped)."""
        return sample

    def from_env(self, actions: Tensor) -> Tensor:
        """Env actions -> ``(B, *shape)`` float."""
        return actions.reshape(actions.shape[0], *self.shape).float()


class MultiCategoricalHead(nn.Module):
    """``MultiDiscrete(nvec, start)``: one categorical per component, from one linear layer."""

    def __init__(self, in_dim: int, space: spaces.MultiDiscrete) -> None:
        super().__init__()
        self.shape = tuple(space.shape)
        self.nvec = [int(n) for n in np.asarray(space.nvec).reshape(-1)]
        self.logits = nn.Linear(in_dim, sum(self.nvec))
        self.register_buffer("start", torch.as_tensor(np.asarray(space.start).reshape(-1)), persistent=False)

    def forward(self, features: Tensor) -> MultiCategorical:
        """``(B, H)`` -> :class:`MultiCategorical` with batch ``(B,)`` and event ``(K,)``."""
        return MultiCategorical(self.logits(features), self.nvec)

    def deterministic(self, distribution: MultiCategorical) -> Tensor:
        """Argmax of each component ``(B, K)``."""
        return distribution.mode

    def to_env(self, sample: Tensor) -> Tensor:
        """Indices ``(B, K)`` -> env actions ``(B, *shape)`` long."""
        return (sample + self.start).reshape(sample.shape[0], *self.shape)

    def from_env(self, actions: Tensor) -> Tensor:
        """Env actions ``(B, *shape)`` -> indices ``(B, K)`` long."""
        return actions.reshape(actions.shape[0], -1).long() - self.start


class BernoulliHead(nn.Module):
    """``MultiBinary``: independent Bernoulli per element, from linear logits."""

    def __init__(self, in_dim: int, space: spaces.MultiBinary) -> None:
        super().__init__()
        self.shape = tuple(space.shape)
        self.logits = nn.Linear(in_dim, int(np.prod(self.shape, dtype=np.int64)))

    def forward(self, features: Tensor) -> Independent:
        """``(B, H)`` -> ``Independent(Bernoulli)`` with batch ``(B,)`` and event ``shape``."""
        logits = self.logits(features).reshape(features.shape[0], *self.shape)
        return Independent(Bernoulli(logits=logits, validate_args=False), len(self.shape), validate_args=False)

    def deterministic(self, distribution: Independent) -> Tensor:
        """1 where the logit is positive. (``Bernoulli.mode`` is NaN at p = 0.5, which a zero input can hit.)"""
        return (distribution.base_dist.logits > 0).to(distribution.base_dist.logits.dtype)

    def to_env(self, sample: Tensor) -> Tensor:
        """0./1. floats -> long."""
        return sample.long()

    def from_env(self, actions: Tensor) -> Tensor:
        """Env actions ``(B, *shape)`` -> floats for ``Bernoulli.log_prob``."""
        return actions.reshape(actions.shape[0], *self.shape).float()


ActionHead = CategoricalHead | GaussianHead | MultiCategoricalHead | BernoulliHead


def make_head(in_dim: int, space: spaces.Space, log_std_init: float) -> ActionHead:
    """The head for an action space.

    Raises:
        TypeError: for an action space other than Discrete, Box, MultiDiscrete or MultiBinary.
    """
    if isinstance(space, spaces.Discrete):
        return CategoricalHead(in_dim, space)
    if isinstance(space, spaces.Box):
        if not np.issubdtype(space.dtype, np.floating):
            raise TypeError(f"Box action space {space} must have a floating dtype for a Gaussian head")
        return GaussianHead(in_dim, space, log_std_init)
    if isinstance(space, spaces.MultiDiscrete):
        return MultiCategoricalHead(in_dim, space)
    if isinstance(space, spaces.MultiBinary):
        return BernoulliHead(in_dim, space)
    raise TypeError(f"no action head for action space {space}; supported: Discrete, Box, MultiDiscrete, MultiBinary")

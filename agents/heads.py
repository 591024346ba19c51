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


class _DistributionHead(nn.Module):
    """``act`` / ``evaluate`` through the head's distribution (the heads below define ``forward``,
    ``deterministic``, ``to_env`` and ``from_env``)."""

    def act(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """``(B, H)`` features -> env actions and the log-probabilities ``(B,)`` of the internal sample."""
        distribution = self(features)
        sample = self.deterministic(distribution) if deterministic else distribution.sample()
        return self.to_env(sample), distribution.log_prob(sample)

    def evaluate(self, features: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies ``(B,)`` of env ``actions`` under the distribution of ``features``."""
        distribution = self(features)
        return distribution.log_prob(self.from_env(actions)), distribution.entropy()


def _sample_index(probs: Tensor) -> Tensor:
    """One index per row of ``probs`` ``(B, n)``, drawn with exactly the random numbers and arithmetic of
    ``torch.multinomial(probs, 1, replacement=True)``.

    For a single draw, ``torch.multinomial`` on CPU is the exponential race ``argmax(probs / Exp(1))`` (the
    Gumbel-max trick in another form; pytorch/pytorch#11931), preceded by input validation that costs more than
    the draw at this size. Doing the race here keeps every seeded run's actions bit-identical to sampling from
    ``Categorical`` while skipping that validation; the one failure it reported, NaN probabilities, is checked
    explicitly (``-inf`` logits, i.e. zero probabilities, remain valid and are never drawn).
    """
    if bool(torch.isnan(probs).any()):
        raise ValueError(
            "the policy produced NaN action probabilities (its logits are NaN or infinite); the weights have "
            "diverged: lower the learning rate or check the observations and rewards for NaN"
        )
    return probs.div(torch.empty_like(probs).exponential_()).argmax(dim=-1)


class CategoricalHead(_DistributionHead):
    """``Discrete(n, start)``: linear logits, ``Categorical`` over indices ``0..n-1``; env action = index + start.

    :meth:`act` repeats ``torch.distributions.Categorical``'s arithmetic op for op (normalised logits
    ``log p = logits - logsumexp``, ``p = softmax(log p)``, the draw of ``torch.multinomial``), so its actions and
    log-probabilities are bit-identical to sampling the distribution, without building it. :meth:`evaluate` gives
    the same log-probabilities; its entropy ``-sum(clamp(log p) * p)`` takes ``p = exp(log p)`` where
    ``Categorical`` takes ``softmax(log p)``: equal up to float rounding, and on CPU a softmax over a last axis of a
    few actions costs about 0.6 ms forward and as much backward on an update minibatch of 4k steps, ``exp`` 10 us.
    """

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

    def _log_probs(self, features: Tensor) -> Tensor:
        """``(B, H)`` -> normalised logits ``(B, n)``, as ``Categorical(logits=...).logits``."""
        logits = self.logits(features)
        return logits - logits.logsumexp(dim=-1, keepdim=True)

    def act(self, features: Tensor, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """``(B, H)`` -> env actions ``(B,)`` long and their log-probabilities ``(B,)``."""
        log_probs = self._log_probs(features)
        index = log_probs.argmax(dim=-1) if deterministic else _sample_index(torch.softmax(log_probs, dim=-1))
        actions = index + self.start if self.start else index
        return actions, log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)

    def evaluate(self, features: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """Log-probabilities and entropies ``(B,)`` of env ``actions`` ``(B,)`` (or ``(B, 1)``)."""
        log_probs = self._log_probs(features)
        index = self.from_env(actions)
        log_prob = log_probs.gather(-1, index.unsqueeze(-1)).squeeze(-1)
        finite = torch.clamp(log_probs, min=torch.finfo(log_probs.dtype).min)  # 0 * -inf would be NaN
        entropy = -(finite * log_probs.exp()).sum(-1)
        return log_prob, entropy


class GaussianHead(_DistributionHead):
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


class MultiCategoricalHead(_DistributionHead):
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


class BernoulliHead(_DistributionHead):
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

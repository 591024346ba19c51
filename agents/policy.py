"""Policies built from Gymnasium spaces: :class:`PolicySpec`, :class:`ActorCritic` and :func:`make_policy`.

One class serves every feed-forward policy. It is a composition of an encoder chosen from the observation space
(:mod:`agents.encoders`), a trunk (a dense MLP, or :class:`agents.moe.MoETrunk` when ``num_experts > 0``), an
action head chosen from the action space (:mod:`agents.heads`) and, for PPO only, a value head. A critic-free
(GRPO) policy has no value parameters at all.

Parameter names are the same with and without a critic (``encoder.*``, ``trunk.*``, ``policy_head.*``; the critic
adds ``value_head.*`` and, without a shared trunk, ``critic_encoder.*`` / ``critic_trunk.*``), so actor weights
load into an actor-critic with ``load_state_dict(..., strict=False)``.

Token sequences can instead get a causal transformer with a KV cache (``PolicySpec(architecture="transformer")``,
:class:`agents.transformer.TransformerPolicy`), with the same public methods; :func:`make_policy` builds either.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
from gymnasium import spaces
from torch import Tensor, nn
from torch.distributions import Distribution

from agents.encoders import make_encoder, obs_to_tensor
from agents.heads import POLICY_GAIN, GaussianHead, make_head
from agents.layers import ACTIVATIONS, HIDDEN_GAIN, MLPTrunk, TrunkOutput, orthogonal_init_
from agents.moe import MoEFeedForward, MoETrunk

if TYPE_CHECKING:
    from agents.transformer import TransformerPolicy

__all__ = ["ActorCritic", "Observation", "Policy", "PolicySpec", "make_policy"]

Observation = Tensor | dict[str, Tensor]
"""A batch of observations as the forward methods take it: ``(B, *shape)``, or a dict of those for Dict spaces."""

VALUE_GAIN = 1.0
#: accepted values of ``PolicySpec.architecture``
ARCHITECTURES = ("auto", "mlp", "transformer")


def _option(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:  # noqa: A002 (argparse's word)
    """A dataclass field with its ``--help`` text in ``metadata["help"]`` (the convention of ``rlopt.config``)."""
    metadata: dict[str, Any] = {"help": help}
    if choices is not None:
        metadata["choices"] = choices
    return field(default=default, metadata=metadata)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass
class PolicySpec:
    """Everything that determines a policy's architecture; JSON-friendly, so a checkpoint can rebuild it.

    ``make_policy(spec, observation_space, action_space)`` with the same spec and spaces builds a module with the
    same parameter names and shapes. Invalid values raise ``ValueError`` when the spec is built.
    """

    hidden_sizes: tuple[int, ...] = _option((64, 64), "Hidden layer sizes of the trunk MLP (and of each MoE expert).")
    activation: str = _option("tanh", "Activation of the trunk, experts and grid convolutions.", tuple(ACTIVATIONS))
    value_head: bool = _option(False, "Add a critic (PPO); False leaves the policy without any value parameters.")
    shared_trunk: bool = _option(False, "Actor and critic share encoder and trunk (needs value_head=True).")
    log_std_init: float = _option(0.0, "Initial state-independent log standard deviation of Gaussian (Box) actions.")
    orthogonal_init: bool = _option(True, "Orthogonal init: gain sqrt(2) hidden, 0.01 policy head, 1 value head.")
    embedding_dim: int = _option(16, "Embedding width for token observations and for grid cell codes.")
    num_experts: int = _option(0, "Mixture-of-Experts experts in the trunk; 0 keeps a dense MLP trunk.")
    top_k: int = _option(2, "MoE: experts used per input (1 <= top_k <= num_experts; ignored when num_experts=0).")
    conv_channels: tuple[int, ...] = _option((16, 32), "Output channels of the 2x2 convolutions of the grid encoder.")
    architecture: str = _option(
        "auto",
        "Network: auto (picked from the spaces: MLP, grid conv net, flattened-token MLP), mlp (every observation "
        "flattened as numbers, like stable-baselines3's MlpPolicy) or transformer (causal transformer with a KV "
        "cache, for 1-D integer token observations and Discrete actions).",
        ARCHITECTURES,
    )
    num_layers: int = _option(2, "Transformer blocks (architecture=transformer).")
    num_heads: int = _option(4, "Attention heads per transformer block; must divide model_dim.")
    model_dim: int = _option(128, "Transformer width (embeddings and residual stream).")
    context_length: int = _option(
        0,
        "Transformer positions; 0 = the observation length. Set it to the longest observation to reuse one model "
        "across env lengths (e.g. math levels).",
    )
    temperature: float = _option(1.0, "Sampling temperature of the transformer's next-token distribution (> 0).")
    top_p: float = _option(
        1.0,
        "Nucleus sampling for the transformer: sample from the smallest token set holding "
        "this much probability, in (0, 1]; 1 = every token.",
    )

    def __post_init__(self) -> None:
        # Values are validated, then normalised to plain Python types (tuples, int, float, bool) so that
        # to_dict() is JSON-serialisable even when the spec was built from numpy scalars or JSON lists.
        for name in ("hidden_sizes", "conv_channels"):
            value = getattr(self, name)
            if (
                not isinstance(value, (tuple, list))
                or not value
                or not all(_is_int(size) and size > 0 for size in value)
            ):
                raise ValueError(f"PolicySpec.{name}={value!r} must be a non-empty tuple of positive ints")
            setattr(self, name, tuple(int(size) for size in value))
        if self.activation not in ACTIVATIONS:
            raise ValueError(
                f"PolicySpec.activation={self.activation!r} is not accepted; choose one of {tuple(ACTIVATIONS)}"
            )
        for name in ("value_head", "shared_trunk", "orthogonal_init"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ValueError(f"PolicySpec.{name}={getattr(self, name)!r} must be True or False")
            setattr(self, name, bool(getattr(self, name)))
        if self.shared_trunk and not self.value_head:
            raise ValueError("PolicySpec.shared_trunk=True needs value_head=True (there is no critic to share with)")
        log_std_init = self.log_std_init
        if isinstance(log_std_init, (bool, np.bool_)) or not isinstance(log_std_init, (int, float, np.number)):
            raise ValueError(f"PolicySpec.log_std_init={log_std_init!r} must be a finite number")
        if not math.isfinite(log_std_init):
            raise ValueError(f"PolicySpec.log_std_init={log_std_init!r} must be a finite number")
        self.log_std_init = float(log_std_init)
        if not _is_int(self.embedding_dim) or self.embedding_dim < 1:
            raise ValueError(f"PolicySpec.embedding_dim={self.embedding_dim!r} must be a positive int")
        if not _is_int(self.num_experts) or self.num_experts < 0:
            raise ValueError(f"PolicySpec.num_experts={self.num_experts!r} must be an int >= 0 (0 = dense MLP)")
        if not _is_int(self.top_k) or self.top_k < 1:
            raise ValueError(f"PolicySpec.top_k={self.top_k!r} must be a positive int")
        if self.num_experts > 0 and self.top_k > self.num_experts:
            raise ValueError(
                f"PolicySpec.top_k={self.top_k} exceeds num_experts={self.num_experts}; choose top_k in "
                f"[1, {self.num_experts}]"
            )
        self.embedding_dim, self.num_experts, self.top_k = (
            int(self.embedding_dim),
            int(self.num_experts),
            int(self.top_k),
        )
        self._check_transformer_fields()

    def _check_transformer_fields(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(
                f"PolicySpec.architecture={self.architecture!r} is not accepted; choose one of {ARCHITECTURES}"
            )
        for name in ("num_layers", "num_heads", "model_dim"):
            if not _is_int(getattr(self, name)) or getattr(self, name) < 1:
                raise ValueError(f"PolicySpec.{name}={getattr(self, name)!r} must be a positive int")
            setattr(self, name, int(getattr(self, name)))
        if self.model_dim % self.num_heads:
            raise ValueError(
                f"PolicySpec.model_dim={self.model_dim} is not divisible by num_heads={self.num_heads}; "
                "choose model_dim as a multiple of num_heads"
            )
        if not _is_int(self.context_length) or self.context_length < 0:
            raise ValueError(
                f"PolicySpec.context_length={self.context_length!r} must be an int >= 0 (0 = the observation length)"
            )
        self.context_length = int(self.context_length)
        for name, high in (("temperature", math.inf), ("top_p", 1.0)):
            value = getattr(self, name)
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"PolicySpec.{name}={value!r} must be a number")
            if not (0.0 < value <= high and math.isfinite(value)):
                accepted = "(0, 1]" if name == "top_p" else "a finite number > 0"
                raise ValueError(f"PolicySpec.{name}={value!r} is outside the accepted range {accepted}")
            setattr(self, name, float(value))
        if self.architecture != "transformer" and (self.temperature != 1.0 or self.top_p != 1.0):
            raise ValueError(
                f"PolicySpec temperature={self.temperature}, top_p={self.top_p}: sampling settings apply to "
                "architecture='transformer' only; leave them at 1.0 or set architecture='transformer'"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of every field (tuples as lists)."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PolicySpec:
        """Rebuild from :meth:`to_dict` output (or parsed JSON); unknown keys raise with the list of known ones."""
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown PolicySpec fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)


@runtime_checkable
class Policy(Protocol):
    """What trainers and evaluators need from a policy (implemented by :class:`ActorCritic` and
    :class:`agents.transformer.TransformerPolicy`)."""

    has_value: bool

    def act(self, observation: Observation, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Actions ``(B,)`` / ``(B, *A)`` and their log-probabilities ``(B,)``; greedy when ``deterministic``."""
        ...

    def evaluate_actions(self, observation: Observation, actions: Tensor) -> dict[str, Tensor]:
        """``log_prob`` ``(B,)``, ``entropy`` ``(B,)``, ``aux_loss`` (scalar), ``value`` ``(B,)`` if a critic,
        ``expert_load`` ``(E,)`` if MoE. A policy whose class sets ``accepts_shared_rows = True`` also takes
        ``rows=`` (distinct observations, one index per action; see :meth:`ActorCritic.evaluate_actions`)."""
        ...

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """stable-baselines3-style numpy prediction for one observation or a batch."""
        ...


def _make_trunk(in_dim: int, spec: PolicySpec, moe: bool) -> MLPTrunk | MoETrunk:
    if moe:
        return MoETrunk(in_dim, spec.hidden_sizes, spec.activation, spec.num_experts, spec.top_k)
    return MLPTrunk(in_dim, spec.hidden_sizes, spec.activation)


class ActorCritic(nn.Module):
    """Encoder -> trunk -> action head, plus an optional value head; see the module docstring.

    Args:
        spec: the architecture.
        observation_space: single-environment observation space.
        action_space: single-environment action space.

    Attributes:
        has_value: whether the policy has a critic (``spec.value_head``).
        is_moe: whether the actor trunk is a Mixture of Experts (``spec.num_experts > 0``).
    """

    def __init__(self, spec: PolicySpec, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        super().__init__()
        self.spec = spec
        self.observation_space = observation_space
        self.action_space = action_space
        self.has_value = spec.value_head
        self.is_moe = spec.num_experts > 0
        flat = spec.architecture == "mlp"
        self.encoder = make_encoder(
            observation_space, spec.embedding_dim, spec.conv_channels, spec.activation, flat=flat
        )
        self.trunk = _make_trunk(self.encoder.out_dim, spec, self.is_moe)
        self.policy_head = make_head(self.trunk.out_dim, action_space, spec.log_std_init)
        if self.has_value and not spec.shared_trunk:
            # A separate critic is a dense network of its own: MoE is a policy-side choice, and a dense critic
            # keeps the value loss from shaping the router.
            self.critic_encoder = make_encoder(
                observation_space, spec.embedding_dim, spec.conv_channels, spec.activation, flat=flat
            )
            self.critic_trunk = MLPTrunk(self.critic_encoder.out_dim, spec.hidden_sizes, spec.activation)
        if self.has_value:
            self.value_head = nn.Linear(self.trunk.out_dim, 1)
        if spec.orthogonal_init:
            self._orthogonal_init()

    def _orthogonal_init(self) -> None:
        # CleanRL / SB3 PPO initialisation (Huang et al. 2022, "The 37 implementation details of PPO", detail 2).
        orthogonal_init_(self, HIDDEN_GAIN)
        for module in self.modules():
            if isinstance(module, MoEFeedForward):
                module.reset_parameters(orthogonal=True, gain=HIDDEN_GAIN)
        orthogonal_init_(self.policy_head, POLICY_GAIN)
        if self.has_value:
            orthogonal_init_(self.value_head, VALUE_GAIN)

    # --- forward paths ---

    def _actor(self, observation: Observation) -> tuple[Distribution, TrunkOutput]:
        trunk_out = self.trunk(self.encoder(observation))
        return self.policy_head(trunk_out.features), trunk_out

    def _value(self, observation: Observation, actor_features: Tensor | None = None) -> Tensor:
        if self.spec.shared_trunk:
            features = actor_features if actor_features is not None else self.trunk(self.encoder(observation)).features
        else:
            features = self.critic_trunk(self.critic_encoder(observation)).features
        return self.value_head(features).squeeze(-1)

    @staticmethod
    def _aux(trunk_out: TrunkOutput) -> dict[str, Tensor]:
        aux = {"aux_loss": trunk_out.aux_loss}
        if trunk_out.expert_load is not None:
            aux["expert_load"] = trunk_out.expert_load
        return aux

    def forward_dist(self, observation: Observation) -> tuple[Distribution, Tensor | None, dict[str, Tensor]]:
        """One pass through actor (and critic).

        Args:
            observation: ``(B, *shape)`` tensor, or a dict of them for a Dict space (see :func:`obs_to_tensor`).

        Returns:
            ``(distribution, value, aux)``: a distribution with batch shape ``(B,)`` over the head's internal action
            representation (use :meth:`act` / :meth:`evaluate_actions` for env actions), the value ``(B,)`` or
            ``None`` without a critic, and ``{"aux_loss": scalar}`` (0 for a dense trunk) plus
            ``"expert_load": (E,)`` (fraction of routing assignments per expert) for a MoE trunk.
        """
        distribution, trunk_out = self._actor(observation)
        value = self._value(observation, trunk_out.features) if self.has_value else None
        return distribution, value, self._aux(trunk_out)

    def forward(self, observation: Observation) -> tuple[Distribution, Tensor | None, dict[str, Tensor]]:
        """Same as :meth:`forward_dist`."""
        return self.forward_dist(observation)

    def act(self, observation: Observation, deterministic: bool = False) -> tuple[Tensor, Tensor]:
        """Sample (or pick the mode of) an action for each observation; the critic is not run.

        Call under ``torch.no_grad()`` in rollouts. Box actions are unclipped samples.

        Returns:
            ``(actions, log_prob)``: env actions ``(B,)`` for Discrete, ``(B, *shape)`` otherwise, and ``(B,)``.
        """
        # the head samples from the trunk features directly (no Distribution object per env step; see agents.heads)
        return self.policy_head.act(self.trunk(self.encoder(observation)).features, deterministic)

    #: :meth:`evaluate_actions` takes ``rows`` (distinct observations scored once, gathered per action)
    accepts_shared_rows = True

    def evaluate_actions(
        self, observation: Observation, actions: Tensor | np.ndarray, rows: Tensor | None = None
    ) -> dict[str, Tensor]:
        """Log-probabilities and entropies of given env actions, plus value and MoE terms.

        Args:
            observation: ``(B, *shape)`` tensor or dict of them; with ``rows``, ``(U, *shape)`` distinct ones.
            actions: ``(B,)`` (or ``(B, 1)``) for Discrete, ``(B, *shape)`` for the other spaces; a tensor (moved
                to the policy's device if needed) or a numpy array.
            rows: optional ``(B,)`` long tensor: action ``i`` was taken at observation ``rows[i]``. Each distinct
                observation then goes through the network once and its features are gathered per action, which
                gives the same log-probabilities as repeating the observations (the gradient sums over the
                repeats) for a fraction of the work. A MoE trunk repeats the observations instead, so that its
                load-balancing loss still counts every step.

        Returns:
            ``{"log_prob": (B,), "entropy": (B,), "aux_loss": scalar}``, plus ``"value": (B,)`` with a critic and
            ``"expert_load": (E,)`` with a MoE trunk.
        """
        if rows is not None and self.is_moe:
            observation, rows = _take_rows(observation, rows), None
        trunk_out = self.trunk(self.encoder(observation))
        features = trunk_out.features if rows is None else trunk_out.features[rows]
        actions = torch.as_tensor(actions, device=features.device)  # numpy or host tensors are accepted too
        batch = features.shape[0]
        if actions.dim() == 0 or actions.shape[0] != batch:
            raise ValueError(f"actions of shape {tuple(actions.shape)} do not match a batch of {batch} observations")
        log_prob, entropy = self.policy_head.evaluate(features, actions)
        result = {"log_prob": log_prob, "entropy": entropy, **self._aux(trunk_out)}
        if self.has_value:
            if rows is None or self.spec.shared_trunk:
                result["value"] = self._value(observation, features)
            else:
                result["value"] = self._value(observation)[rows]
        return result

    def value(self, observation: Observation) -> Tensor:
        """Critic estimate ``(B,)``.

        Raises:
            RuntimeError: if the policy was built with ``value_head=False``.
        """
        if not self.has_value:
            raise RuntimeError("this policy has no value head; build it with PolicySpec(value_head=True)")
        return self._value(observation)

    @property
    def log_std(self) -> Tensor:
        """State-independent log standard deviation ``(A,)`` of a Gaussian head (AttributeError otherwise)."""
        if not isinstance(self.policy_head, GaussianHead):
            raise AttributeError(f"log_std: the action head for {self.action_space} is not Gaussian")
        return self.policy_head.log_std

    # --- numpy interface ---

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: Any = None,
        episode_start: Any = None,
        deterministic: bool = True,
    ) -> tuple[np.ndarray, None]:
        """stable-baselines3-shaped prediction from numpy observations.

        Args:
            observation: one observation (``space.shape``) or a batch (``(B, *space.shape)``); dicts for Dict spaces.
            state: ignored (no recurrent state); accepted so SB3's ``evaluate_policy`` can call this.
            episode_start: ignored, as ``state``.
            deterministic: greedy / mean actions when True (the default), sampled otherwise.

        Returns:
            ``(actions, None)``: actions in the action space's dtype, Box actions clipped to its bounds; a single
            observation gives a single action (no batch axis).
        """
        single = _is_single(observation, self.observation_space)
        if single:
            observation = _add_batch_axis(observation)
        device = next(self.policy_head.parameters()).device  # one small module: cheaper than walking every layer
        with torch.no_grad():
            actions, _ = self.act(obs_to_tensor(observation, self.observation_space, device), deterministic)
        actions_np = actions.cpu().numpy()
        if isinstance(self.action_space, spaces.Box):
            actions_np = np.clip(actions_np, self.action_space.low, self.action_space.high)
        actions_np = actions_np.astype(self.action_space.dtype, copy=False)
        return (np.asarray(actions_np[0]) if single else actions_np), None

    def num_parameters(self) -> int:
        """Number of scalar parameters (actor and critic)."""
        return sum(parameter.numel() for parameter in self.parameters())


def _take_rows(observation: Observation, rows: Tensor) -> Observation:
    if isinstance(observation, Mapping):
        return {key: value[rows] for key, value in observation.items()}
    return observation[rows]


def _is_single(observation: Any, space: spaces.Space) -> bool:
    """Whether ``observation`` is one observation of ``space`` (True) or a batch (False); raise if neither."""
    if isinstance(space, spaces.Dict):
        if not isinstance(observation, Mapping):
            raise TypeError(f"observation must be a dict with keys {list(space.spaces)} for {space}")
        answers = {key: _is_single(observation[key], subspace) for key, subspace in space.spaces.items()}
        if len(set(answers.values())) > 1:
            raise ValueError(f"observation dict mixes single and batched entries: {answers}")
        return next(iter(answers.values()))
    shape = tuple(space.shape) if space.shape is not None else ()
    array_shape = tuple(np.shape(observation))
    if array_shape == shape:
        return True
    if len(array_shape) == len(shape) + 1 and array_shape[1:] == shape:
        return False
    raise ValueError(
        f"observation of shape {array_shape} is neither one observation {shape} nor a batch of them for {space}"
    )


def _add_batch_axis(observation: Any) -> Any:
    if isinstance(observation, Mapping):
        return {key: _add_batch_axis(value) for key, value in observation.items()}
    return np.asarray(observation)[None]


def make_policy(
    spec: PolicySpec, observation_space: spaces.Space, action_space: spaces.Space
) -> ActorCritic | TransformerPolicy:
    """Build the policy for these spaces: an :class:`ActorCritic`, or with ``architecture="transformer"`` an
    :class:`agents.transformer.TransformerPolicy`.

    Raises:
        TypeError: ``spec`` is not a :class:`PolicySpec`, or a space has no encoder / head (the error names it).
    """
    if not isinstance(spec, PolicySpec):
        raise TypeError(f"make_policy needs a PolicySpec, got {type(spec).__name__}; use PolicySpec.from_dict(...)")
    if spec.architecture == "transformer":
        # imported here: agents.transformer builds on this module (PolicySpec and the numpy helpers)
        from agents.transformer import TransformerPolicy

        return TransformerPolicy(spec, observation_space, action_space)
    return ActorCritic(spec, observation_space, action_space)

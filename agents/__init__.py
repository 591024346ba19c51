"""rlopt's policies: torch modules built from Gymnasium spaces (imports torch, numpy and gymnasium.spaces only).

``make_policy(PolicySpec(...), observation_space, action_space)`` returns an :class:`ActorCritic`, or a
:class:`TransformerPolicy` (causal transformer with a KV cache) for token sequences with
``architecture="transformer"``; trainers convert numpy batches with :func:`obs_to_tensor`. Mixture-of-Experts layers
live in :mod:`agents.moe`.
"""

from agents.encoders import obs_to_tensor
from agents.moe import MoEFeedForward, MoEOutput
from agents.policy import ActorCritic, Observation, Policy, PolicySpec, make_policy
from agents.transformer import KVCache, TransformerConfig, TransformerPolicy

__all__ = [
    "ActorCritic",
    "KVCache",
    "MoEFeedForward",
    "MoEOutput",
    "Observation",
    "Policy",
    "PolicySpec",
    "TransformerConfig",
    "TransformerPolicy",
    "make_policy",
    "obs_to_tensor",
]

"""rlopt's policies: torch modules built from Gymnasium spaces (imports torch, numpy and gymnasium.spaces only).

``make_policy(PolicySpec(...), observation_space, action_space)`` returns an :class:`ActorCritic`; trainers convert
numpy batches with :func:`obs_to_tensor`. Mixture-of-Experts layers live in :mod:`agents.moe`.
"""

from agents.encoders import obs_to_tensor
from agents.moe import MoEFeedForward, MoEOutput
from agents.policy import ActorCritic, Observation, Policy, PolicySpec, make_policy

__all__ = [
    "ActorCritic",
    "MoEFeedForward",
    "MoEOutput",
    "Observation",
    "Policy",
    "PolicySpec",
    "make_policy",
    "obs_to_tensor",
]

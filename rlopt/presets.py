"""Hyperparameters that work well per (algorithm, environment family), so `rlopt train` needs no flags.

Patterns are matched with :func:`fnmatch.fnmatch` against the env id, first match wins. Values measured on the
2-core CPU machine of the README; explicit options always override a preset.
"""

from __future__ import annotations

from fnmatch import fnmatch
from typing import Any

PRESETS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "grpo": [
        (
            "rlopt/GridGame-Empty-*",
            {
                "num_prompts": 8,
                "group_size": 8,
                "learning_rate": 2e-3,
                "update_epochs": 8,
                "num_minibatches": 4,
                "skip_zero_advantage": True,
                "total_steps": 30_000,
            },
        ),
        # long episodes (up to 250 steps on DoorKey-5x5): fewer episodes per batch buy more updates per env step.
        # The learning rate decays to 0: with a constant one the sampled policy solved DoorKey-5x5 on every seed
        # while the greedy one swung between 0.36 and 1.0 success late in training (3 seeds: 1.0, 0.78, 0.36 at
        # 200k); decayed, greedy success was 1.0 on all 3.
        # skip_zero_advantage (grid and math presets): the same gradient without the dead groups' forward and backward.
        # On DoorKey-5x5 (seeds 0-2, 200k steps) it skipped 70-78% of the episodes and cut the runs from 30-36 s to
        # 20-22 s, reaching 0.9 success at the same steps (README). An explicit ent_coef, kl_coef or num_experts
        # turns it off (rlopt.api.make_config)
        (
            "rlopt/GridGame-*",
            {
                "num_prompts": 8,
                "group_size": 8,
                "learning_rate": 2e-3,
                "lr_schedule": "linear",
                "update_epochs": 8,
                "num_minibatches": 4,
                "skip_zero_advantage": True,
                "total_steps": 200_000,
            },
        ),
        (
            "rlopt/ArmReach*",
            {
                # 50-step episodes are cheap (about 15-30k env steps/s with this net), so many small batches with
                # several epochs each. Dense distance rewards: per-step group baselines (advantage="step") measured
                # 0.72 success at 1M steps where outcome advantages gave 0.55, and 0.84-0.86 at 2M (seeds 0, 1)
                "num_prompts": 16,
                "group_size": 8,
                "learning_rate": 1e-3,
                "update_epochs": 8,
                "num_minibatches": 4,
                "hidden_sizes": (128, 128),
                "advantage": "step",
                "total_steps": 2_000_000,
            },
        ),
        (
            "rlopt/MathReasoning-*",
            {
                # for continuing from `rlopt sft` (--init): a random policy never writes a well-formed answer, so
                # GRPO from scratch gets no reward variance (DeepSeek-R1's reason for a cold start). One small
                # step per batch, so RL refines the supervised model rather than overwriting it. A good supervised
                # start answers many prompts right in all 8 samples: leaving those dead groups out of the update
                # (the same gradient) took 100k steps from 7.8-7.9 s to 4.5-5.0 s, accuracy 0.945 both ways.
                # The rate decays to 0: at a constant 1e-4, 500k steps from strong supervised models (0.96-1.00)
                # cost them up to 0.04 of held-out accuracy, and decayed they kept it, while from weak ones the
                # decayed rate learned as fast (README, targets table and math comparisons)
                "num_prompts": 32,
                "group_size": 8,
                "learning_rate": 1e-4,
                "lr_schedule": "linear",
                "update_epochs": 1,
                "num_minibatches": 1,
                "skip_zero_advantage": True,
                "hidden_sizes": (128, 128),
                "total_steps": 300_000,
            },
        ),
        (
            "CartPole-*",
            {
                "num_prompts": 8,
                "group_size": 8,
                "learning_rate": 1e-3,
                "update_epochs": 4,
                "num_minibatches": 4,
                "total_steps": 500_000,
            },
        ),
    ],
    "ppo": [
        (
            "rlopt/GridGame-*",
            {
                "num_envs": 16,
                "num_steps": 128,
                "learning_rate": 5e-4,
                "ent_coef": 0.01,
                "gamma": 0.99,
                "gae_lambda": 0.95,
                "total_steps": 300_000,
            },
        ),
        (
            "rlopt/ArmReach*",
            {
                # measured: 0.94 success after 1M steps (the 16 x 256, lr 3e-4 start of RL-Zoo's Reacher row: 0.00)
                "num_envs": 32,
                "num_steps": 64,
                "learning_rate": 1e-3,
                "gamma": 0.98,
                "update_epochs": 10,
                "num_minibatches": 8,
                "total_steps": 1_000_000,
            },
        ),
        (
            "rlopt/MathReasoning-*",
            {
                # gamma = lambda = 1: the token MDP's reward comes at the end of short episodes. With the transformer
                # a rollout is whole episodes, 32 at a time, until it holds >= 32 x 64 env steps (rlopt/ppo.py).
                # The value head sits on the policy's own trunk (the "value head on the same transformer";
                # with --init it starts from the supervised features, and is 1.5x faster than a second trunk)
                # lr 1e-4 and no entropy bonus: with 5e-4 and 0.01 (the first preset) PPO wrecked a weak supervised
                # start (level 1, 600 SFT steps, accuracy 0.117: 0.000 by 33k steps) and never learned a 4-problem
                # file (0.00 at 41k); with these it held 0.10-0.125 on the former and solved the latter by 11k
                "shared_trunk": True,
                "num_envs": 32,
                "num_steps": 64,
                "learning_rate": 1e-4,
                "gamma": 1.0,
                "gae_lambda": 1.0,
                "ent_coef": 0.0,
                "hidden_sizes": (128, 128),
                "total_steps": 300_000,
            },
        ),
        (
            "CartPole-*",
            {
                "num_envs": 8,
                "num_steps": 32,
                "learning_rate": 1e-3,
                "gamma": 0.98,
                "gae_lambda": 0.8,
                "update_epochs": 20,
                "num_minibatches": 1,
                "total_steps": 100_000,
            },
        ),
    ],
}


def preset_for(algo: str, env_id: str) -> dict[str, Any]:
    """The preset overrides for ``algo`` on ``env_id`` ({} when none matches)."""
    for pattern, values in PRESETS.get(algo, []):
        if fnmatch(env_id, pattern):
            return dict(values)
    return {}

"""rlopt: a reinforcement-learning gym and critic-free GRPO trainer.

Importing rlopt registers the ``rlopt/...`` environments with Gymnasium.
"""

__version__ = "0.1.0"

import envs as _envs  # noqa: E402,F401  (registers the rlopt/... ids)

"""rlopt's environments. Importing this package registers every ``rlopt/...`` id with Gymnasium."""

from envs.registration import ENV_IDS, register_envs

register_envs()

__all__ = ["ENV_IDS", "register_envs"]

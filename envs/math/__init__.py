"""The math reasoning environment ``rlopt/MathReasoning-v0``; see :mod:`envs.math_reasoning` for the public API."""

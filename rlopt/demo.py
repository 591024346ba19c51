"""``make demo`` / ``rlopt demo``: the main job, a short GRPO-vs-PPO comparison with TensorBoard logs and a report.

GRPO (critic-free), rlopt's PPO and stable-baselines3's PPO, three seeds each, on the empty grid room and on
key-door 5x5 (sparse reward, long episodes), sized for about ten minutes on two CPU cores. ``--quick`` shrinks it
to about a minute for smoke tests.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from rlopt.compare import CompareConfig, default_jobs, run_compare
from rlopt.runs import machine_description

EMPTY = "rlopt/GridGame-Empty-5x5-v0"
DOORKEY = "rlopt/GridGame-DoorKey-5x5-v0"


def demo_config(out: str, quick: bool = False) -> CompareConfig:
    """The comparison the demo runs (``quick``: one seed, small budgets)."""
    if quick:
        return CompareConfig(
            envs=[EMPTY],
            algos=["grpo", "ppo", "sb3_ppo"],
            seeds=1,
            total_steps=16_000,  # GRPO, PPO and SB3 PPO all reach success 1.0 on seed 0 (25 s on 2 cores)
            out=out,
            jobs=default_jobs(),
            overrides={},
        )
    return CompareConfig(
        envs=[EMPTY, DOORKEY],
        algos=["grpo", "ppo", "sb3_ppo"],
        seeds=3,
        total_steps=20_000,
        env_steps={DOORKEY: 100_000},
        out=out,
        jobs=default_jobs(),
        overrides={},
    )


def demo_main(args: argparse.Namespace) -> int:
    config = demo_config(args.out, quick=args.quick)
    runs = len(config.envs) * len(config.algos) * config.seeds
    print(
        f"rlopt demo: {', '.join(config.algos)} x {', '.join(config.envs)} x {config.seeds} seeds = {runs} runs "
        f"on {config.jobs} worker processes ({machine_description()})",
        flush=True,
    )
    print(f"watch the curves while it runs: tensorboard --logdir {config.tb_dir}", flush=True)
    start = time.perf_counter()
    report = run_compare(config)
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; open {Path(report)} (plots beside it)")
    return 0

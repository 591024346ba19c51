"""Steps per second of rlopt's batched environments, side by side with their references, in one run.

References (single environments, as their users run them): MiniGrid's ``MiniGrid-DoorKey-5x5-v0`` for the grid
game and Gymnasium's MuJoCo ``Reacher-v5`` for the arm. The math env has no reference; it reports tokens stepped
per second and verified (finished) episodes per second. Random actions, pre-drawn outside the timed loop.

    python scripts/bench_envs.py                 # N = 1, 64, 1024, 4096
    python scripts/bench_envs.py --sizes 1,4096 --seconds 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time

import gymnasium as gym
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import envs  # noqa: E402,F401  (registers rlopt/... ids)
from rlopt.runs import machine_description  # noqa: E402

ACTION_BANK = 64


def _random_actions(space: gym.Space, num_envs: int, rng: np.random.Generator) -> list[np.ndarray]:
    if isinstance(space, gym.spaces.Discrete):
        return [rng.integers(0, space.n, size=num_envs) for _ in range(ACTION_BANK)]
    return [
        rng.uniform(space.low, space.high, size=(num_envs, *space.shape)).astype(space.dtype)
        for _ in range(ACTION_BANK)
    ]


def bench_vector(env_id: str, num_envs: int, seconds: float) -> tuple[float, float]:
    """(env steps per second, finished episodes per second) of rlopt's batched vector env."""
    env = gym.make_vec(env_id, num_envs=num_envs)
    rng = np.random.default_rng(0)
    actions = _random_actions(env.single_action_space, num_envs, rng)
    env.reset(seed=0)
    for i in range(3):
        env.step(actions[i])
    steps = episodes = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(16):
            _, _, terminated, truncated, _ = env.step(actions[(steps // num_envs + i) % ACTION_BANK])
            episodes += int(np.count_nonzero(terminated | truncated))
        steps += 16 * num_envs
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed, episodes / elapsed


def bench_single(env_id: str, seconds: float) -> float | None:
    """Steps per second of a reference single env with random actions (None if it cannot be made here)."""
    try:
        if env_id.startswith("MiniGrid"):
            import minigrid  # noqa: F401  (registers MiniGrid ids)
        env = gym.make(env_id)
    except Exception as error:  # a missing optional reference (e.g. no MuJoCo) must not stop the benchmark
        print(f"  reference {env_id} unavailable: {error}")
        return None
    rng = np.random.default_rng(0)
    actions = _random_actions(env.action_space, 1, rng)
    env.reset(seed=0)
    steps = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(64):
            action = actions[(steps + i) % ACTION_BANK][0]
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()
        steps += 64
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1,64,1024,4096", help="Batch sizes N (default: 1,64,1024,4096).")
    parser.add_argument("--seconds", type=float, default=3.0, help="Seconds per measurement (default: 3).")
    args = parser.parse_args()
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes takes comma-separated whole numbers such as 1,64,1024, got {args.sizes!r}")
    if min(sizes) < 1:
        parser.error(f"--sizes must all be at least 1, got {args.sizes!r}")
    if not args.seconds > 0:
        parser.error(f"--seconds must be above 0, got {args.seconds}")

    print(f"rlopt env benchmark, {datetime.date.today()}, {machine_description()}, one process")
    print(f"command: python scripts/bench_envs.py --sizes {args.sizes} --seconds {args.seconds}\n")
    families = [
        ("grid", "rlopt/GridGame-DoorKey-5x5-v0", "MiniGrid-DoorKey-5x5-v0"),
        ("arm", "rlopt/ArmReach-v0", "Reacher-v5"),
        ("math", "rlopt/MathReasoning-v0", None),
    ]
    rows = []
    for family, env_id, reference in families:
        reference_sps = bench_single(reference, args.seconds) if reference else None
        if reference:
            shown = "n/a" if reference_sps is None else f"{reference_sps:,.0f}"
            print(f"{reference:<32} N=1     {shown:>14} steps/s (reference)")
        for num_envs in sizes:
            sps, eps = bench_vector(env_id, num_envs, args.seconds)
            ratio = sps / reference_sps if reference_sps else None
            unit = "tokens/s" if family == "math" else "steps/s"
            extra = f"  {ratio:7.1f}x reference" if ratio else ""
            extra += f"  {eps:,.0f} verified episodes/s" if family == "math" else ""
            print(f"{env_id:<32} N={num_envs:<5} {sps:>14,.0f} {unit}{extra}")
            rows.append((family, env_id, num_envs, sps, ratio, eps))
    print("\n| env | N | steps/s | vs reference |")
    print("|---|---:|---:|---:|")
    for family, env_id, num_envs, sps, ratio, eps in rows:
        if ratio:
            shown = f"{ratio:.0f}x" if ratio >= 10 else f"{ratio:.2g}x"  # the arm's 0.16x is not "0x"
        else:
            shown = f"{eps:,.0f} episodes/s" if family == "math" else "-"
        print(f"| {env_id} | {num_envs} | {sps:,.0f} | {shown} |")


if __name__ == "__main__":
    main()

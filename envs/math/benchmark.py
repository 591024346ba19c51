"""Timing snippet (not a test): tokens stepped and episodes verified per second of the batched math env.

    python -m envs.math.benchmark                       # N=4096, level 1, 3 s per scenario
    python -m envs.math.benchmark --num-envs 1024 --level 4 --seconds 5

Scenarios, each timed inside ``env.step`` only (choosing the actions is not counted):

* ``random``: uniform random tokens, the issue's figure; nearly every completion is rejected by the vectorised
  structure check.
* ``gold``: every env writes its gold completion, so every episode parses and is scored (vectorised fast path).
* ``noisy-gold``: the gold completion with 10% of the thought tokens replaced by random digits; most episodes
  parse but differ from gold, so their chains of thought are read in Python (the slow path).
"""

from __future__ import annotations

import argparse
import platform
import time

import gymnasium as gym
import numpy as np

from envs.math.env import gold_completions
from envs.math.tokens import DIGIT_0, THINK_END, VOCAB_SIZE

__all__ = ["benchmark"]


def _scripted_actions(env: gym.vector.VectorEnv, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The next gold token of every env, with digits sprinkled over the thought at rate ``noise``."""
    core = env.unwrapped.core if hasattr(env, "unwrapped") else env.core
    prompt_length, gold, _ = gold_completions(env)
    offset = np.clip(core.length - prompt_length, 0, gold.shape[1] - 1)
    actions = gold[np.arange(len(offset)), offset]
    if noise:
        think_end = np.argmax(gold == THINK_END, axis=1)
        in_thought = (offset > 0) & (offset < think_end)
        flip = in_thought & (rng.random(len(offset)) < noise)
        actions = np.where(flip, DIGIT_0 + rng.integers(0, 10, len(offset)), actions)
    return actions


def benchmark(num_envs: int = 4096, level: int = 1, seconds: float = 3.0, scenario: str = "random") -> dict[str, float]:
    """Run one scenario; returns tokens per second (actions submitted and tokens actually written, NEXT_STEP
    autoreset ignores the action of an env being reset), tokens per CPU second of this process (the honest figure
    on a machine shared with other jobs) and finished episodes per second."""
    import envs  # noqa: F401  (registers the ids)

    env = gym.make_vec("rlopt/MathReasoning-v0", num_envs=num_envs, level=level, reward="cot")
    rng = np.random.default_rng(0)
    bank = [rng.integers(0, VOCAB_SIZE, num_envs) for _ in range(64)]
    env.reset(seed=0)
    submitted = written = episodes = 0
    waiting = 0  # envs that ended on the previous step: NEXT_STEP autoreset ignores their action now
    spent = cpu = 0.0
    step = 0
    while spent < seconds:
        if scenario == "random":
            actions = bank[step % len(bank)]
        else:
            actions = _scripted_actions(env, 0.1 if scenario == "noisy-gold" else 0.0, rng)
        start, start_cpu = time.perf_counter(), time.process_time()
        _, _, terminated, truncated, _ = env.step(actions)
        spent += time.perf_counter() - start
        cpu += time.process_time() - start_cpu
        step += 1
        submitted += num_envs
        written += num_envs - waiting
        waiting = int(np.count_nonzero(terminated | truncated))
        episodes += waiting
    env.close()
    return {
        "tokens_per_second": submitted / spent,
        "tokens_per_cpu_second": submitted / cpu,
        "written_tokens_per_second": written / spent,
        "episodes_per_second": episodes / spent,
        "steps": step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-envs", type=int, default=4096)
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--scenarios", default="random,gold,noisy-gold")
    arguments = parser.parse_args()
    machine = platform.processor() or platform.machine()
    print(f"# {machine}, numpy {np.__version__}, N={arguments.num_envs}, level {arguments.level}")
    for scenario in arguments.scenarios.split(","):
        result = benchmark(arguments.num_envs, arguments.level, arguments.seconds, scenario)
        print(
            f"{scenario:>10}: {result['tokens_per_second'] / 1e6:6.2f} M tokens/s "
            f"({result['written_tokens_per_second'] / 1e6:.2f} M written), "
            f"{result['episodes_per_second'] / 1e3:7.1f} k verified episodes/s over {result['steps']} steps; "
            f"{result['tokens_per_cpu_second'] / 1e6:.2f} M tokens per CPU second"
        )


if __name__ == "__main__":
    main()

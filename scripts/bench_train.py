"""Training throughput: rlopt's GRPO vs stable-baselines3's PPO on the same grid preset, side by side in one run.

Both train the same number of env steps on ``rlopt/GridGame-DoorKey-5x5-v0`` with the same network size (two
hidden layers of 64 over the flattened 7x7x3 view plus the one-hot direction; SB3's MultiInputPolicy flattens the
same way because the image bounds are 0..10, not an image). Each run is a separate process with one torch thread,
one after the other. Steps per second are whole-run figures: rollouts, updates, evaluation and logging included.

    python scripts/bench_train.py                  # 100k env steps each
    python scripts/bench_train.py --steps 30000
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

ENV_ID = "rlopt/GridGame-DoorKey-5x5-v0"

RUNNER = """
import json, sys, torch
torch.set_num_threads(1)
from rlopt import api
algo, env_id, steps, logdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
overrides = json.loads(sys.argv[5])
config = api.make_config(algo, env_id, total_steps=steps, logdir=logdir, run_name=algo, progress=False,
                         eval_episodes=32, **overrides)
_, summary = api.train(config)
print("SUMMARY " + json.dumps(summary))
"""

OVERRIDES = {
    # same network size: two hidden layers of 64, the grid flattened (no conv/embedding encoder)
    "grpo": {"hidden_sizes": [64, 64], "architecture": "mlp"},
    "sb3_ppo": {"net_arch": [64, 64]},
}


def run(algo: str, steps: int, logdir: str) -> dict:
    command = [sys.executable, "-c", RUNNER, algo, ENV_ID, str(steps), logdir, json.dumps(OVERRIDES[algo])]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("SUMMARY "))
    return json.loads(line[len("SUMMARY ") :])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100_000, help="Env steps per run (default: 100000).")
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rlopt.runs import machine_description

    print(f"rlopt training benchmark, {datetime.date.today()}, {machine_description()}, one torch thread per run")
    print(f"command: python scripts/bench_train.py --steps {args.steps}\n")
    results = {}
    with tempfile.TemporaryDirectory() as logdir:
        for algo in ("grpo", "sb3_ppo"):
            summary = run(algo, args.steps, logdir)
            results[algo] = summary
            print(
                f"{algo:<8} {summary['env_steps']:>8} steps in {summary['wall_clock_seconds']:7.1f} s = "
                f"{summary['steps_per_second']:>9,.0f} steps/s, eval success {summary['eval/success_rate']:.2f}, "
                f"{summary['num_parameters']} parameters"
            )
    ratio = results["grpo"]["steps_per_second"] / results["sb3_ppo"]["steps_per_second"]
    print(f"\nGRPO / SB3 PPO steps per second: {ratio:.1f}x on {ENV_ID}")


if __name__ == "__main__":
    main()

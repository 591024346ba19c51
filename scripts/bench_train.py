"""Training throughput: rlopt's GRPO vs stable-baselines3's PPO on the same grid preset, side by side in one run.

Both train the same number of env steps on ``rlopt/GridGame-DoorKey-5x5-v0`` with the same network size (two
hidden layers of 64 over the flattened 7x7x3 view plus the one-hot direction; SB3's MultiInputPolicy flattens the
same way because the image bounds are 0..10, not an image). Each run is a separate process with one torch thread,
one after the other, GRPO and SB3 interleaved over ``--repeats`` runs each; the medians are compared. Steps per
second are whole-run figures: rollouts, updates, evaluation and logging included.

One-time process setup is kept out of both timers alike: the first optimizer a process constructs imports
``torch._dynamo`` (inside ``torch.optim.Optimizer.__init__``; 1-2.5 s on the 2-core README machine), a cost of starting
Python and torch, not of either trainer. Each run's process constructs one throwaway Adam before its timer starts,
so GRPO and SB3 PPO both start warm; the time it took is printed beside each run. Nothing else is excluded: each
side's own imports, env construction, evaluation and logging stay inside its timer.

Both evaluate once, at the end, on the same 32 episodes: periodic evaluations would cost each side according to how
well it has learned so far (an unsolved episode runs to the 250-step limit), which is not training speed. GRPO runs
with ``eval_media=False`` because rlopt otherwise also renders one episode per evaluation for TensorBoard, work
that the SB3 side does not do.

On a machine shared with other work the wall-clock figures of the two runs (taken minutes apart) see different
loads, so the CPU seconds each training process used are printed too, with the ratio of steps per CPU second, a
figure that other processes disturb much less.

    python scripts/bench_train.py                  # 100k env steps each, 3 runs per side, medians compared
    python scripts/bench_train.py --steps 30000 --repeats 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ENV_ID = "rlopt/GridGame-DoorKey-5x5-v0"

RUNNER = """
import json, sys, time, torch
torch.set_num_threads(1)
from rlopt import api
algo, env_id, steps, logdir = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
overrides = json.loads(sys.argv[5])
config = api.make_config(algo, env_id, total_steps=steps, logdir=logdir, run_name=algo, progress=False,
                         eval_episodes=32, eval_every=steps, **overrides)
# one-time setup, the same for both sides, before the timer inside api.train starts (see the module docstring)
start = time.perf_counter()
torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
warmup = time.perf_counter() - start
cpu = time.process_time()
_, summary = api.train(config)
cpu = time.process_time() - cpu
print("SUMMARY " + json.dumps({**summary, "warmup_seconds": warmup, "cpu_seconds": cpu}))
"""

OVERRIDES = {
    # same network size: two hidden layers of 64, the grid flattened (no conv/embedding encoder)
    # GRPO's evaluations skip the rendered TensorBoard frame (eval_media): the SB3 side renders none
    # GRPO's update covers every episode, as SB3's PPO does (the grid preset would leave dead groups out; the
    # README's figures were measured with the whole update)
    "grpo": {"hidden_sizes": [64, 64], "architecture": "mlp", "eval_media": False, "skip_zero_advantage": False},
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
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="Runs per side, interleaved; medians are compared (default: 3). A 100k-step GRPO run lasts 2-3 s, "
        "short enough for a busy machine to swing it by a third.",
    )
    args = parser.parse_args()
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from rlopt.runs import machine_description

    print(f"rlopt training benchmark, {datetime.date.today()}, {machine_description()}, one torch thread per run")
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be at least 1")
    print(f"command: python scripts/bench_train.py --steps {args.steps} --repeats {args.repeats}")
    print("each process warms torch (its first Adam imports torch._dynamo) before its timer starts, for both sides\n")
    results: dict[str, list[dict]] = {"grpo": [], "sb3_ppo": []}
    with tempfile.TemporaryDirectory() as logdir:
        for repeat in range(args.repeats):  # interleaved, so that a slow spell of the machine hits both sides
            for algo in results:
                summary = run(algo, args.steps, os.path.join(logdir, str(repeat)))
                results[algo].append(summary)
                print(
                    f"{algo:<8} {summary['env_steps']:>8} steps in {summary['wall_clock_seconds']:7.1f} s = "
                    f"{summary['steps_per_second']:>9,.0f} steps/s, eval success {summary['eval/success_rate']:.2f}, "
                    f"{summary['num_parameters']} parameters, {summary['cpu_seconds']:.1f} CPU s "
                    f"(+{summary['warmup_seconds']:.1f} s warm-up before the timer)"
                )
    speed = {algo: [summary["steps_per_second"] for summary in runs] for algo, runs in results.items()}
    per_cpu = {
        algo: [summary["env_steps"] / summary["cpu_seconds"] for summary in runs] for algo, runs in results.items()
    }
    median = {algo: float(np.median(values)) for algo, values in speed.items()}
    print(
        f"\nmedian of {args.repeats}: GRPO {median['grpo']:,.0f} steps/s "
        f"(range {min(speed['grpo']):,.0f}-{max(speed['grpo']):,.0f}), SB3 PPO {median['sb3_ppo']:,.0f} steps/s "
        f"(range {min(speed['sb3_ppo']):,.0f}-{max(speed['sb3_ppo']):,.0f})"
    )
    print(f"GRPO / SB3 PPO steps per second: {median['grpo'] / median['sb3_ppo']:.1f}x on {ENV_ID}")
    cpu_ratio = float(np.median(per_cpu["grpo"])) / float(np.median(per_cpu["sb3_ppo"]))
    print(f"GRPO / SB3 PPO steps per CPU second: {cpu_ratio:.1f}x")
    steps = {algo: float(np.median([summary["env_steps"] for summary in runs])) for algo, runs in results.items()}
    if max(steps.values()) > 1.25 * min(steps.values()):
        # each side trains in whole batches (GRPO: P x G whole episodes), so a small --steps runs them unequally
        # and the per-second rates include unequal fixed costs
        print(
            f"note: the sides ran unequal env steps (median GRPO {steps['grpo']:,.0f}, SB3 PPO "
            f"{steps['sb3_ppo']:,.0f}); use a larger --steps for a fair ratio"
        )


if __name__ == "__main__":
    main()

"""The ``rlopt`` command line: list environments, train, resume, evaluate, compare, re-make reports, and the demo.

Options of ``rlopt train`` are generated from the algorithm's config dataclass, so ``--help`` always matches
the code: ``rlopt train --algo grpo --help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
import warnings
from pathlib import Path
from typing import Any

from rlopt.config import ConfigError, RunConfig

ALGO_CHOICES = ("grpo", "ppo", "sb3_ppo")


# --- dataclass fields -> argparse options ------------------------------------------------------------------------


def _base_type(hint: Any) -> tuple[Any, bool]:
    """(the non-None type, whether None is allowed) of a field's type hint."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return args[0], True
    return hint, False


def _parse_tuple(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 64,64, got {text!r}") from None


def _parse_json(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"level\": 2}}': {error}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def _optional(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() == "none" else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def add_config_arguments(
    parser: argparse.ArgumentParser, config_cls: type[RunConfig], skip: tuple[str, ...] = ()
) -> None:
    """One ``--option`` per dataclass field, with the field's help text, default and choices."""
    hints = typing.get_type_hints(config_cls)
    for item in dataclasses.fields(config_cls):
        if item.name in skip:
            continue
        flag = "--" + item.name.replace("_", "-")
        help_text = item.metadata.get("help", "")
        hint, nullable = _base_type(hints[item.name])
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()  # type: ignore[misc]
        kwargs: dict[str, Any] = {"dest": item.name, "default": argparse.SUPPRESS}
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            if typing.get_origin(hint) is tuple:
                convert: Any = _parse_tuple
                shown = ",".join(str(v) for v in default) if default else default
            elif hint is dict or typing.get_origin(hint) is dict:
                convert, shown = _parse_json, json.dumps(default)
            else:
                convert, shown = hint, default
            kwargs["type"] = _optional(convert) if nullable else convert
            kwargs["metavar"] = item.name.upper()
            if default != "":  # an empty default (a required value such as --teacher) is not worth showing
                help_text = f"{help_text} (default: {shown})"
            if "choices" in item.metadata:
                kwargs["choices"] = item.metadata["choices"]
                kwargs.pop("metavar")
        if hint is bool:
            help_text = f"{help_text} (default: {default})"
        kwargs["help"] = help_text.replace("%", "%%")
        parser.add_argument(flag, **kwargs)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--torch-threads``, of the commands that train (read it back with :func:`use_threads`)."""
    parser.add_argument(
        "--torch-threads",
        type=int,
        metavar="T",
        default=None,
        help="Torch CPU threads for this process (default: torch's own choice, one per core). Use 1 when several "
        "runs share a machine; the small networks here gain little from more.",
    )


def use_threads(parser: argparse.ArgumentParser, threads: int | None) -> None:
    """Apply a parsed ``--torch-threads`` (None: leave torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        parser.error(f"--torch-threads must be at least 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


# --- subcommands -------------------------------------------------------------------------------------------------


def _cmd_envs(args: argparse.Namespace) -> int:
    import gymnasium as gym

    import envs
    from envs.registration import ENTRIES

    del envs
    rows = []
    for entry in ENTRIES:
        env = gym.make(entry.id)
        rows.append(
            (
                entry.id,
                _describe_space(env.observation_space),
                _describe_space(env.action_space),
                str(entry.max_episode_steps or env.unwrapped.core.step_limit or "-"),
            )
        )
        env.close()
    widths = [max(len(row[i]) for row in rows + [("id", "observation", "action", "steps")]) for i in range(4)]
    header = ("id", "observation", "action", "steps")
    print("  ".join(text.ljust(width) for text, width in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)))
    return 0


def _describe_space(space: Any) -> str:
    from gymnasium import spaces

    if isinstance(space, spaces.Dict):
        return "Dict(" + ", ".join(f"{key}: {_describe_space(value)}" for key, value in space.spaces.items()) + ")"
    if isinstance(space, spaces.Discrete):
        return f"Discrete({space.n})"
    if isinstance(space, spaces.Box):
        return f"Box({space.dtype}, {space.shape})"
    return str(space)


def _train_parser(algo: str) -> argparse.ArgumentParser:
    from rlopt.api import config_class

    parser = argparse.ArgumentParser(
        prog="rlopt train",
        description=f"Train with {algo}. Options not given come from the env's preset, then the defaults.",
    )
    parser.add_argument(
        "--algo",
        choices=ALGO_CHOICES,
        default=algo,
        help="Algorithm: grpo (critic-free), ppo (rlopt's own), sb3_ppo (stable-baselines3).",
    )
    parser.add_argument(
        "--env",
        dest="env_id",
        metavar="ID",
        default=argparse.SUPPRESS,
        help="Gymnasium id, e.g. rlopt/GridGame-Empty-5x5-v0 (see `rlopt envs`) or CartPole-v1.",
    )
    parser.add_argument(
        "--preset",
        choices=("auto", "none"),
        default="auto",
        help="auto: start from the env's tuned hyperparameters (rlopt/presets.py); none: defaults.",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="Continue the run in RUN_DIR from its latest checkpoint (grpo and ppo).",
    )
    add_threads_argument(parser)
    # SB3PPOConfig.preset only records which RL-Zoo row a config started from; --preset above chooses whether to
    # start from one
    add_config_arguments(parser, config_class(algo), skip=("env_id", "preset"))
    return parser


def _cmd_train(argv: list[str]) -> int:
    from rlopt.api import make_config, resume, train

    probe = argparse.ArgumentParser(prog="rlopt train", add_help=False)
    probe.add_argument("--algo", choices=ALGO_CHOICES, default="grpo")
    known, _ = probe.parse_known_args(argv)
    parser = _train_parser(known.algo)
    args = vars(parser.parse_args(argv))
    algo = args.pop("algo")
    preset = args.pop("preset")
    resume_dir = args.pop("resume")
    threads = args.pop("torch_threads")
    use_threads(parser, threads)
    if resume_dir:
        # a resumed run keeps the settings it was started with (config.json): an option given along would be
        # silently ignored, so it is refused instead
        ignored = [
            name
            for name, value in [("preset", preset), *args.items()]
            if name not in ("total_steps", "progress") and value != parser.get_default(name)
        ]
        if any(token == "--algo" or token.startswith("--algo=") for token in argv):
            ignored.insert(0, "algo")
        if ignored:
            given = ", ".join("--env" if name == "env_id" else "--" + name.replace("_", "-") for name in ignored)
            parser.error(
                f"--resume continues a run with the settings it was started with; only --total-steps, "
                f"--[no-]progress and --torch-threads can be given with it, got {given}. Start a new run to change "
                "them."
            )
        _, summary = resume(resume_dir, total_steps=args.get("total_steps"), progress=args.get("progress"))
    else:
        env_id = args.pop("env_id", "rlopt/GridGame-Empty-5x5-v0")
        config = make_config(algo, env_id, preset=preset == "auto", **args)
        _, summary = train(config)
    _print_summary(summary)
    return 0


def _print_summary(summary: dict[str, Any]) -> None:
    success = summary.get("eval/success_rate")
    print(
        f"{summary['algo']} on {summary['env_id']} (seed {summary['seed']}): "
        f"eval/mean_reward {summary['eval/mean_reward']:.3f}, "
        f"eval/success_rate {'n/a' if success is None else f'{success:.3f}'}, "
        f"{summary['env_steps']} env steps in {summary['wall_clock_seconds']:.1f} s "
        f"({summary['steps_per_second']:.0f} steps/s), {summary['num_parameters']} parameters"
    )
    if "run_dir" in summary:
        print(f"run folder: {summary['run_dir']}")


def _cmd_eval(argv: list[str]) -> int:
    from rlopt.api import evaluate

    parser = argparse.ArgumentParser(prog="rlopt eval", description="Evaluate a checkpoint on held-out seeds.")
    parser.add_argument(
        "checkpoint",
        help="A run folder, its checkpoints/ folder, or a checkpoints/step_* folder; for an SB3 run (--algo sb3_ppo) "
        "its folder, checkpoints/ or model.zip, read with SB3's loader, which unpickles: evaluate runs you trust.",
    )
    parser.add_argument("--env", dest="env_id", default=None, help="Env id (default: the one it was trained on).")
    parser.add_argument("--episodes", type=int, default=32, help="Episodes to run (default: 32).")
    parser.add_argument(
        "--env-kwargs",
        type=_parse_json,
        default=None,
        help="""Env keyword arguments as JSON, e.g. '{"level": 2}' or '{"problem_file": "p.jsonl"}' (default: """
        "those the run was trained with).",
    )
    parser.add_argument("--device", default="cpu", help="Torch device (default: cpu).")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    result = evaluate(args.checkpoint, args.env_id, args.episodes, env_kwargs=args.env_kwargs, device=args.device)
    # strict JSON, like summary.json: a NaN (an env that reports no success) is written as null
    result = {key: None if isinstance(value, float) and value != value else value for key, value in result.items()}
    print(json.dumps(result, indent=2, allow_nan=False))
    return 0


def _cmd_compare(argv: list[str]) -> int:
    from rlopt.compare import add_compare_arguments, compare_main

    parser = argparse.ArgumentParser(
        prog="rlopt compare",
        description="Run algorithms x envs x seeds in parallel and write TensorBoard runs, plots and a report.",
    )
    add_compare_arguments(parser)
    return int(compare_main(parser.parse_args(argv)) or 0)


def _cmd_report(argv: list[str]) -> int:
    from rlopt.compare import add_report_arguments, report_main

    parser = argparse.ArgumentParser(
        prog="rlopt report",
        description="Write a comparison's report.md, plots/ and summary.json again from the runs already on disk,\n"
        "without training: e.g. with another success threshold for the steps/seconds/updates-to-success\n"
        "columns. Settings not given keep the values of the report already in the comparison folder.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  rlopt compare --env CartPole-v1 --algos grpo,ppo --out runs/cmp   # trains, writes runs/cmp/report.md\n"
        "  rlopt report runs/cmp --success-threshold 0.5                     # replaces runs/cmp/report.md\n"
        "  rlopt report runs/cmp --success-threshold 0.5 --out runs/cmp-0.5  # keeps it, writes a second report\n"
        "  rlopt report runs/cmp --success-gain 0.05   # steps/updates until 0.05 above each run's step-0 score\n"
        "                                              # (runs trained with eval_on_start)",
    )
    add_report_arguments(parser)
    return int(report_main(parser.parse_args(argv)) or 0)


def _cmd_distill(argv: list[str]) -> int:
    from rlopt.distill import add_distill_arguments, distill_main

    parser = argparse.ArgumentParser(
        prog="rlopt distill",
        description="Distil a trained teacher into a smaller student: the student plays, the teacher scores every "
        "state it visits, and the student learns the teacher's action distribution there (on-policy "
        "distillation; --teacher-mix lets the teacher choose a share of the actions, as DAgger). The student's "
        "size comes from the policy options (--hidden-sizes, or --num-layers/--model-dim for a transformer).",
        epilog="example:\n  rlopt train --algo grpo --env rlopt/GridGame-DoorKey-5x5-v0 --run-name teacher\n"
        "  rlopt distill --teacher runs/teacher --hidden-sizes 16,16 --total-steps 100000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_distill_arguments(parser)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    use_threads(parser, args.torch_threads)
    del args.torch_threads
    return int(distill_main(args) or 0)


def _cmd_sft(argv: list[str]) -> int:
    from rlopt.sft import add_sft_arguments, sft_main

    parser = argparse.ArgumentParser(
        prog="rlopt sft",
        description="Supervised cold start: train a token transformer on the reference solver's chains of thought; "
        "continue with `rlopt train --algo grpo --init RUN_DIR`.",
    )
    add_sft_arguments(parser)
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    use_threads(parser, args.torch_threads)
    del args.torch_threads
    return int(sft_main(args) or 0)


def _cmd_demo(argv: list[str]) -> int:
    from rlopt.demo import demo_main

    parser = argparse.ArgumentParser(prog="rlopt demo", description="The main job: a short GRPO-vs-PPO comparison.")
    parser.add_argument(
        "--out", default=None, help="Output folder (default: runs/demo, or runs/demo-quick with --quick)."
    )
    parser.add_argument("--quick", action="store_true", help="A much smaller run (about a minute), for smoke tests.")
    args = parser.parse_args(argv)
    if args.out is None:  # apart: a comparison folder refuses runs of another budget, so one would block the other
        args.out = "runs/demo-quick" if args.quick else "runs/demo"
    return int(demo_main(args) or 0)


COMMANDS = {
    "envs": "list the registered rlopt/... environments with their spaces",
    "train": "train a policy (grpo, ppo or sb3_ppo); `rlopt train --algo ALGO --help` lists every option",
    "eval": "evaluate a checkpoint on held-out seeds",
    "sft": "supervised cold start of a math transformer on gold chains of thought (then GRPO with --init)",
    "distill": "distil a trained teacher (any rlopt run) into a smaller student policy",
    "compare": "GRPO vs PPO vs SB3 PPO over envs and seeds, with a statistical report",
    "report": "write a comparison's report again from its runs, e.g. with another --success-threshold",
    "demo": "the main job: a short comparison with TensorBoard logs and a report",
}


_PACKAGE_DIR = str(Path(__file__).resolve().parent)


def _warning_printer(prefix: str, fallback: Any) -> Any:
    """``warnings.showwarning`` for the command line: rlopt's own warnings (advice such as "bf16 will be slower on
    this CPU") print as ``rlopt train: warning: ...``, like its errors, without a source line; other libraries'
    warnings print as Python prints them."""

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, UserWarning) and str(Path(filename).resolve()).startswith(_PACKAGE_DIR):
            print(f"{prefix}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="rlopt",
        description="rlopt: batched RL environments and a critic-free GRPO trainer, compared against PPO.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="commands:\n" + "\n".join(f"  {name:<9}{text}" for name, text in COMMANDS.items()),
    )
    parser.add_argument("command", choices=list(COMMANDS), help="what to do (see below)")
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    args, rest = parser.parse_known_args(argv[:1])
    try:
        if args.command == "envs":
            argparse.ArgumentParser(prog="rlopt envs", description="List the registered rlopt/... ids.").parse_args(
                argv[1:]
            )
            return _cmd_envs(argparse.Namespace())
        handler = {
            "train": _cmd_train,
            "eval": _cmd_eval,
            "sft": _cmd_sft,
            "distill": _cmd_distill,
            "compare": _cmd_compare,
            "report": _cmd_report,
            "demo": _cmd_demo,
        }[args.command]
        with warnings.catch_warnings():
            warnings.showwarning = _warning_printer(f"rlopt {args.command}", warnings.showwarning)
            return handler(argv[1:])
    except (ConfigError, ValueError, FileNotFoundError, FloatingPointError) as error:
        print(f"rlopt {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: what was saved stays (checkpoints, finished runs); no traceback
        print(f"rlopt {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

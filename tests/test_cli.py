"""The rlopt command line: help texts, envs listing, train/eval end to end, clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from rlopt.api import config_class
from rlopt.cli import ALGO_CHOICES, main


def test_top_level_help_lists_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("envs", "train", "eval", "sft", "compare", "demo"):
        assert command in out


@pytest.mark.parametrize("algo", ALGO_CHOICES)
def test_train_help_has_an_option_with_help_for_every_field(algo: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--algo", algo, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--preset {auto,none}" in out  # the command's own --preset: start from the env's preset or not
    for field in dataclasses.fields(config_class(algo)):
        if field.name in ("env_id", "preset"):  # --env; SB3's informational preset row is set, not chosen
            continue
        assert "--" + field.name.replace("_", "-") in out, field.name
        assert field.metadata["help"].split("(")[0].strip()[:30] in out, field.name


@pytest.mark.parametrize("command", ["sft", "distill"])
def test_sft_and_distill_help_have_every_field(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Every config field is an option with its own help; SFT's steps are optimizer steps, and its help says so."""
    from rlopt.distill import DistillConfig
    from rlopt.sft import SFTConfig

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(SFTConfig if command == "sft" else DistillConfig):
        if field.name == "env_id":
            continue
        assert "--" + field.name.replace("_", "-") in out, field.name
        assert field.metadata["help"].split("(")[0].strip()[:30] in out, field.name
    if command == "sft":
        assert "env steps" not in out and "Evaluate every this many optimizer steps" in out


def test_sb3_ppo_trains_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "--algo", "sb3_ppo", "--env", "CartPole-v1", "--total-steps", "512", "--n-epochs", "2"]
    args += ["--eval-episodes", "2", "--eval-on-start", "--logdir", str(tmp_path), "--run-name", "sb3", "--no-progress"]
    assert main(args) == 0
    assert "sb3_ppo on CartPole-v1 (seed 0): eval/mean_reward" in capsys.readouterr().out
    config = json.loads((tmp_path / "sb3" / "config.json").read_text())["config"]
    assert config["preset"] == "CartPole-v1" and config["n_epochs"] == 2  # RL Zoo's row, then the option on top


def test_envs_lists_every_id(capsys: pytest.CaptureFixture[str]) -> None:
    from envs import ENV_IDS

    assert main(["envs"]) == 0
    out = capsys.readouterr().out
    for env_id in ENV_IDS:
        assert env_id in out


def test_train_then_eval_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    threads = torch.get_num_threads()
    try:
        _train_then_eval(tmp_path, capsys)
    finally:
        torch.set_num_threads(threads)  # --torch-threads sets the whole process's count


def _train_then_eval(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        [
            "train",
            "--algo",
            "grpo",
            "--env",
            "rlopt/GridGame-Empty-5x5-v0",
            "--total-steps",
            "800",
            "--num-prompts",
            "4",
            "--group-size",
            "4",
            "--eval-episodes",
            "4",
            "--logdir",
            str(tmp_path),
            "--run-name",
            "cli",
            "--no-progress",
            "--hidden-sizes",
            "32,32",
            "--torch-threads",
            "1",
        ]
    )
    assert code == 0
    assert torch.get_num_threads() == 1
    assert "eval/mean_reward" in capsys.readouterr().out
    config = json.loads((tmp_path / "cli" / "config.json").read_text())
    assert config["config"]["hidden_sizes"] == [32, 32] and config["config"]["num_prompts"] == 4
    assert main(["eval", str(tmp_path / "cli"), "--episodes", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["episodes"] == 3
    # the same run name again: refused, the run is untouched
    saved = (tmp_path / "cli" / "config.json").read_bytes()
    base = ["train", "--env", "rlopt/GridGame-Empty-5x5-v0", "--logdir", str(tmp_path), "--run-name", "cli"]
    assert main([*base, "--total-steps", "300", "--no-progress"]) == 2
    assert "already holds a run; continue it with --resume" in capsys.readouterr().err
    assert main([*base[:2], "rlopt/NoSuchEnv-v0", *base[3:]]) == 2
    assert (tmp_path / "cli" / "config.json").read_bytes() == saved
    # --resume keeps the run's settings: any option but the budget, the progress bar and threads is refused
    run = str(tmp_path / "cli")
    for extra in (["--learning-rate", "0.5"], ["--env", "CartPole-v1"], ["--algo", "ppo"], ["--seed", "3"]):
        with pytest.raises(SystemExit):
            main(["train", "--resume", run, "--total-steps", "2000", *extra])
        assert "only --total-steps" in capsys.readouterr().err
    assert (tmp_path / "cli" / "config.json").read_bytes() == saved
    assert main(["train", "--resume", run, "--total-steps", "2000", "--no-progress", "--torch-threads", "1"]) == 0
    assert json.loads((tmp_path / "cli" / "config.json").read_text())["config"]["total_steps"] == 2000


def test_bad_values_give_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "--env", "rlopt/GridGame-Empty-5x5-v0", "--group-size", "1", "--logdir", str(tmp_path)]) == 2
    assert "group_size=1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--loss-type", "nonsense"])
    assert "invalid choice" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "--torch-threads", "0"])
    assert "--torch-threads must be at least 1" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "nothing-here")]) == 2
    assert "no rlopt checkpoint" in capsys.readouterr().err
    empty_room = ["train", "--env", "rlopt/GridGame-Empty-5x5-v0", "--logdir", str(tmp_path), "--no-progress"]
    for extra, message in (
        (["--env-kwargs", '{"nope": 1}'], "does not take one of the env kwargs"),
        (["--architecture", "transformer"], "needs a 1-D integer token observation space"),
        (["--device", "mps"], "device='mps' is not supported"),
        (["--learning-rate", "inf"], "learning_rate=inf must be a finite number"),
    ):
        assert main([*empty_room, *extra]) == 2, extra
        assert message in capsys.readouterr().err
    assert main(["train", "--algo", "sb3_ppo", "--env", "rlopt/NoSuchEnv-v0", "--logdir", str(tmp_path)]) == 2
    assert "unknown environment id" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no failed start left a folder behind


def test_eval_prints_strict_json(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """An env without a success signal (CartPole) has a NaN success rate: printed as null, as in summary.json."""
    from rlopt import api

    monkeypatch.setattr(api, "evaluate", lambda *args, **kwargs: {"eval/success_rate": float("nan"), "episodes": 3})
    assert main(["eval", "some-run"]) == 0
    assert json.loads(capsys.readouterr().out, parse_constant=pytest.fail) == {
        "eval/success_rate": None,
        "episodes": 3,
    }


def test_the_readme_python_api_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python API block, verbatim but for shorter budgets, run from a scratch folder."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("### Python API", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    short = block.replace("total_steps=20_000", "total_steps=1_000").replace("total_steps=40_000", "total_steps=12_000")
    assert short != block and "episodes=100" in short
    monkeypatch.chdir(tmp_path)
    threads = torch.get_num_threads()
    try:
        exec(compile(short.replace("episodes=100", "episodes=2"), "README.md", "exec"), {})
    finally:
        torch.set_num_threads(threads)
    assert len(list((tmp_path / "runs").iterdir())) == 2  # the GRPO run and its distilled student


def test_rlopt_warnings_print_like_its_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """rlopt's own advice prints as `rlopt train: warning: ...` on stderr, without Python's source-line dressing."""
    import warnings

    args = ["train", "--algo", "grpo", "--env", "rlopt/GridGame-Empty-5x5-v0", "--total-steps", "50", "--no-progress"]
    with warnings.catch_warnings():
        warnings.filterwarnings("always", message="one GRPO batch")  # pyproject's test settings ignore it
        assert main(args + ["--num-prompts", "2", "--group-size", "2", "--logdir", str(tmp_path)]) == 0
    error = capsys.readouterr().err
    assert "rlopt train: warning: one GRPO batch is 2 x 2 whole episodes of up to 100 steps" in error
    assert "UserWarning" not in error and "grpo.py" not in error


def test_the_quick_demo_has_its_own_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """A comparison folder refuses runs of another budget: `rlopt demo --quick` then `make demo` must not share one."""
    import rlopt.demo

    seen = []
    monkeypatch.setattr(rlopt.demo, "demo_main", lambda args: seen.append(args.out) or 0)
    assert main(["demo", "--quick"]) == 0 and main(["demo"]) == 0 and main(["demo", "--out", "x"]) == 0
    assert seen == ["runs/demo-quick", "runs/demo", "x"]

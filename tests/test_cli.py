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

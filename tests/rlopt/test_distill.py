"""Distillation of a trained teacher into a smaller student (rlopt.distill)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from rlopt import api
from rlopt.cli import main
from rlopt.config import ConfigError
from rlopt.distill import DistillConfig, distill_config, train_distill

DOORKEY = "rlopt/GridGame-DoorKey-5x5-v0"


def _scalars(run_dir: Path, tag: str) -> list[float]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars(tag)]


@pytest.fixture(scope="module")
def doorkey_teacher(tmp_path_factory) -> Path:
    """GRPO with the DoorKey-5x5 preset for 150k env steps (about 15 s here): success 1.0 on seed 0."""
    logdir = tmp_path_factory.mktemp("teacher")
    config = api.make_config("grpo", DOORKEY, total_steps=150_000, logdir=str(logdir), run_name="t", progress=False)
    _, summary = api.train(config)
    assert summary["eval/success_rate"] >= 0.9
    return logdir / "t"


def test_a_small_student_learns_doorkey_from_its_teacher(doorkey_teacher: Path, tmp_path: Path) -> None:
    """A 16x16 student (a quarter of the teacher's parameters) reaches the teacher's success in 60k env steps of
    on-policy distillation (measured: 1.00 from 0.00 at its first evaluation); GRPO trains the same network from
    scratch to 0.00 in those steps (seed 0, 2026-12-05)."""
    config = distill_config(
        str(doorkey_teacher),
        hidden_sizes=(16, 16),
        total_steps=60_000,
        logdir=str(tmp_path),
        run_name="s",
        progress=False,
        eval_on_start=True,
        eval_episodes=64,
    )
    assert config.env_id == DOORKEY  # from the teacher
    _, summary = train_distill(config)
    assert summary["eval/success_rate"] >= 0.9
    assert summary["num_parameters"] < summary["teacher/num_parameters"] / 3
    assert summary["teacher/eval/success_rate"] >= 0.9
    success = _scalars(tmp_path / "s", "eval/success_rate")
    assert success[0] <= 0.2, "learning happened: the untrained student fails"
    kl = _scalars(tmp_path / "s", "distill/kl")
    assert kl[-1] < kl[0] / 5 and _scalars(tmp_path / "s", "distill/agreement")[-1] >= 0.9
    # an ordinary rlopt run folder: evaluated, and loadable as a policy for --init
    assert api.evaluate(tmp_path / "s", episodes=8)["eval/success_rate"] >= 0.75
    assert api.load_policy(tmp_path / "s") is not None


def test_teacher_mix_and_reverse_kl_run(doorkey_teacher: Path, tmp_path: Path) -> None:
    config = distill_config(
        str(doorkey_teacher),
        teacher_mix=0.5,
        divergence="reverse",
        total_steps=2048,
        num_envs=8,
        rollout_steps=64,
        logdir=str(tmp_path),
        run_name="mix",
        progress=False,
        eval_episodes=4,
    )
    _, summary = train_distill(config)
    assert summary["env_steps"] == 2048 and np.isfinite(summary["distill/kl"])
    assert json.loads((tmp_path / "mix" / "summary.json").read_text())["teacher"] == str(doorkey_teacher)


def test_gaussian_and_transformer_policies(tmp_path: Path) -> None:
    """The arm's Gaussian policy and the math transformer: the KL falls over a short run."""
    arm = api.make_config(
        "ppo", "rlopt/ArmReach-v0", total_steps=4096, logdir=str(tmp_path), run_name="arm", progress=False
    )
    api.train(arm)
    math = api.make_config(
        "grpo",
        "rlopt/MathReasoning-v0",
        architecture="transformer",
        num_layers=1,
        num_heads=2,
        model_dim=32,
        total_steps=600,
        num_prompts=4,
        group_size=4,
        eval_episodes=4,
        logdir=str(tmp_path),
        run_name="math",
        progress=False,
    )
    api.train(math)
    students = {
        "arm": dict(hidden_sizes=(8,)),
        "math": dict(architecture="transformer", num_layers=1, num_heads=1, model_dim=16),
    }
    for name, options in students.items():
        config = distill_config(
            str(tmp_path / name),
            total_steps=4096,
            num_envs=8,
            rollout_steps=64,
            logdir=str(tmp_path),
            run_name=f"{name}-student",
            progress=False,
            eval_episodes=4,
            learning_rate=3e-3,
            **options,
        )
        _, summary = train_distill(config)
        kl = _scalars(tmp_path / f"{name}-student", "distill/kl")
        assert len(kl) == 8 and kl[-1] < kl[0], (name, kl)
        assert summary["num_parameters"] < summary["teacher/num_parameters"]


def test_bad_inputs(doorkey_teacher: Path, tmp_path: Path, capsys) -> None:
    with pytest.raises(ConfigError, match="teacher is required"):
        DistillConfig(env_id=DOORKEY)
    with pytest.raises(ConfigError, match="teacher_mix"):
        distill_config(str(doorkey_teacher), teacher_mix=1.5)
    with pytest.raises(ConfigError, match="does not fit"):  # a DoorKey teacher cannot play CartPole
        train_distill(distill_config(str(doorkey_teacher), env_id="CartPole-v1", logdir=str(tmp_path), progress=False))
    with pytest.raises(ConfigError, match="cannot be resumed"):
        train_distill(distill_config(str(doorkey_teacher), logdir=str(tmp_path)), resume=True)
    assert list(tmp_path.iterdir()) == []  # no failed start left a folder
    assert main(["distill", "--logdir", str(tmp_path)]) == 2
    assert "--teacher is required" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(tmp_path / "nothing")]) == 2
    assert "no rlopt checkpoint" in capsys.readouterr().err
    assert main(["--help"]) == 0 and "distill" in capsys.readouterr().out


def test_corrupt_teachers_and_a_diverging_run_exit_cleanly(doorkey_teacher: Path, tmp_path: Path, capsys) -> None:
    """Each exits 2 with a message (no KeyError or FloatingPointError traceback)."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(doorkey_teacher, broken)
    (broken / "checkpoints" / "latest.json").write_text('{"foo": 1}')
    assert main(["distill", "--teacher", str(broken), "--logdir", str(tmp_path / "out")]) == 2
    assert "does not name a checkpoint" in capsys.readouterr().err
    step = next((doorkey_teacher / "checkpoints").glob("step_*")).name
    (broken / "checkpoints" / "latest.json").write_text(json.dumps({"name": step}))
    (broken / "checkpoints" / step / "state.json").write_text("{}")
    assert main(["distill", "--teacher", str(broken), "--logdir", str(tmp_path / "out")]) == 2
    assert "not a usable rlopt checkpoint's state" in capsys.readouterr().err
    assert main(["distill", "--teacher", str(doorkey_teacher / "summary.json")]) == 2
    assert "pass the teacher's run folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

    diverging = ["distill", "--teacher", str(doorkey_teacher), "--logdir", str(tmp_path), "--run-name", "nan"]
    diverging += ["--learning-rate", "1e12", "--max-grad-norm", "1e12", "--total-steps", "4096", "--no-progress"]
    assert main([*diverging, "--torch-threads", "1"]) == 2
    error = capsys.readouterr().err
    assert "non-finite" in error and "keeps what was logged" in error, error
    assert main(diverging) == 2  # the folder is kept, and a distillation run is not offered --resume
    error = capsys.readouterr().err
    assert "already holds a run" in error and "--resume" not in error, error


def test_transformer_options_need_the_transformer(doorkey_teacher: Path) -> None:
    with pytest.raises(ConfigError, match="add --architecture transformer"):
        distill_config(str(doorkey_teacher), num_layers=1)
    with pytest.raises(ConfigError, match="temperature=0.5"):
        api.make_config("grpo", "rlopt/MathReasoning-v0", temperature=0.5)
    api.make_config("grpo", "rlopt/MathReasoning-v0", architecture="transformer", temperature=0.5)  # accepted


def test_a_mixture_of_experts_student_balances_its_experts(doorkey_teacher: Path, tmp_path: Path) -> None:
    config = distill_config(
        str(doorkey_teacher),
        num_experts=4,
        top_k=1,
        total_steps=1024,
        num_envs=8,
        rollout_steps=64,
        logdir=str(tmp_path),
        run_name="moe",
        progress=False,
        eval_episodes=2,
    )
    _, summary = train_distill(config)
    aux = _scalars(tmp_path / "moe", "moe/aux_loss")
    assert len(aux) == 2 and all(np.isfinite(aux)) and np.isfinite(summary["distill/kl"])

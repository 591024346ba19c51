"""--precision bf16 end to end: the supervised cold start learns in bf16, GRPO and PPO continue from it in bf16 and
resume in bf16, and a precision the run cannot use is refused with what to change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from agents import TransformerPolicy
from rlopt import api, grpo, ppo
from rlopt.cli import main
from rlopt.config import ConfigError
from rlopt.grpo import GRPOConfig
from rlopt.ppo import PPOConfig
from rlopt.sft import SFTConfig

MATH = "rlopt/MathReasoning-v0"


def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _logged(run_dir: Path, tag: str) -> list[float]:
    accumulator = EventAccumulator(str(run_dir))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars(tag)]


def test_bf16_sft_learns_then_grpo_and_ppo_continue_and_resume_in_bf16(tmp_path: Path) -> None:
    # the fp32 SFT test's recipe (tests/rlopt/test_sft.py) and thresholds, in bf16, from the command line
    command = ["sft", "--env", MATH, "--level", "1", "--total-steps", "400", "--batch-size", "64"]
    command += ["--num-layers", "2", "--num-heads", "2", "--model-dim", "64", "--learning-rate", "3e-3"]
    command += ["--warmup-steps", "30", "--eval-episodes", "128", "--eval-every", "200", "--pass-k", "0"]
    command += ["--precision", "bf16", "--logdir", str(tmp_path), "--run-name", "sft", "--no-progress"]
    assert main([*command, "--device", "cpu"]) == 0
    summary = _summary(tmp_path / "sft")
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["config"]["precision"] == "bf16"
    assert summary["eval/initial_accuracy"] == 0.0
    assert summary["eval/accuracy"] >= 0.03 and summary["math"]["format_rate"] >= 0.9, summary["math"]
    assert summary["sft/final_loss"] < 0.4

    # GRPO from the SFT checkpoint: the checkpoint gives the architecture, the run gives the precision
    common = dict(env_id=MATH, env_kwargs={"level": 1}, init=str(tmp_path / "sft"), eval_episodes=8)
    common.update(logdir=str(tmp_path), progress=False, device="cpu", precision="bf16")
    config = GRPOConfig(**common, total_steps=200, num_prompts=4, group_size=4, num_minibatches=2, run_name="grpo")
    policy, result = grpo.train(config)
    assert isinstance(policy, TransformerPolicy) and policy.precision == "bf16" and result["finished"]
    losses = _logged(tmp_path / "grpo", "train/loss")
    assert losses and np.isfinite(losses).all()
    resumed, result = api.resume(tmp_path / "grpo", total_steps=400)
    assert resumed.precision == "bf16" and result["env_steps"] >= 400 and result["finished"]

    # PPO with a value head on the same transformer
    config = PPOConfig(**common, total_steps=256, num_envs=8, num_steps=16, num_minibatches=2, run_name="ppo")
    policy, result = ppo.train(config)
    value_losses = _logged(tmp_path / "ppo", "train/value_loss")
    assert policy.precision == "bf16" and result["finished"] and value_losses and np.isfinite(value_losses).all()


@pytest.mark.parametrize(
    ("config_class", "overrides", "message"),
    [
        (GRPOConfig, {"precision": "fp16"}, "precision='fp16' is not accepted; choose one of 'fp32', 'bf16'"),
        (SFTConfig, {"precision": "half"}, "precision='half' is not accepted"),
        (PPOConfig, {"precision": "bf16", "architecture": "mlp"}, "applies to the token transformer only"),
    ],
)
def test_precision_values_a_run_cannot_use_are_refused(config_class, overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_class(**overrides)


def test_bf16_for_a_network_that_is_not_the_transformer_stops_before_training(tmp_path: Path) -> None:
    # the grid env's automatic architecture is a convolutional net: fp32 only, said before any run folder exists
    config = GRPOConfig(total_steps=100, logdir=str(tmp_path), progress=False, device="cpu", precision="bf16")
    with pytest.raises(ConfigError, match="applies to the token transformer only .* use precision=fp32"):
        grpo.train(config)


def test_bf16_on_a_cpu_without_fast_bf16_warns(monkeypatch: pytest.MonkeyPatch) -> None:
    import gymnasium as gym

    from agents import PolicySpec, make_policy
    from rlopt import session

    env = gym.make("rlopt/MathReasoning-v0", level=1)
    spec = PolicySpec(architecture="transformer", num_layers=1, num_heads=1, model_dim=16)
    for lacking, expected in ((True, 1), (False, 0)):
        monkeypatch.setattr(session, "cpu_lacks_fast_bf16", lambda lacking=lacking: lacking)
        policy = make_policy(spec, env.observation_space, env.action_space)
        with pytest.warns(UserWarning, match="without AVX512-BF16") if expected else _no_warning():
            session.use_precision(policy, "bf16")


def _no_warning():
    import contextlib
    import warnings

    @contextlib.contextmanager
    def guard():
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            yield

    return guard()

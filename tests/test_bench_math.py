"""Smoke tests of scripts/bench_math.py: rlopt's half always; TRL's half only where trl is installed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from envs.math_reasoning import EOS, PAD, encode, generate_problems, gold_completion_tokens

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_math.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_math", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_math"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_math", None)


TINY = {"num_prompts": 2, "group_size": 2, "num_layers": 1, "num_heads": 2, "model_dim": 16}


def test_spec_rejects_bad_values(bench) -> None:
    with pytest.raises(ValueError, match="group_size=1"):
        bench.BenchSpec(group_size=1)
    with pytest.raises(ValueError, match="model_dim=10"):
        bench.BenchSpec(model_dim=10, num_heads=4)
    with pytest.raises(ValueError, match="num_prompts=0"):
        bench.BenchSpec(num_prompts=0)
    with pytest.raises(ValueError, match="accepted: cpu, cuda, auto"):
        bench.resolve_device("tpu")
    with pytest.raises(ValueError, match="warmup=0"):
        bench.bench_rlopt(bench.BenchSpec(**TINY), warmup=0, steps=1, device=torch.device("cpu"))


def test_rlopt_side_trains_as_the_trl_side_does(bench, tmp_path) -> None:
    spec = bench.BenchSpec()
    config = bench.rlopt_config(spec, torch.device("cpu"), str(tmp_path))
    # TRL's side runs a constant rate with no KL and one update per batch; the math preset's decay must not leak in
    assert config.lr_schedule == "constant" and config.learning_rate == spec.learning_rate
    assert config.kl_coef == 0.0 and config.update_epochs == 1 and config.num_minibatches == 1
    assert (config.num_prompts, config.group_size, config.max_episode_steps) == (32, 8, 8)


def test_torch_profile_summary_adds_up_the_matrix_products_flops(bench, capsys) -> None:
    a, b, batch = torch.randn(8, 16), torch.randn(16, 4), torch.randn(3, 8, 16)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True) as profiler:
        for _ in range(2):  # two "steps"
            torch.mm(a, b)
            torch.addmm(torch.zeros(4), a, b)
            torch.bmm(batch, b.expand(3, 16, 4))
            torch.relu(a)  # not a product: not counted
    summary = bench.torch_profile_summary(profiler, steps=2, device=torch.device("cpu"))
    # per step: mm and addmm 2 x 8 x 16 x 4 FLOPs each, bmm 3 times that
    assert summary["matmul_gflop_per_step"] == pytest.approx(5 * 2 * 8 * 16 * 4 / 1e9)
    assert summary["matmul_host_ms_per_step"] > 0
    assert "matrix products per step: 0.000 GFLOP" in capsys.readouterr().out


def test_rlopt_side_times_each_step(bench) -> None:
    spec = bench.BenchSpec(**TINY)
    result = bench.bench_rlopt(spec, warmup=1, steps=2, device=torch.device("cpu"))
    assert result.name == "rlopt" and result.device == "cpu"
    assert len(result.step_seconds) == len(result.cpu_seconds) == 2
    assert all(seconds > 0 for seconds in result.step_seconds)
    assert result.completions == [4, 4]
    # every episode writes 1..max_new_tokens tokens
    assert all(4 <= tokens <= 4 * spec.max_new_tokens for tokens in result.tokens)
    assert result.completions_per_second == pytest.approx(4 / np.median(result.step_seconds))
    assert np.isnan(result.completions_per_second_without_reward)
    pooled = result.merge(result)
    assert len(pooled.step_seconds) == 4 and pooled.seconds_per_step == pytest.approx(result.seconds_per_step)


def test_torch_profile_records_the_measured_steps(bench, capsys) -> None:
    result = bench.bench_rlopt(
        bench.BenchSpec(**TINY), warmup=1, steps=2, device=torch.device("cpu"), torch_profile=True
    )
    out = capsys.readouterr().out
    assert "torch.profiler of the measured rlopt steps (2), by own host time" in out and "aten::" in out
    # a step runs a rollout and an update: far more than a handful of ops; CPU runs report no device activity
    profile = result.device_profile
    assert set(profile) == {"host_events_per_step", "matmul_gflop_per_step", "matmul_host_ms_per_step"}
    assert profile["host_events_per_step"] > 100 and profile["matmul_host_ms_per_step"] > 0
    # FLOPs are counted only when the profiler is asked to (with_flops): without it this is 0
    assert profile["matmul_gflop_per_step"] > 0 and "matrix products per step:" in out and "GFLOP/s" in out
    assert result.merge(bench.bench_rlopt(bench.BenchSpec(**TINY), 1, 1, torch.device("cpu"))).device_profile == (
        result.device_profile
    )
    assert bench.bench_rlopt(bench.BenchSpec(**TINY), 1, 1, torch.device("cpu")).device_profile == {}


def test_phases_time_the_rollout_and_the_update_apart(bench) -> None:
    times = bench.bench_phases(bench.BenchSpec(**TINY), repeats=3, device=torch.device("cpu"), warmup=1)
    assert set(times) == {"rollout", "update_forward", "update_backward"}
    assert all(len(values) == 3 and all(seconds > 0 for seconds in values) for values in times.values())
    assert "rlopt phases on one batch (median of 3): rollout" in bench.format_phases(times)
    with pytest.raises(ValueError, match="repeats=0"):
        bench.bench_phases(bench.BenchSpec(**TINY), repeats=0, device=torch.device("cpu"))


def test_main_measures_rlopt_and_explains_a_missing_trl(bench, monkeypatch, capsys, tmp_path) -> None:
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", lambda count: None)  # main's --threads must not leak out
    monkeypatch.setattr(bench, "trl_available", lambda: "TRL half skipped: trl not installed")
    full_size = bench.BenchSpec
    monkeypatch.setattr(bench, "BenchSpec", lambda **chosen: full_size(**chosen, **TINY))
    path = tmp_path / "bench.json"
    report = bench.main(
        ["--side", "both", "--warmup", "1", "--steps", "1", "--repeats", "1", "--phases", "1", "--json", str(path)]
    )
    out = capsys.readouterr().out
    assert "rlopt phases on one batch (median of 1)" in out
    assert set(report["phases"]) == {"rollout", "update_forward", "update_backward"}
    assert "TRL half skipped" in out and "rlopt  [cpu]" in out and f"torch threads: {threads}" in out
    assert "command: python scripts/bench_math.py --side both" in out
    assert set(report["results"]) == {"rlopt"} and "ratio" not in report
    assert json.loads(path.read_text())["results"]["rlopt"]["completions"] == [4]


def test_precision_reaches_the_rlopt_side_and_the_report(bench, monkeypatch, capsys) -> None:
    from rlopt import grpo

    monkeypatch.setattr(torch, "set_num_threads", lambda count: None)
    full_size = bench.BenchSpec
    monkeypatch.setattr(bench, "BenchSpec", lambda **chosen: full_size(**chosen, **TINY))
    chosen: list[str] = []
    real = grpo.use_precision
    monkeypatch.setattr(grpo, "use_precision", lambda policy, name: chosen.append(name) or real(policy, name))
    report = bench.main(["--side", "rlopt", "--warmup", "1", "--steps", "1", "--repeats", "1", "--precision", "bf16"])
    assert chosen == ["bf16"] and report["spec"]["precision"] == "bf16"
    assert "16 wide, bf16, beta=0" in capsys.readouterr().out
    assert full_size(precision="bf16").trl_bf16 and not full_size().trl_bf16
    mixed = full_size(precision="bf16", trl_precision="fp32")
    assert not mixed.trl_bf16 and mixed.precision_text == "rlopt bf16, TRL fp32"
    assert full_size(trl_precision="fp32").precision_text == "fp32"
    with pytest.raises(ValueError, match="precision='fp16' must be 'fp32' or 'bf16'"):
        full_size(precision="fp16")
    with pytest.raises(ValueError, match="trl_precision='half' must be 'fp32' or 'bf16'"):
        full_size(trl_precision="half")


def test_row_slots_set_the_update_layout_for_the_run_only(bench, monkeypatch, capsys) -> None:
    from agents import transformer

    monkeypatch.setattr(torch, "set_num_threads", lambda count: None)
    full_size = bench.BenchSpec
    monkeypatch.setattr(bench, "BenchSpec", lambda **chosen: full_size(**chosen, **TINY))
    seen = []
    per_row = transformer._episodes_per_row

    def spy(group_size: int, width: int) -> int:
        seen.append((transformer.GROUP_ROW_MAX_SLOTS, per_row(group_size, width)))
        return seen[-1][1]

    monkeypatch.setattr(transformer, "_episodes_per_row", spy)
    library = transformer.GROUP_ROW_MAX_SLOTS
    report = bench.main(["--side", "rlopt", "--warmup", "1", "--steps", "1", "--repeats", "1", "--row-slots", "0"])
    assert seen and all(value == (0, 1) for value in seen)  # one episode per row in every update
    assert report["row_slots"] == 0 and "rows of <= 0 slots" in capsys.readouterr().out
    assert transformer.GROUP_ROW_MAX_SLOTS == library
    with pytest.raises(SystemExit):
        bench.parse_args(["--row-slots", "-1"])


def test_reward_applies_the_env_verifier(bench) -> None:
    (problem,) = generate_problems(1, [7])
    gold = gold_completion_tokens(problem).tolist()
    reward = bench.MathReward()
    rewards = reward([problem.question] * 4, [gold, gold[:8], [PAD], []])
    # the gold completion earns accuracy 1 + format 0.1; a cut one, a PAD (ends a malformed episode) and nothing: 0
    assert rewards == pytest.approx([1.1, 0.0, 0.0, 0.0])
    assert gold[-1] == EOS and reward.calls[0][1] == len(gold) + 8 + 1


def test_trl_tokenizer_uses_the_env_vocabulary(bench) -> None:
    pytest.importorskip("tokenizers")
    pytest.importorskip("transformers")
    tokenizer = bench.math_tokenizer()
    text = "37+48<think>37+48=85</think><answer>85<eos>"
    assert tokenizer(text)["input_ids"] == encode(text).tolist()
    assert tokenizer.pad_token_id == PAD and tokenizer.eos_token_id == EOS
    assert tokenizer.decode(encode(text).tolist(), skip_special_tokens=True) == text.replace("<eos>", "")


def test_trl_side_runs_one_step(bench) -> None:
    pytest.importorskip("trl")
    spec = bench.BenchSpec(**TINY)
    result = bench.bench_trl(spec, warmup=1, steps=1, device=torch.device("cpu"))
    assert result.name == "trl" and result.device == "cpu"
    assert result.completions == [4] and len(result.reward_seconds) == 1
    assert 4 <= result.tokens[0] <= 4 * spec.max_new_tokens
    assert result.completions_per_second_without_reward >= result.completions_per_second


def test_cuda_graphs_turn_graphs_on_for_the_run_only(bench, monkeypatch, capsys) -> None:
    from agents.transformer import TransformerPolicy

    monkeypatch.setattr(torch, "set_num_threads", lambda count: None)
    seen = []
    real = bench.bench_rlopt
    monkeypatch.setattr(
        bench,
        "bench_rlopt",
        lambda *args, **kwargs: seen.append(TransformerPolicy.cuda_graphs) or real(*args, **kwargs),
    )
    full_size = bench.BenchSpec
    monkeypatch.setattr(bench, "BenchSpec", lambda **chosen: full_size(**chosen, **TINY))
    report = bench.main(["--side", "rlopt", "--warmup", "1", "--steps", "1", "--repeats", "1", "--cuda-graphs"])
    assert seen == [True] and TransformerPolicy.cuda_graphs is False
    assert report["cuda_graphs"] is False  # graphs are for CUDA: never reported on off it
    assert bench.main(["--side", "rlopt", "--warmup", "1", "--steps", "1", "--repeats", "1"])["cuda_graphs"] is False
    assert seen == [True, False]

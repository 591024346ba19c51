"""rlopt compare and its report: fake trainers in spawned workers (failures, resuming), the report's numbers, and
one real stable-baselines3 comparison on CartPole through rlopt.api."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytest

from rlopt import runs
from rlopt.compare import (
    CompareConfig,
    add_compare_arguments,
    compare_main,
    config_from_args,
    overrides_for_seed,
    run_compare,
    run_name_for,
)
from rlopt.config import ConfigError
from rlopt.report import build_table, improvement_table, load_runs, write_report

# Final reward of the fake trainers: grpo beats ppo on every seed, and reaches success 1.0 at step 600.
FAKE_FINAL = {"grpo": 10.0, "ppo": 5.0}
FAKE_SUCCESS_STEP = {"grpo": 600, "ppo": 10**9}


def fake_train(algo, env_id, seed, total_steps, logdir, run_name=None, overrides=None):
    """A module-level stand-in for rlopt.api.run_training (workers receive it pickled): writes a run folder with
    TensorBoard scalars and a summary; counts its calls with one file per call; fails where overrides ask."""
    from torch.utils.tensorboard import SummaryWriter

    overrides = overrides or {}
    calls = Path(logdir).parent / "calls"
    calls.mkdir(exist_ok=True)
    (calls / f"{run_name}__{time.time_ns()}").touch()
    run_dir = Path(logdir) / run_name
    runs.write_json_atomic(
        run_dir / runs.CONFIG_FILE,
        {"algo": algo, "env_id": env_id, "seed": seed, "config": {"total_steps": total_steps}, "versions": {}},
    )
    writer = SummaryWriter(log_dir=str(run_dir))
    final = FAKE_FINAL[algo] + seed + overrides.get("bonus", 0.0)
    for step in range(0, total_steps + 1, 200):
        fraction = step / total_steps
        writer.add_scalar("rollout/ep_rew_mean", final * fraction * 0.8, step)
        writer.add_scalar("eval/mean_reward", final * fraction, step)
        writer.add_scalar("eval/success_rate", 1.0 if step >= FAKE_SUCCESS_STEP[algo] else 0.0, step)
        writer.add_scalar("train/loss", 1.0 / (1 + step), step)
    writer.close()
    if overrides.get("fail_seed") == seed:
        raise RuntimeError(f"boom on seed {seed}")
    summary = {
        "finished": True, "algo": algo, "env_id": env_id, "seed": seed, "env_steps": total_steps,
        "wall_clock_seconds": 2.0, "steps_per_second": total_steps / 2.0, "num_parameters": 100 + len(algo),
        "peak_rss_mb": 50.0, "eval/mean_reward": final, "eval/success_rate": 1.0 if algo == "grpo" else 0.0,
        "eval/episodes": 4, "hyperparameters": {"lr": 0.001, "algo_name": algo},
        "baseline": "rlopt",
    }  # fmt: skip
    runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, summary)
    return summary


def _calls(out: Path) -> list[str]:
    return sorted(path.name.rsplit("__", 1)[0] for path in (out / "calls").iterdir())


# --- config and command line -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"envs": []}, "envs is empty"),
        ({"envs": ["NoSuchEnv-v9"]}, "unknown environment id 'NoSuchEnv-v9'"),
        ({"algos": ["grpo", "a2c"]}, "algo 'a2c' is not accepted"),
        ({"algos": ["ppo", "ppo"]}, r"algos lists \['ppo'\] more than once"),
        ({"algos": ["grpo", "a2c@fast"]}, "algo 'a2c@fast' is not accepted"),
        ({"algos": ["grpo", "grpo@a.b"]}, "the name after '@'"),
        ({"reference_algo": "grpo@cot"}, "reference_algo='grpo@cot' is not accepted"),
        ({"seeds": 0}, "seeds=0"),
        ({"torch_threads": -1}, "torch_threads=-1"),
        ({"overrides": {"sb3_ppo": {"n_envs": 2}}}, "overrides name 'sb3_ppo'"),
        ({"overrides": {"ppo": {"seed": 3}}}, r"sets \['seed'\]"),
        ({"success_threshold": 1.5}, "success_threshold=1.5"),
        ({"success_gain": -0.1}, "success_gain=-0.1"),
        ({"score": "eval/accuracy"}, "score='eval/accuracy' is not accepted"),
    ],
)
def test_compare_config_rejects_bad_values(changes, message):
    values = {"envs": ["CartPole-v1"], "algos": ["grpo", "ppo"], **changes}
    with pytest.raises(ConfigError, match=message):
        CompareConfig(**values)


def test_command_line_arguments():
    parser = add_compare_arguments(argparse.ArgumentParser())
    args = parser.parse_args(
        ["--env", "CartPole-v1,Pendulum-v1", "--env", "Acrobot-v1", "--algos", "ppo,sb3_ppo", "--seeds", "2",
         "--total-steps", "500", "--out", "x", "--jobs", "1", "--torch-threads", "2", "--override", "sb3_ppo.n_envs=4",
         "--override", "sb3_ppo.net_arch=[32, 32]", "--override", "ppo.device=cpu"]
    )  # fmt: skip
    config = config_from_args(args)
    assert config.envs == ["CartPole-v1", "Pendulum-v1", "Acrobot-v1"]
    assert config.algos == ["ppo", "sb3_ppo"]
    assert (config.seeds, config.total_steps, config.out, config.jobs, config.torch_threads) == (2, 500, "x", 1, 2)
    assert config.overrides == {"sb3_ppo": {"n_envs": 4, "net_arch": [32, 32]}, "ppo": {"device": "cpu"}}
    with pytest.raises(ConfigError, match="ALGO.FIELD=VALUE"):
        config_from_args(parser.parse_args(["--env", "CartPole-v1", "--override", "n_envs=4"]))


# --- the report on runs written in this process --------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_tb(tmp_path_factory) -> Path:
    tb = tmp_path_factory.mktemp("report") / "tb"
    for env_id in ("CartPole-v1", "rlopt/Fake-v0"):
        for algo in ("grpo", "ppo"):
            for seed in range(3):
                fake_train(algo, env_id, seed, 1000, str(tb), run_name_for(env_id, algo, seed))
    # A job that died before writing config.json: only its error file is there.
    failed = tb / run_name_for("rlopt/Fake-v0", "ppo", 3)
    failed.mkdir()
    (failed / "error.txt").write_text("Traceback (most recent call last):\nValueError: exploded\n")
    return tb


def test_load_runs_reads_every_folder(fake_tb: Path):
    records = load_runs(fake_tb)
    assert len(records) == 13
    failed = [record for record in records if record.status != "finished"]
    assert len(failed) == 1
    assert (failed[0].env_id, failed[0].algo, failed[0].seed) == ("rlopt/Fake-v0", "ppo", 3)  # slug mapped back
    assert failed[0].status == "failed" and "exploded" in failed[0].error
    record = records[0]
    assert (record.env_id, record.algo, record.seed) == ("CartPole-v1", "grpo", 0)
    curve = record.curves["eval/mean_reward"]
    np.testing.assert_array_equal(curve.steps, np.arange(0, 1001, 200))
    assert curve.values[-1] == pytest.approx(10.0)
    assert record.start_time is not None and record.start_time <= curve.wall_times.min()


def test_table_numbers(fake_tb: Path):
    rows = {(row["env_id"], row["algo"]): row for row in build_table(load_runs(fake_tb), 0.9, reps=300)}
    grpo = rows[("CartPole-v1", "grpo")]
    assert grpo["iqm"] == pytest.approx(11.0)  # final rewards 10, 11, 12: int(0.75) = 0 cut -> mean
    assert grpo["iqm_low"] >= 10.0 and grpo["iqm_high"] <= 12.0
    assert grpo["mean"] == pytest.approx(11.0) and grpo["std"] == pytest.approx(1.0)
    assert grpo["steps_to_threshold"] == 600.0 and grpo["seeds_reached"] == 3
    assert grpo["seconds_to_threshold"] is not None and grpo["seconds_to_threshold"] >= 0
    assert grpo["steps_to_threshold_per_seed"] == [600.0, 600.0, 600.0]
    assert grpo["updates_to_threshold"] == 4.0  # train/loss at steps 0, 200, 400 and 600
    assert grpo["updates_to_threshold_per_seed"] == [4.0, 4.0, 4.0]
    assert grpo["success_rate"] == 1.0 and grpo["steps_per_second"] == 500.0 and grpo["num_parameters"] == 104
    assert grpo["success_median"] == 1.0 and grpo["success_per_seed"] == [1.0, 1.0, 1.0]
    ppo = rows[("rlopt/Fake-v0", "ppo")]
    assert (ppo["seeds_finished"], ppo["seeds_total"]) == (3, 4)
    assert ppo["steps_to_threshold"] is None and ppo["seeds_reached"] == 0  # never reached
    assert ppo["steps_to_threshold_per_seed"] == [None, None, None]
    assert ppo["updates_to_threshold"] is None and ppo["updates_to_threshold_per_seed"] == [None, None, None]
    assert ppo["implementation"] == "rlopt (own)"


def test_probability_of_improvement_rows(fake_tb: Path):
    rows = improvement_table(load_runs(fake_tb), "grpo", reps=300)
    by_env = {row["env_id"]: row for row in rows}
    assert set(by_env) == {"CartPole-v1", "rlopt/Fake-v0", "all envs"}
    # grpo's worst seed (10) vs ppo's best (7): every pair favours grpo.
    assert (by_env["CartPole-v1"]["p"], by_env["CartPole-v1"]["low"], by_env["CartPole-v1"]["high"]) == (1.0, 1.0, 1.0)
    assert (by_env["all envs"]["runs_x"], by_env["all envs"]["runs_y"]) == (3, 3)


def test_write_report_files(fake_tb: Path):
    out = fake_tb.parent
    report = write_report(load_runs(fake_tb), out, reps=300)
    text = report.read_text()
    for expected in ("## CartPole-v1", "## rlopt/Fake-v0", "Probability of improvement", "## Across environments",
                     "Which algorithm each row is", "Failed and unfinished runs", "ValueError: exploded",
                     "rlopt (own)", "lr=0.001", "11 [", "600 (3/3 seeds) [600, 600, 600]",
                     "not reached (0/3 seeds) [–, –, –]", "updates to success ≥ 0.9 [per seed]",
                     "4 (3/3 seeds) [4, 4, 4]",
                     "1.00, 1.00 [1.00, 1.00, 1.00]"):  # fmt: skip
        assert expected in text, expected
    plots = out / "plots"
    for name in ("curves_CartPole-v1.png", "curves_rlopt_Fake-v0.png", "final_scores.png"):
        assert (plots / name).stat().st_size > 1000, name
        assert f"plots/{name}" in text
    summary = runs.read_json(out / "summary.json")
    assert len(summary["runs"]) == 13 and len(summary["table"]) == 4
    assert {run["status"] for run in summary["runs"]} == {"finished", "failed"}


# --- compare with spawned workers ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fake_compare(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    config = CompareConfig(
        envs=["CartPole-v1"], algos=["grpo", "ppo"], seeds=2, total_steps=1000, out=str(out), jobs=2,
        overrides={"ppo": {"fail_seed": 1}},
    )  # fmt: skip
    report = run_compare(config, train_fn=fake_train)
    return config, out, report


def test_compare_writes_every_file(fake_compare):
    _, out, report = fake_compare
    assert report == out / "report.md" and report.is_file()
    assert (out / "plots" / "curves_CartPole-v1.png").is_file()
    assert (out / "plots" / "final_scores.png").is_file()
    summary = runs.read_json(out / "summary.json")
    assert len(summary["runs"]) == 4
    assert {row["algo"] for row in summary["table"]} == {"grpo", "ppo"}
    assert runs.is_finished(out / "tb" / "CartPole-v1__grpo__0")


def test_compare_records_a_failing_job_and_finishes_the_rest(fake_compare):
    _, out, report = fake_compare
    statuses = {run["run_name"]: run["status"] for run in runs.read_json(out / "summary.json")["runs"]}
    failed = sorted(name for name, status in statuses.items() if status != "finished")
    assert failed == ["CartPole-v1__ppo__1"]
    error = (out / "tb" / "CartPole-v1__ppo__1" / "error.txt").read_text()
    assert "RuntimeError: boom on seed 1" in error
    assert "RuntimeError: boom on seed 1" in report.read_text()


def test_rerun_skips_finished_and_redoes_the_rest(fake_compare, capsys):
    _, out, _ = fake_compare
    assert len(_calls(out)) == 4
    stray = out / "tb" / "CartPole-v1__ppo__1" / "stale.txt"
    stray.write_text("left over from the failed attempt")
    # The same comparison again, through the command line this time.
    args = add_compare_arguments(argparse.ArgumentParser()).parse_args(
        ["--env", "CartPole-v1", "--algos", "grpo,ppo", "--seeds", "2", "--total-steps", "1000", "--out", str(out),
         "--jobs", "2", "--override", "ppo.fail_seed=1"]
    )  # fmt: skip
    assert compare_main(args, train_fn=fake_train) == 1  # a run failed
    calls = _calls(out)
    assert len(calls) == 5  # only the failed run was tried again
    assert calls.count("CartPole-v1__ppo__1") == 2 and calls.count("CartPole-v1__grpo__0") == 1
    assert not stray.exists()  # the partial folder was cleared first
    printed = capsys.readouterr().out
    assert "skipping finished run CartPole-v1__grpo__0" in printed
    assert "FAILED (RuntimeError: boom on seed 1)" in printed
    assert f"tensorboard --logdir {out / 'tb'}" in printed


def test_rerun_with_another_budget_is_refused(fake_compare):
    config, _, _ = fake_compare
    with pytest.raises(ConfigError, match="another budget than this comparison"):
        run_compare(CompareConfig(**{**config.__dict__, "total_steps": 2000}), train_fn=fake_train)


def test_real_sb3_compare_on_cartpole(tmp_path: Path, capsys):
    config = CompareConfig(
        envs=["CartPole-v1"], algos=["sb3_ppo"], seeds=2, total_steps=3000, out=str(tmp_path), jobs=2,
        overrides={"sb3_ppo": {"eval_episodes": 4, "eval_every": 1500}}, reference_algo="grpo",
    )  # fmt: skip
    report = run_compare(config)  # the default trainer: rlopt.api.run_training
    text = report.read_text()
    assert "stable-baselines3" in text and "preset=CartPole-v1" in text
    assert "No finished `grpo` run" in text
    summary = runs.read_json(tmp_path / "summary.json")
    assert [run["status"] for run in summary["runs"]] == ["finished", "finished"]
    (row,) = summary["table"]
    assert row["seeds_finished"] == 2 and row["iqm"] is not None and row["num_parameters"] > 0
    assert (tmp_path / "plots" / "curves_CartPole-v1.png").is_file()
    printed = capsys.readouterr().out
    assert "[2/2] CartPole-v1 sb3_ppo seed" in printed and "report:" in printed


def test_compare_variants_of_one_algorithm(tmp_path: Path):
    """ALGO@NAME entries train with ALGO and their own overrides, and get their own runs, rows and P(improvement)."""
    config = CompareConfig(
        envs=["CartPole-v1"], algos=["grpo", "grpo@worse", "ppo"], seeds=2, total_steps=1000, out=str(tmp_path),
        jobs=1, overrides={"grpo@worse": {"bonus": -8.0}}, reference_algo="grpo@worse",
    )  # fmt: skip
    run_compare(config, train_fn=fake_train)
    assert runs.read_json(tmp_path / "tb" / "CartPole-v1__grpo@worse__1" / runs.CONFIG_FILE)["algo"] == "grpo"
    summary = runs.read_json(tmp_path / "summary.json")
    means = {row["algo"]: row["mean"] for row in summary["table"]}
    assert means == pytest.approx({"grpo": 10.5, "grpo@worse": 2.5, "ppo": 5.5})
    records = load_runs(tmp_path / "tb")
    improvements = {row["y"]: row["p"] for row in improvement_table(records, "grpo@worse")}
    assert improvements == {"grpo": 0.0, "ppo": 0.0}
    assert "`ALGO@NAME` is a variant" in (tmp_path / "report.md").read_text()


def test_overrides_for_seed_fill_in_the_seed():
    values = {"init": "runs/sft-s{seed}", "learning_rate": 1e-4, "env_kwargs": {"level": 2}}
    assert overrides_for_seed(values, 3) == {"init": "runs/sft-s3", "learning_rate": 1e-4, "env_kwargs": {"level": 2}}
    assert values["init"] == "runs/sft-s{seed}"  # the comparison's own settings are left as they were


def test_success_rate_as_the_score(fake_tb: Path, tmp_path: Path):
    records = load_runs(fake_tb, score="eval/success_rate")
    rows = {(row["env_id"], row["algo"]): row for row in build_table(records, 0.9, reps=300)}
    assert rows[("CartPole-v1", "grpo")]["mean"] == 1.0 and rows[("CartPole-v1", "ppo")]["mean"] == 0.0
    text = write_report(records, tmp_path, reps=300).read_text()
    assert "final success IQM" in text and "`eval/success_rate`" in text
    with pytest.raises(ValueError, match="score='x' is not accepted"):
        load_runs(fake_tb, score="x")

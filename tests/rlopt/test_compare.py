"""rlopt compare and its report: fake trainers in spawned workers (failures, resuming), the report's numbers, and
one real stable-baselines3 comparison on CartPole through rlopt.api."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pytest

from rlopt import runs
from rlopt.checkpoint import LATEST_FILE, MODEL_FILE, STATE_FILE
from rlopt.compare import (
    CompareConfig,
    Job,
    _job_arguments,
    add_compare_arguments,
    checkpoint_step,
    compare_main,
    config_from_args,
    job_config,
    overrides_for_seed,
    plan_jobs,
    run_compare,
    run_name_for,
)
from rlopt.config import ConfigError
from rlopt.report import build_table, improvement_table, load_runs, write_report

# Final reward of the fake trainers: grpo beats ppo on every seed, and reaches success 1.0 at step 600.
FAKE_FINAL = {"grpo": 10.0, "ppo": 5.0}
FAKE_SUCCESS_STEP = {"grpo": 600, "ppo": 10**9}


def fake_config(algo, env_id, seed, total_steps, logdir, run_name=None, overrides=None):
    """The config fake_train records (and compare compares with the runs on disk): what it was called with."""
    return {
        "env_id": env_id, "seed": seed, "total_steps": total_steps, "logdir": logdir, "run_name": run_name,
        "progress": False, **(overrides or {}),
    }  # fmt: skip


def _write_fake_run(algo, env_id, seed, total_steps, run_dir, overrides, start=0, extra=None):
    """TensorBoard scalars from env step ``start`` to ``total_steps``, then the summary of a finished run."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(run_dir))
    final = FAKE_FINAL[algo] + seed + overrides.get("bonus", 0.0)
    for step in range(start, total_steps + 1, 200):
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
        "baseline": "rlopt", **(extra or {}),
    }  # fmt: skip
    runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, summary)
    return summary


def fake_train(algo, env_id, seed, total_steps, logdir, run_name=None, overrides=None):
    """A module-level stand-in for rlopt.api.run_training (workers receive it pickled): writes a run folder with
    its fake_config, TensorBoard scalars and a summary; counts its calls with one file per call; fails where
    overrides ask."""
    overrides = overrides or {}
    calls = Path(logdir).parent / "calls"
    calls.mkdir(exist_ok=True)
    (calls / f"{run_name}__{time.time_ns()}").touch()
    run_dir = Path(logdir) / run_name
    assert not run_dir.exists(), "compare must clear a folder before training in it"  # as `rlopt train` refuses to
    runs.write_json_atomic(
        run_dir / runs.CONFIG_FILE,
        {
            "algo": algo, "env_id": env_id, "seed": seed, "versions": {},
            "config": fake_config(algo, env_id, seed, total_steps, logdir, run_name, overrides),
        },
    )  # fmt: skip
    return _write_fake_run(algo, env_id, seed, total_steps, run_dir, overrides)


def fake_resume(algo, env_id, seed, total_steps, logdir, run_name=None, overrides=None):
    """A module-level stand-in for compare.resume_training: continues the run from its checkpoint's step (which must
    still be there) and records the call in resumes/."""
    resumes = Path(logdir).parent / "resumes"
    resumes.mkdir(exist_ok=True)
    (resumes / f"{run_name}__{time.time_ns()}").touch()
    run_dir = Path(logdir) / run_name
    step = checkpoint_step(run_dir)
    if step is None:
        raise RuntimeError(f"no checkpoint to resume in {run_dir}")
    return _write_fake_run(algo, env_id, seed, total_steps, run_dir, overrides or {}, step, {"resumed_from": step})


def _interrupt(run_dir: Path, step: int | None) -> None:
    """Make a finished fake run look interrupted: no summary, a checkpoint at env step ``step`` (None: none), and
    the error a failed attempt leaves."""
    (run_dir / runs.SUMMARY_FILE).unlink()
    if step is not None:
        _fake_checkpoint(run_dir, step)
    (run_dir / "error.txt").write_text("Traceback (most recent call last):\nKeyboardInterrupt\n")


def _fake_checkpoint(run_dir: Path, step: int, name: str | None = None) -> Path:
    """The files by which rlopt finds a run's latest checkpoint (contents not loaded by compare)."""
    name = name or f"step_{step:012d}"
    folder = run_dir / runs.CHECKPOINT_DIR / name
    folder.mkdir(parents=True)
    (folder / MODEL_FILE).write_bytes(b"")
    runs.write_json_atomic(folder / STATE_FILE, {"step": step})
    runs.write_json_atomic(run_dir / runs.CHECKPOINT_DIR / f"{LATEST_FILE}.json", {"name": name})
    return folder


def _calls(out: Path, kind: str = "calls") -> list[str]:
    folder = out / kind
    return sorted(path.name.rsplit("__", 1)[0] for path in folder.iterdir()) if folder.is_dir() else []


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
        ({"overrides": {"ppo": {"progress": True}}}, r"sets \['progress'\]"),
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


def test_a_lone_failed_run_is_reported_under_its_env_id(tmp_path: Path):
    """No finished run names the env: the id comes from Gymnasium's registry, not the folder's slug."""
    failed = tmp_path / run_name_for("rlopt/MathReasoning-v0", "grpo", 0)
    failed.mkdir()
    (failed / "error.txt").write_text("ValueError: exploded\n")
    (record,) = load_runs(tmp_path)
    assert record.env_id == "rlopt/MathReasoning-v0" and record.status == "failed"


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
    report = run_compare(config, train_fn=fake_train, config_fn=fake_config)
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
    assert compare_main(args, train_fn=fake_train, config_fn=fake_config) == 1  # a run failed
    calls = _calls(out)
    assert len(calls) == 5  # only the failed run was tried again
    assert calls.count("CartPole-v1__ppo__1") == 2 and calls.count("CartPole-v1__grpo__0") == 1
    assert not stray.exists()  # the partial folder was cleared first
    printed = capsys.readouterr().out
    assert "skipping finished run CartPole-v1__grpo__0" in printed
    assert "FAILED (RuntimeError: boom on seed 1)" in printed
    assert f"tensorboard --logdir {out / 'tb'}" in printed


def test_rerun_with_another_budget_is_refused(fake_compare):
    config, out, _ = fake_compare
    with pytest.raises(ConfigError, match="trained with other settings") as raised:
        run_compare(
            CompareConfig(**{**config.__dict__, "total_steps": 2000}), train_fn=fake_train, config_fn=fake_config
        )
    assert f"{out / 'tb' / 'CartPole-v1__grpo__0'} (finished): total_steps: 1000 in the run, 2000 now" in str(
        raised.value
    )


def test_rerun_with_other_overrides_is_refused(tmp_path: Path, capsys):
    """A finished run is reused only when every recorded setting is this comparison's, not only its budget."""
    config = CompareConfig(envs=["CartPole-v1"], algos=["grpo"], seeds=2, total_steps=1000, out=str(tmp_path), jobs=1)
    run_compare(config, train_fn=fake_train, config_fn=fake_config)
    changed = CompareConfig(**{**config.__dict__, "overrides": {"grpo": {"bonus": 1.0}}})
    with pytest.raises(ConfigError) as raised:
        run_compare(changed, train_fn=fake_train, config_fn=fake_config)
    message = str(raised.value)
    for seed in (0, 1):
        assert f"CartPole-v1__grpo__{seed} (finished): bonus: not recorded in the run, 1.0 now" in message
    assert "choose another --out, or delete those run folders" in message
    assert _calls(tmp_path) == ["CartPole-v1__grpo__0", "CartPole-v1__grpo__1"]  # nothing trained again
    # moved elsewhere, the same comparison keeps its runs: the folder is not a setting (IGNORED_SETTINGS)
    moved = tmp_path.parent / f"{tmp_path.name}-moved"
    tmp_path.rename(moved)
    run_compare(CompareConfig(**{**config.__dict__, "out": str(moved)}), train_fn=fake_train, config_fn=fake_config)
    assert "skipping finished run CartPole-v1__grpo__1" in capsys.readouterr().out
    assert len(_calls(moved)) == 2


def test_rerun_resumes_an_interrupted_run_from_its_checkpoint(tmp_path: Path, capsys):
    config = CompareConfig(envs=["CartPole-v1"], algos=["grpo"], seeds=3, total_steps=1000, out=str(tmp_path), jobs=2)
    run_compare(config, train_fn=fake_train, config_fn=fake_config, resume_fn=fake_resume)
    tb = tmp_path / "tb"
    _interrupt(tb / "CartPole-v1__grpo__1", step=400)
    _interrupt(tb / "CartPole-v1__grpo__2", step=None)  # stopped before its first checkpoint: trained again
    capsys.readouterr()
    run_compare(config, train_fn=fake_train, config_fn=fake_config, resume_fn=fake_resume)
    assert _calls(tmp_path, "resumes") == ["CartPole-v1__grpo__1"]
    assert _calls(tmp_path) == ["CartPole-v1__grpo__0", "CartPole-v1__grpo__1", "CartPole-v1__grpo__2",
                                "CartPole-v1__grpo__2"]  # fmt: skip
    resumed = tb / "CartPole-v1__grpo__1"
    assert runs.read_json(resumed / runs.SUMMARY_FILE)["resumed_from"] == 400
    assert checkpoint_step(resumed) == 400 and not (resumed / "error.txt").exists()
    printed = capsys.readouterr().out
    assert "resuming interrupted run CartPole-v1__grpo__1 from env step 400" in printed
    assert "CartPole-v1 grpo seed 1 (resumed): finished" in printed
    assert [run["status"] for run in runs.read_json(tmp_path / "summary.json")["runs"]] == ["finished"] * 3


def test_interrupted_run_with_other_settings_keeps_its_checkpoint(tmp_path: Path):
    config = CompareConfig(envs=["CartPole-v1"], algos=["grpo"], seeds=1, total_steps=1000, out=str(tmp_path), jobs=1)
    run_compare(config, train_fn=fake_train, config_fn=fake_config, resume_fn=fake_resume)
    run_dir = tmp_path / "tb" / "CartPole-v1__grpo__0"
    _interrupt(run_dir, step=600)
    changed = CompareConfig(**{**config.__dict__, "total_steps": 3000})
    with pytest.raises(ConfigError, match="interrupted at env step 600\\): total_steps: 1000 in the run, 3000 now"):
        run_compare(changed, train_fn=fake_train, config_fn=fake_config, resume_fn=fake_resume)
    assert checkpoint_step(run_dir) == 600 and (run_dir / runs.CONFIG_FILE).is_file()  # not deleted
    assert _calls(tmp_path, "resumes") == [] and len(_calls(tmp_path)) == 1


GRID = "rlopt/GridGame-Empty-5x5-v0"


def _record(config: CompareConfig, job: Job, finished: bool, **changes) -> Path:
    """A run folder of ``job`` as rlopt's trainers leave it: config.json with job_config's config (``changes`` on
    top), and summary.json when finished."""
    run_dir = config.tb_dir / job.run_name
    recorded = {**job_config(**_job_arguments(config, job)), **changes}
    runs.write_json_atomic(
        run_dir / runs.CONFIG_FILE, {"algo": job.algo, "env_id": job.env_id, "seed": job.seed, "config": recorded}
    )
    if finished:
        runs.write_json_atomic(run_dir / runs.SUMMARY_FILE, {"finished": True})
    return run_dir


def test_plan_compares_every_recorded_setting_of_real_configs(tmp_path: Path):
    """With rlopt's own configs (job_config: what rlopt.api.run_training trains with), GRPO's and SB3's."""
    config = CompareConfig(envs=[GRID], algos=["grpo", "sb3_ppo"], seeds=1, total_steps=6000, out=str(tmp_path))
    grpo, sb3 = Job(GRID, "grpo", 0), Job(GRID, "sb3_ppo", 0)
    # what may differ between attempts: where the folder was, a progress bar, the device
    for job in (grpo, sb3):
        _record(config, job, finished=True, logdir="/elsewhere/tb", run_name="old", progress=True, device="cpu")
    assert plan_jobs(config) == ([], [grpo, sb3])
    changed = CompareConfig(
        **{**config.__dict__, "overrides": {"grpo": {"learning_rate": 0.0001}, "sb3_ppo": {"n_envs": 2}}}
    )
    with pytest.raises(ConfigError) as raised:
        plan_jobs(changed)
    message = str(raised.value)
    assert f"{config.tb_dir / grpo.run_name} (finished): learning_rate: 0.002 in the run, 0.0001 now" in message
    assert f"{config.tb_dir / sb3.run_name} (finished): n_envs: 8 in the run, 2 now" in message
    with pytest.raises(ConfigError, match="total_steps: 6000 in the run, 7000 now"):
        plan_jobs(CompareConfig(**{**config.__dict__, "total_steps": 7000}))


def test_plan_resumes_only_rlopt_runs_with_a_checkpoint_and_the_same_settings(tmp_path: Path):
    config = CompareConfig(envs=[GRID], algos=["grpo", "ppo", "sb3_ppo"], seeds=1, total_steps=6000, out=str(tmp_path))
    grpo, ppo, sb3 = (Job(GRID, algo, 0) for algo in ("grpo", "ppo", "sb3_ppo"))
    _fake_checkpoint(_record(config, grpo, finished=False), 2000)
    _record(config, ppo, finished=False)  # no checkpoint yet
    sb3_dir = _record(config, sb3, finished=False)
    (sb3_dir / runs.CHECKPOINT_DIR).mkdir()
    (sb3_dir / runs.CHECKPOINT_DIR / "model.zip").write_bytes(b"PK")  # SB3 runs cannot resume
    pending, finished = plan_jobs(config)
    assert finished == [] and pending == [Job(GRID, "grpo", 0, resume=True), ppo, sb3]
    assert plan_jobs(config, resume=False)[0] == [grpo, ppo, sb3]  # a trainer without a resume function
    # other settings: refused for both runs with checkpoints (never deleted unasked), not for the one without
    changed = CompareConfig(**{**config.__dict__, "env_steps": {GRID: 9000}})
    with pytest.raises(ConfigError) as raised:
        plan_jobs(changed)
    message = str(raised.value)
    assert f"{config.tb_dir / grpo.run_name} (interrupted at env step 2000): total_steps: 6000" in message
    assert f"{config.tb_dir / sb3.run_name} (interrupted, with checkpoints): total_steps: 6000" in message
    assert ppo.run_name not in message


@pytest.mark.parametrize(
    ("label", "values", "message"),
    [
        ("grpo", {"nope": 1}, r"grpo on rlopt/GridGame-Empty-5x5-v0: --override grpo.nope=1: unknown GRPOConfig"),
        ("grpo", {"learning_rate": "abc"}, "--override grpo.learning_rate=abc: learning_rate='abc' must be a number"),
        ("grpo", {"learning_rate": -1}, r"--override grpo.learning_rate=-1: learning_rate=-1 is outside"),
        ("grpo", {"precision": "bf16"}, "--override grpo.precision=bf16: precision='bf16' applies to the token"),
        ("sb3_ppo", {"n_envs": 0}, r"--override sb3_ppo.n_envs=0: n_envs=0 is outside the accepted range"),
        ("ppo@x", {"eval_media": "no", "ent_coef": 0.1}, "--override ppo@x.eval_media=no: eval_media='no' must be"),
        ("grpo", {"env_kwargs": {"sise": 5}}, "does not take one of the env kwargs"),
        ("sb3_ppo", {"env_kwargs": {"size": 2}}, "size must be an integer >= 4"),
        ("ppo", {"init": "no/such/run"}, "no rlopt checkpoint at no/such/run"),
        ("distill", {}, r"teacher is required: .* in rlopt compare --override distill.teacher=RUN_DIR"),
        ("distill", {"teacher": "no/such/run"}, "no rlopt checkpoint at no/such/run"),
    ],
)
def test_bad_overrides_fail_before_anything_starts(tmp_path: Path, label, values, message):
    config = CompareConfig(
        envs=[GRID], algos=sorted({"grpo", "sb3_ppo", label}), seeds=2, total_steps=6000, out=str(tmp_path), jobs=1,
        overrides={label: values},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message) as raised:
        run_compare(config, train_fn=fake_train)  # checked with job_config, rlopt's own configs
    assert "nothing was started" in str(raised.value)
    assert str(raised.value).count("--override") == 1  # the one bad override, once (not once per seed)
    assert list(tmp_path.iterdir()) == []  # no folder made, no worker started


def test_command_line_exits_2_on_a_bad_override(tmp_path: Path, capsys):
    from rlopt.cli import main

    argv = ["compare", "--env", GRID, "--algos", "grpo", "--seeds", "1", "--total-steps", "6000",
            "--out", str(tmp_path), "--override", "grpo.learning_rate=abc"]  # fmt: skip
    assert main(argv) == 2
    assert "--override grpo.learning_rate=abc: learning_rate='abc' must be a number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


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


def test_real_distill_compare_with_a_teacher_per_seed(tmp_path: Path, capsys):
    """distill in a comparison: each seed's student learns from the teacher its {seed} names; the report gives the
    distill row (counting its updates by train/loss like every trainer's), the teachers' own scores under the
    table, and P(GRPO > distill). Not in the default --algos (it needs a teacher)."""
    from rlopt import api

    assert "distill" not in CompareConfig(envs=[GRID]).algos
    sft = tmp_path / "sft"  # a math teacher cannot teach a grid student: refused before anything starts
    from rlopt.sft import SFTConfig, train_sft

    train_sft(
        SFTConfig(total_steps=2, batch_size=4, eval_episodes=2, logdir=str(tmp_path), run_name="sft", progress=False)
    )
    wrong = CompareConfig(
        envs=[GRID], algos=["distill"], seeds=1, total_steps=2048, out=str(tmp_path / "wrong"), jobs=1,
        overrides={"distill": {"teacher": str(sft)}},
    )  # fmt: skip
    with pytest.raises(ConfigError, match=r"was trained on rlopt/MathReasoning-v0 and does not fit observations"):
        run_compare(wrong)
    assert not (tmp_path / "wrong").exists()
    teacher_folder = tmp_path / "teachers"
    for seed in (0, 1):
        teacher = api.make_config(
            "grpo", GRID, seed=seed, total_steps=3000, num_prompts=4, group_size=4, eval_episodes=4,
            logdir=str(teacher_folder), run_name=f"teacher-{seed}", progress=False,
        )  # fmt: skip
        api.train(teacher)
    out = tmp_path / "cmp"
    config = CompareConfig(
        envs=[GRID], algos=["grpo", "distill"], seeds=2, total_steps=2048, out=str(out), jobs=1,
        overrides={
            "grpo": {"num_prompts": 4, "group_size": 4, "eval_episodes": 4},
            "distill": {"teacher": str(teacher_folder / "teacher-{seed}"), "eval_episodes": 4, "eval_every": 512},
        },
    )  # fmt: skip
    report = run_compare(config)
    for seed in (0, 1):
        recorded = runs.read_json(out / "tb" / f"rlopt_GridGame-Empty-5x5-v0__distill__{seed}" / runs.CONFIG_FILE)
        assert recorded["algo"] == "distill" and recorded["config"]["teacher"].endswith(f"teacher-{seed}")
    summary = runs.read_json(out / "summary.json")
    (row,) = [row for row in summary["table"] if row["algo"] == "distill"]
    assert row["seeds_finished"] == 2 and row["teachers"] == [str(teacher_folder / f"teacher-{s}") for s in (0, 1)]
    assert row["teacher_num_parameters"] > 0 and row["teacher_mean_reward"] is not None
    text = report.read_text()
    assert "| distill | rlopt (own) | 2/2 |" in text and "Teacher of `distill`" in text
    assert "| grpo | distill |" in text  # P(grpo > distill)
    assert "`distill` is a student trained by rlopt's policy distillation" in text
    curves = load_runs(out / "tb")
    assert all(len(record.curves["train/loss"].steps) == 2 for record in curves if record.algo == "distill")
    assert "distill seed 1: finished" in capsys.readouterr().out


def test_compare_variants_of_one_algorithm(tmp_path: Path):
    """ALGO@NAME entries train with ALGO and their own overrides, and get their own runs, rows and P(improvement)."""
    config = CompareConfig(
        envs=["CartPole-v1"], algos=["grpo", "grpo@worse", "ppo"], seeds=2, total_steps=1000, out=str(tmp_path),
        jobs=1, overrides={"grpo@worse": {"bonus": -8.0}}, reference_algo="grpo@worse",
    )  # fmt: skip
    run_compare(config, train_fn=fake_train, config_fn=fake_config)
    assert runs.read_json(tmp_path / "tb" / "CartPole-v1__grpo@worse__1" / runs.CONFIG_FILE)["algo"] == "grpo"
    summary = runs.read_json(tmp_path / "summary.json")
    means = {row["algo"]: row["mean"] for row in summary["table"]}
    assert means == pytest.approx({"grpo": 10.5, "grpo@worse": 2.5, "ppo": 5.5})
    records = load_runs(tmp_path / "tb")
    improvements = {row["y"]: row["p"] for row in improvement_table(records, "grpo@worse")}
    assert improvements == {"grpo": 0.0, "ppo": 0.0}
    assert "`ALGO@NAME` is a variant" in (tmp_path / "report.md").read_text()


def test_grpo_budget_warning_is_said_once_per_entry_and_env():
    """Where one GRPO batch can take more env steps than the budget, the comparison says so once per (entry, env)
    before the runs start, not once per worker; an entry whose batch fits gets no warning."""
    from rlopt.compare import _budget_warnings

    config = CompareConfig(
        envs=["Pendulum-v1", GRID], algos=["grpo", "grpo@small", "ppo"], seeds=2, total_steps=4000,
        overrides={"grpo@small": {"num_prompts": 2, "group_size": 2}},
    )  # fmt: skip
    jobs = [Job(env, algo, seed) for env in config.envs for algo in config.algos for seed in (0, 1)]
    messages = _budget_warnings(config, jobs)
    assert [message.split(":")[0] for message in messages] == ["grpo on Pendulum-v1", f"grpo on {GRID}"]
    assert (
        "16 x 8 whole episodes of up to 200 steps, up to 25,600 env steps, more than total_steps=4,000" in (messages[0])
    )


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


def test_ctrl_c_stops_the_workers_and_says_how_to_go_on(tmp_path: Path, monkeypatch, capsys) -> None:
    """A KeyboardInterrupt while waiting on the workers: the pool is shut down without the executor's own TypeError
    traceback, the user is told that re-running resumes, and the CLI exits 130."""
    from rlopt import compare
    from rlopt.cli import main

    def interrupted(futures):
        raise KeyboardInterrupt

    monkeypatch.setattr(compare, "as_completed", interrupted)
    config = CompareConfig(envs=["CartPole-v1"], algos=["grpo"], seeds=2, total_steps=1000, out=str(tmp_path), jobs=2)
    with pytest.raises(KeyboardInterrupt):
        compare._run_pending(config, [Job("CartPole-v1", "grpo", 0), Job("CartPole-v1", "grpo", 1)], fake_train)
    captured = capsys.readouterr()
    assert "run the same command again to go on" in captured.err and "TypeError" not in captured.err

    monkeypatch.setattr("rlopt.cli._cmd_compare", lambda argv: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(["compare"]) == 130
    assert "rlopt compare: interrupted" in capsys.readouterr().err
